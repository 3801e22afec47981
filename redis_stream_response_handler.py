"""Redis Streams as a durable, resumable transport for an agent's streamed answer.

This file is the heart of the pattern. The worker appends every token of an
answer to a Redis Stream named after the conversation; any number of readers
tail that stream and can stop and resume at any entry id (a cursor) without
losing or repeating a token.

    worker ── XADD agent-stream:{session} ──▶ Redis Stream ──▶ XREAD BLOCK ── client
                                                    ▲
                       client reconnects: XREAD from its last entry id

What each entry holds (all Redis stream fields are strings):

    kind            token | start | restart | heartbeat | done | error
    text            the token's text ("" for markers)
    sequence        position of the token within its run (markers: tokens so far)
    correlation_id  the run this entry belongs to (one per `run(...)` call)
    timestamp       seconds since the epoch, when the worker produced it
    error           the error message (error markers only)
    chunks          how many tokens the run produced (done markers only)
    worker          host:pid of the worker process that ran it (start markers only)
    attempt         id of one attempt at the answer (start and restart markers)

Try it against any Redis (writes a short stream, then reads it back from a cursor):

    uv run python redis_stream_response_handler.py
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

STREAM_KEY_PREFIX = "agent-stream:"
START_OF_STREAM = "0-0"  # XREAD returns ids strictly greater than this: everything

TOKEN, START, RESTART, HEARTBEAT, DONE, ERROR = "token", "start", "restart", "heartbeat", "done", "error"
MARKERS_THAT_END_A_RUN = (DONE, ERROR)

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# Conversation ids become part of a Redis key; keep them to a boring, safe alphabet.
_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def stream_key(conversation_id: str) -> str:
    """The Redis key of a conversation's stream, after checking the id is safe."""
    validate_conversation_id(conversation_id)
    return f"{STREAM_KEY_PREFIX}{conversation_id}"


def validate_conversation_id(conversation_id: str) -> str:
    if not _CONVERSATION_ID.match(conversation_id):
        raise ValueError(
            f"session key must be 1-128 characters of letters, digits, '_', '-', '.' or ':' (got {conversation_id!r})"
        )
    return conversation_id


def validate_cursor(cursor: str) -> str:
    """Reject anything that is not a stream entry id, before it reaches Redis."""
    if not _ENTRY_ID.match(cursor):
        raise ValueError(f"cursor must be a Redis stream entry id such as 1734649123456-0 (got {cursor!r})")
    return cursor


@dataclass(frozen=True)
class StreamChunk:
    """One entry read back from a conversation's stream."""

    entry_id: str
    kind: str
    text: str = ""
    sequence: int = 0
    correlation_id: str = ""
    timestamp: float = 0.0
    error: str | None = None
    chunks: int | None = None
    worker: str | None = None
    attempt: str | None = None
    missing: int = 0  # set by the reader on a done chunk: tokens of this run it knows it never received

    @property
    def is_done(self) -> bool:
        return self.kind == DONE

    @property
    def is_error(self) -> bool:
        return self.kind == ERROR

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> StreamChunk:
        chunks = fields.get("chunks")
        return cls(
            entry_id=entry_id,
            kind=fields.get("kind", TOKEN),
            text=fields.get("text", ""),
            sequence=int(fields.get("sequence", 0)),
            correlation_id=fields.get("correlation_id", ""),
            timestamp=float(fields.get("timestamp", 0.0)),
            error=fields.get("error"),
            chunks=int(chunks) if chunks is not None else None,
            worker=fields.get("worker"),
            attempt=fields.get("attempt"),
        )


def entry_fields(kind: str, correlation_id: str, sequence: int, text: str = "", **extra: str | int) -> dict[str, str]:
    """The fields of one stream entry, as Redis stores them."""
    fields = {
        "kind": kind,
        "text": text,
        "sequence": str(sequence),
        "correlation_id": correlation_id,
        "timestamp": f"{time.time():.6f}",
    }
    fields.update({name: str(value) for name, value in extra.items()})
    return fields


class StreamIdleTimeoutError(Exception):
    """Nothing at all arrived on the stream for the idle timeout."""


