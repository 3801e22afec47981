"""Where a resumed read stands: the run and sequence at its cursor, and whether the cursor was trimmed.

A reader that resumes from a cursor has not seen the tokens before it, so the first token it meets
may rightly have a sequence above 0. Looking up the cursor's own entry tells the reader which
sequence comes next, so a gap right after the cursor is counted like any other gap.

When the cursor's entry is gone, the reader cannot know what came between it and the oldest entry
still there. MAXLEN trimming does this: with REDIS_STREAM_MAX_LENGTH=100 a 7-day trip (235 entries)
loses its first entries while it is written, and a reader resuming from one of them printed 588 of
1,373 bytes, starting mid-sentence, and exited 0. A cursor older than the oldest entry is reported
as trimmed, and the reader then expects sequence 0: a first token above it is a leading gap,
counted as missing, and the answer comes from the durable record.

Try it: `uv run python -m reliability.resume_point` writes a short run, then shows where a cursor at its
second token stands, before and after the stream is trimmed (Redis: the one sample.py would use).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from redis_stream_response_handler import (
    START,
    START_OF_STREAM,
    TOKEN,
    TOOL_CALL,
    TOOL_RESULT,
    RedisStreamResponseHandler,
    StreamChunk,
    entry_fields,
    stream_key,
)
from support.redis_connection import AsyncRedis
from support.validation import entry_id_order, validate_cursor

logger = logging.getLogger(__name__)


class StreamSource(Protocol):
    """Where a reader looks entries up: RedisStreamResponseHandler, or the web app's hub (webapp/stream_hub.py)."""

    @property
    def redis(self) -> AsyncRedis: ...


@dataclass(frozen=True)
class ResumePoint:
    """What the entry at a cursor says about the read that follows it."""

    correlation_id: str | None = None  # the run the cursor's entry belongs to; None when it is gone
    next_sequence: int = 0  # the sequence of that run's next token
    trimmed: bool = False  # the cursor is older than the oldest entry still in the stream
    attempt: str | None = None  # the attempt id, when the cursor is that attempt's start marker

    def expected_sequence(self, correlation_id: str | None) -> int | None:
        """The next token's sequence for `correlation_id`'s run, when the cursor was inside that run."""
        return self.next_sequence if correlation_id is not None and correlation_id == self.correlation_id else None


async def resume_point(handler: StreamSource, session_key: str, cursor: str | None) -> ResumePoint:
    """Look up the entry at `cursor` (one XRANGE), and the oldest entry if that one is gone."""
    if cursor is None or cursor == START_OF_STREAM:
        return ResumePoint()
    key = stream_key(session_key)
    at_cursor = await handler.redis.xrange(key, min=validate_cursor(cursor), max=cursor, count=1)
    if at_cursor:
        entry_id, fields = at_cursor[0]
        chunk = StreamChunk.from_entry(str(entry_id), fields)
        # Markers carry the count so far as their sequence; a numbered entry is followed by the next one.
        next_sequence = chunk.sequence + 1 if chunk.kind in (TOKEN, TOOL_CALL, TOOL_RESULT) else chunk.sequence
        return ResumePoint(chunk.correlation_id, next_sequence, attempt=chunk.attempt)
    oldest = await handler.redis.xrange(key, count=1)
    trimmed = bool(oldest) and entry_id_order(cursor) < entry_id_order(str(oldest[0][0]))
    if trimmed:
        logger.warning(
            "cursor %s is older than the oldest entry still in the stream (%s): entries after it were trimmed "
            "(REDIS_STREAM_MAX_LENGTH); what is missing is counted and taken from the durable record",
            cursor,
            oldest[0][0],
        )
    return ResumePoint(trimmed=trimmed)


async def _demo(redis_url: str) -> None:
    session_key = f"resume-demo-{uuid.uuid4().hex}"
    words = [entry_fields(TOKEN, "run-1", sequence, f"word{sequence} ") for sequence in range(5)]
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=60) as handler:
        ids = await handler.write_streams([(session_key, [entry_fields(START, "run-1", 0, attempt="a1"), *words])])
        cursor = ids[2]  # a reader saw the start marker and two tokens
        print("cursor at the second token:", await resume_point(handler, session_key, cursor))
        await handler.redis.xtrim(stream_key(session_key), maxlen=2, approximate=False)  # as MAXLEN does to a long run
        print("the same cursor, trimmed:  ", await resume_point(handler, session_key, cursor))


if __name__ == "__main__":
    from support.services import demo_redis

    with demo_redis() as demo_url:
        asyncio.run(_demo(demo_url))
