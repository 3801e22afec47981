"""The client: start a run without waiting, then tail its answer from Redis.

    uv run client.py -m "Plan a 2-day trip to Paris"                 # with `uv run worker.py` running
    uv run client.py --session <key> -m "Make day 2 more relaxed"   # next turn, same conversation
    uv run client.py --session <key> --cursor <entry id>            # reattach: print what follows
    uv run client.py -m "..." --json                                # one JSON object per chunk
    uv run client.py --session <key> --cancel                       # stop that conversation's current run

The answer goes to stdout, status lines to stderr. Exit status: 0 the answer completed, 1 the run
failed or stopped, 2 bad usage or configuration, 130 interrupted (it prints the resume command).

The flow, in `stream_turn`:
  1. note the newest entry id of the conversation's stream (the cursor): only this turn is read;
  2. `agent.run(message, session=..., options={"wait_for_response": False})`: the scheduler
     queues the run and the call returns at once;
  3. XREAD BLOCK from the cursor, printing each token as it arrives, until the run's done or
     error marker. Every printed entry moves the cursor; Ctrl+C prints the command resuming there.

Read next: redis_stream_response_handler.py, the stream itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import ExitStack
from dataclasses import dataclass

from agent_framework import AgentResponse
from agent_framework_durabletask import DurableAIAgent, DurableAIAgentClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from agents import AGENT_NAME
from redis_stream_response_handler import ERROR, RedisStreamResponseHandler, StreamChunk
from reliability.cancellation import cancel_command
from reliability.recovery import print_latest_recorded_answer, reattach_point_exists, settle_with_record
from reliability.run_tracker import read_run
from support.cli import build_parser, messages_to_send, validate_arguments
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce, run_entry_point, setup_logging
from support.environment import Settings, check_environment
from support.printer import ChunkPrinter
from support.scheduler import connect_client
from support.services import Services, provide_services
from support.sessions import correlation_id_of, new_session_key, session_for


@dataclass
class Conversation:
    """One conversation as this client sees it: where runs go, where answers are read, how far it read."""

    session_key: str
    cursor: str | None = None  # the last entry id printed: where a resumed read starts
    agent: DurableAIAgent[AgentResponse] | None = None
    scheduler: DurableTaskSchedulerClient | None = None
    handler: RedisStreamResponseHandler | None = None
    resumable_elsewhere: bool = True  # False when the services this process started stop with it


def start_run(agent: DurableAIAgent[AgentResponse], message: str, session_key: str) -> str | None:
    """Fire and forget: the scheduler queues the run, and this returns at once with its correlation id."""
    acknowledgement = agent.run(message, session=session_for(session_key), options={"wait_for_response": False})
    return correlation_id_of(acknowledgement)  # a workaround: the id is only in the acknowledgement's text


async def stream_turn(conversation: Conversation, message: str | None, printer: ChunkPrinter, verify: bool) -> int:
    """Start a run for `message` (or reattach at the cursor when it is None) and print its answer."""
    assert conversation.agent and conversation.scheduler and conversation.handler
    handler, key, correlation_id = conversation.handler, conversation.session_key, None
    if message is not None:
        conversation.cursor = await handler.last_entry_id(key)  # 1. read only what this turn adds
        # 2. a blocking gRPC call, so off the event loop
        correlation_id = await asyncio.to_thread(start_run, conversation.agent, message, key)
    elif not await reattach_point_exists(handler, key, conversation.cursor):  # the stream expired, or Redis restarted
        return await print_latest_recorded_answer(conversation.scheduler, key, printer)
    printer.waiting()
    final = StreamChunk(entry_id=conversation.cursor or "0-0", kind=ERROR, error="the stream ended unexpectedly")
    async for chunk in read_run(handler, key, conversation.cursor, correlation_id):  # 3. tail the stream
        conversation.cursor = chunk.entry_id
        printer.print_chunk(chunk)
        final = chunk
    printer.end_line()
    if not final.is_done:  # an error or cancelled marker, or nothing arrived for the idle timeout
        printer.print_end(final)  # `error: ...` or `[client] the run was cancelled`
        return EXIT_RUN_FAILED
    if final.missing or verify:  # tokens lost on the way, or asked to check: the durable record decides
        return await settle_with_record(conversation.scheduler, key, final, printer, verify)
    return EXIT_OK


async def run_client(
    args: argparse.Namespace, settings: Settings, services: Services, conversation: Conversation
) -> int:
    """Every turn of one conversation: start a run (or reattach) and stream its answer."""
    conversation.scheduler = connect_client(services.scheduler_endpoint, settings.taskhub)
    conversation.agent = DurableAIAgentClient(conversation.scheduler).get_agent(AGENT_NAME)
    conversation.resumable_elsewhere = not services.started_here
    printer = ChunkPrinter(conversation.session_key, as_json=args.json)
    idle_timeout = settings.idle_timeout_seconds
    async with RedisStreamResponseHandler.from_url(services.redis_url, idle_timeout_seconds=idle_timeout) as handler:
        conversation.handler = handler
        if args.cursor is not None:
            return await stream_turn(conversation, None, printer, args.verify)
        exit_code = EXIT_OK
        async for message in messages_to_send(args):
            note = "continue it with --session" if conversation.resumable_elsewhere else "ends when this process exits"
            announce("client", f"session {conversation.session_key} ({note})")
            exit_code = await stream_turn(conversation, message, printer, args.verify)
            if exit_code != EXIT_OK:
                break
        return exit_code


def resume_hint(conversation: Conversation, program: str = "uv run client.py") -> str:
    """What to run to pick up where this reader stopped."""
    key, cursor = conversation.session_key, conversation.cursor
    if not conversation.resumable_elsewhere:
        return (
            f"interrupted at cursor {cursor} of session {key}; the services this process started "
            "stop with it: run `uv run worker.py` and `uv run client.py` to try resuming across processes"
        )
    if cursor is None:
        return f"interrupted before the first token; see the answer with: {program} --session {key}"
    return f"interrupted; resume with: {program} --session {key} --cursor {cursor}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser("client.py", "Ask the TravelPlanner and stream its answer.", can_cancel=True).parse_args(argv)
    conversation = Conversation(session_key=args.session or new_session_key(), cursor=args.cursor)

    def run() -> int:
        setup_logging()
        validate_arguments(args)  # bad usage fails here, before anything connects
        with ExitStack() as stack:
            settings = check_environment()
            services = provide_services(settings, stack, role="client")  # finds what worker.py started
            if args.cancel:  # a Stop, not a disconnect: the worker ends the run (reliability/cancellation.py)
                return asyncio.run(cancel_command(settings, services, conversation.session_key))
            return asyncio.run(run_client(args, settings, services, conversation))

    return run_entry_point(run, resume_hint=lambda: resume_hint(conversation))


if __name__ == "__main__":
    sys.exit(main())