class RedisStreamResponseHandler:
    """Writes entries to, and reads them back from, `agent-stream:{conversation_id}`.

    One instance holds one pooled `redis.asyncio` client. Create it on the event
    loop that will use it (the worker creates its own on the agent's loop) and
    reuse it: opening a connection per token is what made the seed slow.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl_seconds: int = 600,
        max_length: int = 10_000,
        idle_timeout_seconds: float = 20.0,
    ) -> None:
        self.redis = client
        self.ttl_seconds = ttl_seconds
        self.max_length = max_length
        self.idle_timeout_seconds = idle_timeout_seconds

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStreamResponseHandler:
        # decode_responses: stream fields come back as str; no socket_timeout, so
        # a long XREAD BLOCK is not cut short by the client itself.
        return cls(aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5), **options)

    async def __aenter__(self) -> RedisStreamResponseHandler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.redis.aclose()

    # ---- writing ---------------------------------------------------------

    async def write_entries(self, conversation_id: str, entries: list[dict[str, str]]) -> list[str]:
        """Append `entries` in order, in ONE round trip, and refresh the TTL.

        MULTI/EXEC makes the batch all-or-nothing, so a retry after a dropped
        connection can only repeat a whole batch, which readers recognise by
        its sequence numbers and skip. MAXLEN ~ trims lazily (cheap) and keeps a
        runaway stream from growing without bound.
        """
        key = stream_key(conversation_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for fields in entries:
                pipe.xadd(key, fields, maxlen=self.max_length, approximate=True)  # type: ignore[arg-type]
            pipe.expire(key, self.ttl_seconds)
            results = await pipe.execute()
        return [str(entry_id) for entry_id in results[:-1]]

    async def write_streams(self, streams: list[tuple[str, list[dict[str, str]]]], expire: set[str]) -> None:
        """Append entries to several conversations' streams in ONE round trip (the flusher's batch).

        Not a transaction (MULTI cannot span keys on a cluster): after a dropped
        connection a retry may repeat entries, which readers skip. EXPIRE only
        for the streams in `expire`: the writer refreshes a TTL when it is due.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for conversation_id, entries in streams:
                key = stream_key(conversation_id)
                for fields in entries:
                    pipe.xadd(key, fields, maxlen=self.max_length, approximate=True)  # type: ignore[arg-type]
            for conversation_id in expire:
                pipe.expire(stream_key(conversation_id), self.ttl_seconds)
            await pipe.execute()

    async def write_chunk(self, conversation_id: str, text: str, sequence: int, correlation_id: str) -> str:
        return (await self.write_entries(conversation_id, [entry_fields(TOKEN, correlation_id, sequence, text)]))[0]

    async def write_completion(
        self, conversation_id: str, sequence: int, correlation_id: str, chunks: int | None = None
    ) -> str:
        marker = entry_fields(DONE, correlation_id, sequence, chunks=sequence if chunks is None else chunks)
        return (await self.write_entries(conversation_id, [marker]))[0]

    async def write_error(self, conversation_id: str, error: str, sequence: int, correlation_id: str) -> str:
        marker = entry_fields(ERROR, correlation_id, sequence, error=error)
        return (await self.write_entries(conversation_id, [marker]))[0]

    # ---- reading ---------------------------------------------------------

    async def last_entry_id(self, conversation_id: str) -> str:
        """The id of the newest entry, or `0-0` for an empty or missing stream.

        A client takes this before starting a run so that it reads only the
        answer to its own message, not the earlier turns of the conversation.
        """
        newest = await self.redis.xrevrange(stream_key(conversation_id), count=1)
        return str(newest[0][0]) if newest else START_OF_STREAM

    async def read_entries(self, conversation_id: str, cursor: str | None = None) -> AsyncIterator[StreamChunk]:
        """Every entry after `cursor`, as it arrives, for as long as entries keep coming.

        XREAD BLOCK parks the request in Redis until an entry arrives, so a token
        is yielded within a millisecond of its XADD; there is no polling sleep.
        Raises `StreamIdleTimeoutError` when nothing (not even a heartbeat) arrives
        for `idle_timeout_seconds`.
        """
        key = stream_key(conversation_id)
        cursor = validate_cursor(cursor) if cursor is not None else START_OF_STREAM
        block_ms = max(1, int(self.idle_timeout_seconds * 1000))
        while True:
            response = await self._xread_with_reconnect(key, cursor, block_ms)
            if not response:
                raise StreamIdleTimeoutError(cursor)
            for entry_id, fields in response[0][1]:
                cursor = str(entry_id)
                yield StreamChunk.from_entry(cursor, fields)

    async def _xread_with_reconnect(self, key: str, cursor: str, block_ms: int) -> Any:
        # A dropped connection is not the end of the answer: the stream is still
        # in Redis, so ask again from the same cursor (no gap, no duplicate).
        for attempt in range(5):
            try:
                response = await self.redis.xread({key: cursor}, block=block_ms, count=500)
                _raise_if_cancel_was_swallowed()
                return response
            except (RedisConnectionError, RedisTimeoutError) as error:
                if attempt == 4:
                    raise
                logger.warning("Redis read failed (%s); reconnecting from cursor %s", error, cursor)
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def read_stream(
        self, conversation_id: str, cursor: str | None = None, *, correlation_id: str | None = None
    ) -> AsyncIterator[StreamChunk]:
        """The chunks of ONE run after `cursor`, ending with its done or error marker.

        With `correlation_id`, only that run's entries are yielded; without it,
        the reader follows the first run it meets after the cursor. Heartbeats
        and other runs' entries are not yielded but do prove the worker alive.
        See `RunTracker` for repeats, restarts and gaps. When nothing arrives
        for the idle timeout, the read ends with an error chunk instead of
        hanging, whether or not any data had arrived before.
        """
        run = RunTracker(correlation_id)
        last_entry_id = cursor or START_OF_STREAM
        try:
            async for chunk in self.read_entries(conversation_id, cursor):
                last_entry_id = chunk.entry_id
                visible = run.accept(chunk)
                if visible is None:
                    continue
                yield visible
                if visible.kind in MARKERS_THAT_END_A_RUN:
                    return
        except StreamIdleTimeoutError:
            yield StreamChunk(
                entry_id=last_entry_id,
                kind=ERROR,
                correlation_id=run.correlation_id or "",
                sequence=run.next_sequence,
                error=run.idle_message(self.idle_timeout_seconds),
            )


