"""The command line of client.py and sample.py: flags, usage checks, the messages to send, how to resume.

Usage errors are caught here, before anything connects anywhere. With no `-m` on a terminal the
client prompts for each turn (on stderr: stdout is the answer) until an empty line or Ctrl+D; on a
pipe or a closed stdin it sends the default message and never blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Protocol, TextIO

from support.console import NothingSent
from support.errors import UsageError
from support.validation import check_message, validate_cursor, validate_session_key

DEFAULT_MESSAGE = "Plan a 3-day trip to Tokyo with emphasis on culture and food"


def build_parser(
    prog: str, description: str, *, can_cancel: bool = False, crash_demo: bool = False
) -> argparse.ArgumentParser:
    """client.py's flags (sample.py shares them); `--cancel` and `--history` only where the conversation lives on
    elsewhere (a sample's embedded services stop with it)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if crash_demo:  # sample.py only: reliability/crash_demo.py
        parser.add_argument("--crash-demo", action="store_true", help="kill a worker mid-answer; watch it re-delivered")
    parser.add_argument("-m", "--message", help=f"what to ask the TravelPlanner (default: {DEFAULT_MESSAGE!r})")
    parser.add_argument("--session", help="continue this conversation (the session key printed by an earlier run)")
    parser.add_argument("--cursor", help="with --session and no -m: reattach and print only what follows this entry id")
    parser.add_argument("--json", action="store_true", help="print one JSON object per chunk instead of plain text")
    parser.add_argument("--verify", action="store_true", help="check the streamed answer against the durable record")
    if can_cancel:
        parser.add_argument("--cancel", action="store_true", help="with --session: stop the session's current run")
        parser.add_argument(
            "--history", action="store_true", help="with --session: print the conversation the durable agent recorded"
        )
    return parser


def validate_arguments(args: argparse.Namespace) -> None:
    """Usage errors, caught before anything connects anywhere."""
    if getattr(args, "history", False) and (
        args.session is None or args.message is not None or args.cursor is not None or args.cancel or args.verify
    ):
        raise UsageError("--history prints one recorded conversation: use it with --session (and --json) only")
    if getattr(args, "cancel", False) and (args.session is None or args.message is not None or args.cursor is not None):
        raise UsageError("--cancel stops the current run of one conversation: use it with --session only")
    if args.cursor is not None:
        if args.session is None:
            raise UsageError("--cursor needs --session: a cursor is a position in one conversation's stream")
        if args.message is not None:
            raise UsageError("--cursor reattaches to a running answer; drop -m (or drop --cursor to ask again)")
        validate_cursor(args.cursor)
    if args.session is not None:
        validate_session_key(args.session)
    if args.message is not None:
        check_message(args.message)


async def messages_to_send(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> AsyncIterator[str]:
    """The first message, then (interactive terminals only) further turns until an empty line."""
    if args.message is not None:
        yield args.message
        return
    if not stdin.isatty():
        yield DEFAULT_MESSAGE  # never block on a pipe or a CI job's closed stdin
        return
    first = True
    while (line := await prompt(f" [{DEFAULT_MESSAGE}]" if first else " (empty line to quit)", stdin)) is not None:
        if not line and not first:
            return
        yield check_message(line or DEFAULT_MESSAGE)
        first = False


async def prompt(hint: str, stdin: TextIO) -> str | None:
    """One typed line, or None at end of input (Ctrl+D). The prompt goes to stderr: stdout is the answer.

    The wait leaves the event loop free, so Ctrl+C (which cancels the running task) stops it at
    once. A blocking `readline()` here held the loop: the first Ctrl+C went unnoticed.
    """
    print(f"You{hint}: ", end="", file=sys.stderr, flush=True)
    loop, descriptor = asyncio.get_running_loop(), stdin.fileno()
    typed = loop.create_future()
    loop.add_reader(descriptor, lambda: typed.done() or typed.set_result(None))
    try:
        await typed
    except asyncio.CancelledError:
        raise NothingSent from None
    finally:
        loop.remove_reader(descriptor)
    # A terminal hands over one line per read; reading the descriptor, not `stdin`, keeps lines typed
    # ahead out of a Python buffer that the next wait for the descriptor would not see.
    data = os.read(descriptor, 65_536)
    try:
        return data.decode().strip() if data else None
    except UnicodeDecodeError:
        raise UsageError("the typed text is not valid UTF-8; check your terminal's encoding") from None


class ReadPosition(Protocol):
    session_key: str
    cursor: str | None  # the last entry id printed
    resumable_elsewhere: bool  # False when the services this process started stop with it


def session_line(reader: ReadPosition, *, continuing: bool) -> str:
    """The `[client] session …` status line: how to come back to this conversation, where one can.

    `continuing`: the key was given (--session), so it is known already; sample.py --crash-demo
    gives its clients one, and no one continues that conversation once the demo's services stop.
    """
    if not reader.resumable_elsewhere:
        return f"session {reader.session_key} (ends when this process exits)"
    return f"session {reader.session_key}" + ("" if continuing else " (continue it with --session)")


def resume_hint(reader: ReadPosition, program: str = "uv run client.py") -> str:
    """What to run to pick up where this reader stopped."""
    key, cursor = reader.session_key, reader.cursor
    if not reader.resumable_elsewhere:
        return (
            f"interrupted at cursor {cursor} of session {key}; the services this process started "
            "stop with it: run `uv run worker.py` and `uv run client.py` to try resuming across processes"
        )
    if cursor is None:
        # Before the run was started (or while it was): `--session K` alone would ask again, a new turn.
        return f"interrupted before the run started; see the conversation with: {program} --session {key} --history"
    return f"interrupted; resume with: {program} --session {key} --cursor {cursor}"
