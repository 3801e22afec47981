"""The client: start a run without waiting, then tail its answer from Redis.

    uv run client.py -m "Plan a 2-day trip to Paris"                 # with `uv run worker.py` running
    uv run client.py --session <key> -m "Make day 2 more relaxed"   # next turn, same conversation
    uv run client.py --session <key> --cursor <entry id>            # reattach: print what follows
    uv run client.py -m "..." --json                                # one JSON object per chunk
    uv run client.py --session <key> --cancel                       # stop that conversation's current run

The answer goes to stdout, status lines to stderr. Exit status: 0 the answer completed, 1 the run
failed or stopped, 2 bad usage or configuration, 130 interrupted (it prints the resume command).

The flow, in `start_run` and `ask` (the web app and the benchmarks start runs with `start_run` too):
  1. note the newest entry id of the conversation's stream (the cursor): only this turn is read;
  2. `agent.run(message, session=..., options={"wait_for_response": False})`: queues the run, returns at once;
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
from cli.arguments import build_parser, messages_to_send, resume_hint, session_line, validate_arguments
from cli.cancel import cancel_command
from cli.history import history_command
from cli.printer import ChunkPrinter
from redis_stream_response_handler import ERROR, RedisStreamResponseHandler, StreamChunk
from reliability.durable_record import print_latest_recorded_answer, reattach_point_exists, settle_with_record
from reliability.run_tracker import read_run
from support.config import Settings, check_environment
from support.console import EXIT_OK, announce, configure_telemetry, run_entry_point, setup_logging
from support.scheduler import connect_client
from support.services import Services, provide_services
from support.sessions import correlation_id_of, new_session_key, session_for
from support.shutdown_signals import run_async  # asyncio.run, where a repeated Ctrl+C changes nothing
from support.telemetry import run_start_span


@dataclass(frozen=True)
class Connections:
    """What a client talks to, opened once: the scheduler (to start runs) and Redis (to read answers)."""

    scheduler: DurableTaskSchedulerClient
    agent: DurableAIAgent[AgentResponse]
    handler: RedisStreamResponseHandler


@dataclass
class Conversation:
    """One conversation as this client sees it: its key, and how far it has read."""

    session_key: str
    cursor: str | None = None  # the last entry id printed: where a resumed read starts
    verify: bool = False  # --verify: check each answer against the durable record
    resumable_elsewhere: bool = True  # False when the services this process started stop with it


@dataclass(frozen=True)
class StartedRun:  # where to read a run that was just started
    cursor: str  # the stream's newest entry before the run: its answer is everything after it
    correlation_id: str | None  # names the run's entries on the stream


async def start_run(
    agent: DurableAIAgent[AgentResponse], handler: RedisStreamResponseHandler, session_key: str, message: str
) -> StartedRun:
    """Fire and forget: the scheduler queues the run, and this returns at once with where to read it."""
    cursor = await handler.last_entry_id(session_key)  # taken first: only this run's entries follow it
    session = session_for(AGENT_NAME, session_key)  # a blocking gRPC call below, so on the loop's default executor
    with run_start_span({"wait_for_response": False}) as options:  # telemetry: its trace context travels in these
        acknowledgement = await asyncio.to_thread(agent.run, message, session=session, options=options)
    return StartedRun(cursor, correlation_id_of(acknowledgement))  # a workaround: support/sessions.py


async def ask(connections: Connections, conversation: Conversation, message: str, printer: ChunkPrinter) -> int:
    """1-2. Start a run for `message`, then 3. print its answer as it streams."""
    run = await start_run(connections.agent, connections.handler, conversation.session_key, message)
    conversation.cursor = run.cursor
    return await print_answer(connections, conversation, printer, run.correlation_id)


async def reattach(connections: Connections, conversation: Conversation, printer: ChunkPrinter) -> int:
    """Print what follows the conversation's cursor: a reader picking up where it stopped."""
    key = conversation.session_key
    if not await reattach_point_exists(connections.handler, key, conversation.cursor):  # expired, or Redis restarted
        return await print_latest_recorded_answer(connections.scheduler, key, printer)
    return await print_answer(connections, conversation, printer, correlation_id=None)


async def print_answer(
    connections: Connections, conversation: Conversation, printer: ChunkPrinter, correlation_id: str | None
) -> int:
    """3. XREAD BLOCK from the cursor, printing each entry as it arrives, until the run ends."""
    printer.waiting()
    key, cursor = conversation.session_key, conversation.cursor
    final = StreamChunk(entry_id=cursor or "0-0", kind=ERROR, error="the stream ended unexpectedly")
    async for chunk in read_run(connections.handler, key, cursor, correlation_id):
        conversation.cursor = chunk.entry_id
        printer.print_chunk(chunk)
        final = chunk
    printer.end_line()
    # No done marker, tokens lost on the way, or --verify: the durable record decides (a failed run exits 1).
    if not final.is_done or final.missing or conversation.verify:
        return await settle_with_record(connections.scheduler, key, final, printer, conversation.verify)
    return EXIT_OK


async def run_client(
    args: argparse.Namespace, settings: Settings, services: Services, conversation: Conversation
) -> int:
    """Every turn of one conversation: start a run (or reattach) and stream its answer."""
    scheduler = connect_client(services.scheduler_endpoint, settings.taskhub)
    agent = DurableAIAgentClient(scheduler).get_agent(AGENT_NAME)
    conversation.resumable_elsewhere = not services.started_here
    printer = ChunkPrinter(conversation.session_key, as_json=args.json)
    reader = RedisStreamResponseHandler.from_url(services.redis_url, idle_timeout_seconds=settings.idle_timeout_seconds)
    async with reader as handler:
        connections = Connections(scheduler, agent, handler)
        if args.cursor is not None:
            return await reattach(connections, conversation, printer)
        exit_code = EXIT_OK
        async for message in messages_to_send(args):
            announce("client", session_line(conversation, continuing=args.session is not None))  # how to come back
            if (exit_code := await ask(connections, conversation, message, printer)) != EXIT_OK:
                break
        return exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser("client.py", "Ask the TravelPlanner and stream its answer.", can_cancel=True).parse_args(argv)
    conversation = Conversation(args.session or new_session_key(), args.cursor, args.verify)

    def run() -> int:
        setup_logging()
        validate_arguments(args)  # bad usage fails here, before anything connects
        with ExitStack() as stack:
            settings = check_environment()
            configure_telemetry("client")  # when the environment asks for it: support/telemetry.py
            services = provide_services(settings, stack, role="client")  # finds what worker.py started
            if args.cancel:  # a Stop, not a disconnect: the worker ends the run (reliability/stop_watch.py)
                return run_async(cancel_command(settings, services, conversation.session_key))
            if args.history:  # read only the durable record, through the scheduler: cli/history.py
                return history_command(settings, services, conversation.session_key, as_json=args.json)
            return run_async(run_client(args, settings, services, conversation))

    return run_entry_point(run, resume_hint=lambda: resume_hint(conversation))


if __name__ == "__main__":
    sys.exit(main())