def _raise_if_cancel_was_swallowed() -> None:
    # redis-py (8.1) can swallow a cancellation that lands while it finishes a
    # reply. Honour it here, so Ctrl+C (and a closing web request) always stops a reader.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RunTracker:
    """Follows one run through a shared stream, turning raw entries into what a reader should see.

    - entries of other runs, and heartbeats, are dropped;
    - a token already seen (a batch the worker wrote twice after a dropped
      connection) is dropped;
    - a second `start` for the same run with a new attempt id (the scheduler
      delivered it again after a worker died) becomes a `restart`: the answer
      starts over; the same attempt id again is a repeat, and is dropped;
    - a jump in sequence numbers, or a done marker whose `chunks` is more than
      what arrived, is counted in `missing`, set on the done chunk: the reader
      can then take the answer from the durable record instead.
    """

    def __init__(self, correlation_id: str | None) -> None:
        self.correlation_id = correlation_id
        self.next_sequence = 0
        self.seen_any = False
        self.attempt: str | None = None  # id of the attempt being read; None until its start marker
        self.missing = 0

    def accept(self, chunk: StreamChunk) -> StreamChunk | None:
        if self.correlation_id is None and chunk.kind != HEARTBEAT:
            self.correlation_id = chunk.correlation_id  # follow the first run after the cursor
        if chunk.correlation_id != self.correlation_id or chunk.kind == HEARTBEAT:
            return None
        if chunk.kind in (START, RESTART):
            restarted = self._begin_attempt(chunk)
            if restarted is None:
                return None
            chunk = restarted
        elif chunk.kind == TOKEN:
            if self.seen_any and chunk.sequence < self.next_sequence:
                return None
            if self.seen_any:
                self.missing += chunk.sequence - self.next_sequence
            self.next_sequence = chunk.sequence + 1
        elif chunk.kind == DONE:
            self.missing += max(0, (chunk.chunks or 0) - self.next_sequence) if self.seen_any else 0
            chunk = replace(chunk, missing=self.missing)
        self.seen_any = True
        return chunk

    def _begin_attempt(self, chunk: StreamChunk) -> StreamChunk | None:
        if chunk.attempt is not None and chunk.attempt == self.attempt:
            return None  # the same marker written twice by a retried write
        again = chunk.kind == START and self.attempt is not None
        self.attempt, self.next_sequence, self.missing = chunk.attempt or "", 0, 0
        if again:
            return replace(chunk, kind=RESTART, error="the run was delivered again after its worker stopped")
        return chunk

    def idle_message(self, idle_timeout: float) -> str:
        if not self.seen_any:
            return (
                f"no answer started within {idle_timeout:g}s: is a worker running (uv run worker.py), "
                "and connected to the same scheduler and Redis?"
            )
        return f"the answer stopped: nothing arrived for {idle_timeout:g}s (the worker may have died)"


async def _demo(url: str = "redis://localhost:6379") -> None:
    async with RedisStreamResponseHandler.from_url(url, ttl_seconds=60) as handler:
        conversation = f"demo-{int(time.time())}"
        ids = [await handler.write_chunk(conversation, f"token{n} ", n, "run-1") for n in range(5)]
        await handler.write_completion(conversation, 5, "run-1")
        print("wrote", ids)
        async for chunk in handler.read_stream(conversation, cursor=ids[1]):
            print(chunk.entry_id, chunk.kind, repr(chunk.text))


if __name__ == "__main__":
    asyncio.run(_demo())
