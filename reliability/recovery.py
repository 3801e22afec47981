"""Falling back on the durable record: when the stream lost something, the entity's record has it.

The Redis stream is a fast, disposable copy of the answer. When a reader knows it missed tokens
(a gap in sequence numbers), finds the stream gone (expired, or Redis restarted empty), or is
asked to `--verify`, it compares with, or takes, the answer the durable agent entity recorded.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol

from durabletask.client import TaskHubGrpcClient

from redis_stream_response_handler import START_OF_STREAM, RedisStreamResponseHandler, StreamChunk
from reliability.durable_record import latest_recorded_answer, wait_for_recorded_answer
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce
from support.errors import UsageError
from support.validation import entry_id_order


class AnswerPrinter(Protocol):
    answer: str  # the text the reader printed for the current attempt

    def print_recovered(self, text: str) -> None: ...


async def print_latest_recorded_answer(scheduler: TaskHubGrpcClient, session_key: str, printer: AnswerPrinter) -> int:
    """The stream is gone (expired, or Redis restarted): print the answer the durable agent recorded."""
    answer = await asyncio.to_thread(latest_recorded_answer, scheduler, session_key)
    if answer is None:
        raise UsageError(
            f"unknown session {session_key}: no stream and no recorded answer (it expired, or never existed)"
        )
    announce("client", "the stream is gone (expired, or Redis restarted); this is the answer the agent recorded:")
    printer.print_recovered(answer.text)
    return EXIT_OK


async def settle_with_record(
    scheduler: TaskHubGrpcClient, session_key: str, final: StreamChunk, printer: AnswerPrinter, verify: bool
) -> int:
    """Compare what was streamed with the durable record; replace a stream with gaps by the record."""
    record = await asyncio.to_thread(wait_for_recorded_answer, scheduler, session_key, final.correlation_id)
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


async def reattach_point_exists(handler: RedisStreamResponseHandler, session_key: str, cursor: str | None) -> bool:
    """True when the stream still exists and `cursor` is not past its end (a UsageError then)."""
    newest = await handler.last_entry_id(session_key)
    if newest == START_OF_STREAM:
        return False
    if cursor is not None and entry_id_order(cursor) > entry_id_order(newest):
        raise UsageError(f"cursor {cursor} is past the end of the stream (newest entry: {newest})")
    return True
