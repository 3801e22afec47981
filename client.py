"""The client: start a run without waiting, then tail its answer from Redis.

Start `uv run worker.py` in one terminal, then in another:

    uv run client.py -m "Plan a 2-day trip to Paris"
    uv run client.py --session <key> -m "Make day 2 more relaxed"     # next turn, same conversation
    uv run client.py --session <key> --cursor <entry id>              # reattach, print what follows
    uv run client.py -m "..." --json                                  # one JSON object per chunk

The answer goes to stdout; status lines go to stderr. Exit status: 0 when the
answer completed, 1 when the run failed or stopped (error marker, or nothing
arrived for STREAM_IDLE_TIMEOUT_SECONDS), 2 for bad usage or configuration.

The flow, in `stream_turn`:
  1. note the newest entry id of the conversation's stream (the cursor), so only
     this turn's answer is read;
  2. `agent.run(message, session=..., options={"wait_for_response": False})`:
     the scheduler queues the run and the call returns at once;
  3. XREAD BLOCK from the cursor, printing each token as it arrives, until the
     run's done or error marker. Every printed entry moves the cursor, and
     Ctrl+C prints the command that resumes from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TextIO

import grpc
from agent_framework import AgentResponse
from agent_framework_durabletask import (
    AgentSessionId,
    DurableAgentSession,
    DurableAIAgent,
    DurableAIAgentClient,
)
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from redis.exceptions import RedisError

from agents import AGENT_NAME
from config import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, ConfigError, Settings, fail, load_settings, setup_logging
from durable_record import latest_recorded_answer, wait_for_recorded_answer
from local_services import Role, Services, announce, provide_services
from redis_stream_response_handler import (
    RedisStreamResponseHandler,
    StreamChunk,
    validate_conversation_id,
    validate_cursor,
)
from scheduler import scheduler_connection

DEFAULT_MESSAGE = "Plan a 3-day trip to Tokyo with emphasis on culture and food"
MAX_MESSAGE_CHARACTERS = 32_000  # a travel request, not a document; keeps entity state small
# The fire-and-forget acknowledgement carries the run's correlation id only in its text.
_CORRELATION_ID_IN_ACK = re.compile(r"correlation_id: ([0-9A-Za-z-]+)")


@dataclass
class StreamPosition:
    """Where the reader is: what `--session` and `--cursor` take to resume."""

    session_key: str
    cursor: str | None = None


def get_client(settings: Settings, services: Services) -> DurableTaskSchedulerClient:
    connection = scheduler_connection(services.scheduler_endpoint, settings.taskhub)
    return DurableTaskSchedulerClient(
        host_address=connection.host_address,
        secure_channel=connection.secure_channel,
        taskhub=connection.taskhub,
        token_credential=connection.credential(),
        logger=logging.getLogger("durabletask.client"),
    )


def get_travel_planner(client: DurableTaskSchedulerClient) -> DurableAIAgent[AgentResponse]:
    return DurableAIAgentClient(client).get_agent(AGENT_NAME)


def session_for(key: str) -> DurableAgentSession:
    """The session whose durable entity key (and stream name) is `key`."""
    return DurableAgentSession(durable_session_id=AgentSessionId(name=AGENT_NAME, key=validate_conversation_id(key)))


def start_run(agent: DurableAIAgent[AgentResponse], message: str, session: DurableAgentSession) -> str | None:
    """Signal the agent entity and return at once with the run's correlation id (if the ack names it)."""
    acknowledgement = agent.run(message, session=session, options={"wait_for_response": False})
    match = _CORRELATION_ID_IN_ACK.search(acknowledgement.text)
    return match.group(1) if match else None


async def stream_from_redis(
    handler: RedisStreamResponseHandler,
    position: StreamPosition,
    on_chunk: Callable[[StreamChunk], None],
    correlation_id: str | None = None,
) -> StreamChunk:
    """Feed one run's chunks to `on_chunk`, moving `position` along; return the final chunk."""
    final = StreamChunk(entry_id=position.cursor or "0-0", kind="error", error="the stream ended unexpectedly")
    async for chunk in handler.read_stream(position.session_key, position.cursor, correlation_id=correlation_id):
        position.cursor = chunk.entry_id
        on_chunk(chunk)
        final = chunk
    return final


@dataclass
class Conversation:
    """What one client needs for every turn: the agent proxy, the scheduler client, the stream reader."""

    agent: DurableAIAgent[AgentResponse]
    scheduler: DurableTaskSchedulerClient
    handler: RedisStreamResponseHandler
    position: StreamPosition


async def stream_turn(conversation: Conversation, message: str | None, printer: ChunkPrinter, verify: bool) -> int:
    """Start a run for `message` (or just reattach when it is None) and stream its answer."""
    handler, position = conversation.handler, conversation.position
    correlation_id = None
    if message is not None:
        position.cursor = await handler.last_entry_id(position.session_key)
        session = session_for(position.session_key)
        correlation_id = await asyncio.to_thread(start_run, conversation.agent, message, session)
    elif not await stream_exists(conversation):
        return await recover_latest_answer(conversation, printer)
    printer.waiting()
    final = await stream_from_redis(handler, position, printer.print_chunk, correlation_id)
    printer.finish(final)
    if not final.is_done:
        print(f"error: {final.error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    if final.missing or verify:
        return await check_against_record(conversation, final, printer, verify)
    return EXIT_OK


async def stream_exists(conversation: Conversation) -> bool:
    """A reattach cursor must point into a stream that still exists, and not past its end."""
    position = conversation.position
    newest = await conversation.handler.last_entry_id(position.session_key)
    if newest == "0-0":
        return False
    assert position.cursor is not None
    if _entry_id_key(position.cursor) > _entry_id_key(newest):
        raise ConfigError(f"cursor {position.cursor} is past the end of the stream (newest entry: {newest})")
    return True


async def recover_latest_answer(conversation: Conversation, printer: ChunkPrinter) -> int:
    """The stream is gone (expired, or Redis restarted): print the answer the durable agent recorded."""
    key = conversation.position.session_key
    answer = await asyncio.to_thread(latest_recorded_answer, conversation.scheduler, key)
    if answer is None:
        raise ConfigError(f"unknown session {key}: no stream and no recorded answer (it expired, or never existed)")
    announce("client", "the stream is gone (expired, or Redis restarted); this is the answer the agent recorded:")
    printer.print_recovered(answer.text)
    return EXIT_OK


async def check_against_record(
    conversation: Conversation, final: StreamChunk, printer: ChunkPrinter, verify: bool
) -> int:
    """Compare what was streamed with the durable record; replace a stream with gaps by the record."""
    key = conversation.position.session_key
    record = await asyncio.to_thread(wait_for_recorded_answer, conversation.scheduler, key, final.correlation_id)
    if record is None:
        print("error: the agent recorded no answer for this run; cannot verify or recover it", file=sys.stderr)
        return EXIT_RUN_FAILED
    if final.missing:
        announce(
            "client", f"{final.missing} tokens never reached the stream; the full answer, from the durable record:"
        )
        printer.print_recovered(record.text)
    elif printer.answer != record.text:
        print("error: the streamed answer differs from the answer the agent recorded", file=sys.stderr)
        return EXIT_RUN_FAILED
    if verify:
        announce("client", "verified: the answer matches the one the durable agent recorded")
    return EXIT_OK


def _entry_id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


class ChunkPrinter:
    """Prints streamed text to stdout (plain, or one JSON object per chunk)."""

    def __init__(self, position: StreamPosition, *, as_json: bool, out: TextIO = sys.stdout) -> None:
        self.position = position
        self.as_json = as_json
        self.out = out
        self.answer = ""  # the current attempt's text, to compare with the durable record
        self._indicator_shown = False

    def waiting(self) -> None:
        if not self.as_json and sys.stderr.isatty():
            print("(waiting for the first token…)", end="", file=sys.stderr, flush=True)
            self._indicator_shown = True

    def print_chunk(self, chunk: StreamChunk) -> None:
        self._clear_indicator()
        if chunk.kind == "restart":
            self.answer = ""
            reason = f" ({chunk.error})" if chunk.error else ""
            announce("client", f"the answer restarted{reason}; what follows replaces the text above")
        self.answer += chunk.text
        if self.as_json:
            self._print_json(chunk)
        elif chunk.text:
            self.out.write(chunk.text)
            self.out.flush()

    def print_recovered(self, text: str) -> None:
        """An answer that did not come from the stream (see `check_against_record`)."""
        self.answer = text
        if self.as_json:
            record = {"session": self.position.session_key, "text": text, "recovered": True, "done": True}
            self.out.write(json.dumps(record) + "\n")
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def finish(self, final: StreamChunk) -> None:
        self._clear_indicator()
        if not self.as_json:
            self.out.write("\n")
            self.out.flush()

    def _print_json(self, chunk: StreamChunk) -> None:
        record: dict[str, object] = {
            "session": self.position.session_key,
            "entry_id": chunk.entry_id,
            "sequence": chunk.sequence,
            "text": chunk.text,
        }
        if chunk.kind in ("start", "restart"):
            record[chunk.kind] = True  # the answer (re)starts here: a cursor to replay it from
        if chunk.is_done:
            record["done"] = True
        if chunk.is_error:
            record["error"] = chunk.error
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def _clear_indicator(self) -> None:
        if self._indicator_shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self._indicator_shown = False


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-m", "--message", help=f"what to ask the TravelPlanner (default: {DEFAULT_MESSAGE!r})")
    parser.add_argument("--session", help="continue this conversation (the session key printed by an earlier run)")
    parser.add_argument("--cursor", help="with --session and no -m: reattach and print only what follows this entry id")
    parser.add_argument("--json", action="store_true", help="print one JSON object per chunk instead of plain text")
    parser.add_argument("--verify", action="store_true", help="check the streamed answer against the durable record")
    return parser


def validate_arguments(args: argparse.Namespace) -> None:
    """Usage errors, caught before anything connects anywhere."""
    if args.cursor is not None:
        if args.session is None:
            raise ConfigError("--cursor needs --session: a cursor is a position in one conversation's stream")
        if args.message is not None:
            raise ConfigError("--cursor reattaches to a running answer; drop -m (or drop --cursor to ask again)")
        validate_cursor(args.cursor)
    if args.session is not None:
        validate_conversation_id(args.session)
    if args.message is not None:
        check_message(args.message)


EMPTY_MESSAGE = "the message is empty"
NOT_UTF8_MESSAGE = "the message is not valid UTF-8 text"


def check_message(message: str) -> str:
    """`message`, or a ConfigError that says what is wrong with it and how to fix it on the command line."""
    problem = message_problem(message)
    if problem == EMPTY_MESSAGE:
        raise ConfigError(f'{problem}: pass -m "Plan a 2-day trip to Paris"')
    if problem == NOT_UTF8_MESSAGE:
        raise ConfigError(f"{problem}; check your terminal's encoding (e.g. LANG=C.UTF-8)")
    if problem is not None:
        raise ConfigError(problem)
    return message


def message_problem(message: str) -> str | None:
    """What makes `message` unfit to send to the agent, or None: shared by the CLI and web.py."""
    if not message.strip():
        return EMPTY_MESSAGE
    if len(message) > MAX_MESSAGE_CHARACTERS:
        return f"the message has {len(message)} characters; the limit is {MAX_MESSAGE_CHARACTERS}"
    try:
        message.encode("utf-8")  # bytes that are not UTF-8 (in argv, or typed) arrive as lone surrogates
    except UnicodeEncodeError:
        return NOT_UTF8_MESSAGE
    return None


def messages_to_send(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> Iterator[str]:
    """The first message, then (interactive terminals only) further turns until an empty line."""
    if args.message is not None:
        yield args.message
        return
    if not stdin.isatty():
        yield DEFAULT_MESSAGE  # never block on a pipe or a CI job's closed stdin
        return
    first = True
    while (line := prompt(f" [{DEFAULT_MESSAGE}]" if first else " (empty line to quit)", stdin)) is not None:
        if not line and not first:
            return
        yield check_message(line or DEFAULT_MESSAGE)
        first = False


def prompt(hint: str, stdin: TextIO) -> str | None:
    """One typed line, or None at end of input (Ctrl+D). The prompt goes to stderr: stdout is the answer."""
    print(f"You{hint}: ", end="", file=sys.stderr, flush=True)
    try:
        line = stdin.readline()
    except UnicodeDecodeError:
        raise ConfigError("the typed text is not valid UTF-8; check your terminal's encoding") from None
    return line.strip() if line else None


async def run_client(args: argparse.Namespace, settings: Settings, services: Services, position: StreamPosition) -> int:
    """Every turn of one conversation: start a run (or reattach) and stream it."""
    scheduler = get_client(settings, services)
    printer = ChunkPrinter(position, as_json=args.json)
    async with RedisStreamResponseHandler.from_url(
        services.redis_url, idle_timeout_seconds=settings.idle_timeout_seconds
    ) as handler:
        conversation = Conversation(get_travel_planner(scheduler), scheduler, handler, position)
        if args.cursor is not None:
            return await stream_turn(conversation, None, printer, args.verify)
        exit_code = EXIT_OK
        for message in messages_to_send(args):
            announce("client", f"session {position.session_key} (continue it with --session)")
            exit_code = await stream_turn(conversation, message, printer, args.verify)
            if exit_code != EXIT_OK:
                break
        return exit_code


def new_session_key() -> str:
    """A fresh conversation: the key its durable entity, and its stream, are named by."""
    return AgentSessionId.with_random_key(AGENT_NAME).key


def resume_hint(position: StreamPosition, program: str, services: Services | None = None) -> str:
    if services is not None and services.started_here:
        # The private Redis and embedded scheduler stop with this process: nothing to resume from later.
        return (
            f"interrupted at cursor {position.cursor} of session {position.session_key}; the services this process "
            "started stop with it: run `uv run worker.py` and `uv run client.py` to try resuming across processes"
        )
    if position.cursor is None:
        return f"interrupted before the first token; see the answer with: {program} --session {position.session_key}"
    return f"interrupted; resume with: {program} --session {position.session_key} --cursor {position.cursor}"


def run_cli(
    prog: str,
    description: str,
    role: Role,
    extra_setup: Callable[[Settings, Services, ExitStack], None] | None = None,
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Shared by client.py and sample.py: parse, configure, stream, and map every outcome to an exit code."""
    args = build_parser(prog, description).parse_args(argv)
    setup_logging()
    position = StreamPosition(session_key="")
    services: Services | None = None
    with ExitStack() as stack:
        try:
            validate_arguments(args)
            settings = load_settings(environ)
            services = provide_services(settings, stack, role)
            if extra_setup is not None:
                extra_setup(settings, services, stack)
            position.session_key = args.session or new_session_key()
            position.cursor = args.cursor
            return asyncio.run(run_client(args, settings, services, position))
        except (ConfigError, ValueError) as error:
            return fail(str(error), EXIT_USAGE)
        except grpc.RpcError as error:
            return fail(f"the scheduler failed the request: {error.code().name} {error.details()}", EXIT_RUN_FAILED)  # type: ignore[attr-defined]
        except RedisError as error:
            hint = resume_hint(position, "uv run client.py", services)
            return fail(f"Redis failed while streaming ({error}); {hint}", EXIT_RUN_FAILED)
        except KeyboardInterrupt:
            print(f"\n[client] {resume_hint(position, 'uv run client.py', services)}", file=sys.stderr)
            return 130
        except Exception as error:  # a bug or an unforeseen failure: still one line, details on request
            if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
                raise
            return fail(f"{type(error).__name__}: {error} (run with LOG_LEVEL=DEBUG for details)", EXIT_RUN_FAILED)


def main(argv: list[str] | None = None) -> int:
    return run_cli("client.py", "Ask the TravelPlanner and stream its answer from Redis.", "client", argv=argv)


if __name__ == "__main__":
    sys.exit(main())
