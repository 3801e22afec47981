"""Redis Streams as a durable, resumable transport for an agent's streamed answer.

The worker appends every token of an answer to a Redis Stream named after the conversation; any
number of readers tail it, stop, and resume at any entry id (a cursor) with no gap and no repeat:

    worker ── XADD agent-stream:{session} ──▶ Redis Stream ──▶ XREAD BLOCK ── client
                                                   ▲
                      a client reconnects: XREAD from its last entry id

Each entry's fields (Redis stores strings); the one description of the format, which other files refer to:

    kind            token | tool_call | tool_result | start | restart | heartbeat | queued | done | error | cancelled
    text, sequence  a token's text ("" for markers); its (or a tool entry's) place in the run (markers: how many so far)
    correlation_id  the run this entry belongs to (one per `run(...)` call); timestamp: when written (epoch seconds)
    attempt, worker every entry: the attempt at the answer that wrote it (readers follow the newest only: a second
                    start means the run was delivered again); start: + worker (host:pid), traceparent (telemetry)
    name, call_id   the tool and its call; tool_call: + arguments (JSON text); tool_result: + result (cut at 2,000
                    characters, saying so), error (if the tool failed)
    chunks, usage   done: entries numbered in the run, {"input_tokens": N, "output_tokens": M} (when reported)
    error, reason   error: the message; restart (the host retried without streaming), cancelled: why (+ usage)
    slots, waiting  queued (the run waits for a free slot of `worker`); heartbeat: nothing more (alive, but silent)

Try it (writes a short run to Redis, reads it back): `uv run python -m reliability.write_behind`

Read next: reliability/run_tracker.py follows ONE run through this stream (repeats, restarts, gaps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from support.redis_connection import AsyncRedis, async_client
from support.redis_quirks import socket_timeout_outlasting
from support.redis_reads import ReconnectingReads
from support.validation import validate_cursor, validate_session_key

logger = logging.getLogger(__name__)

STREAM_KEY_PREFIX = "agent-stream:"
START_OF_STREAM = "0-0"  # XREAD returns ids strictly greater than this: everything
TOKEN, START, RESTART, HEARTBEAT, DONE, ERROR = "token", "start", "restart", "heartbeat", "done", "error"
TOOL_CALL, TOOL_RESULT, CANCELLED, QUEUED = "tool_call", "tool_result", "cancelled", "queued"
MARKERS_THAT_END_A_RUN = (DONE, ERROR, CANCELLED)


def stream_key(session_key: str) -> str:
    """The Redis key of a conversation's stream, after checking the key is safe; `{}`: a cluster hash tag."""
    return f"{STREAM_KEY_PREFIX}{{{validate_session_key(session_key)}}}"


def entry_fields(kind: str, correlation_id: str, sequence: int, text: str = "", **extra: str | int) -> dict[str, str]:
    """The fields of one stream entry, as Redis stores them."""
    fields = {"kind": kind, "text": text, "sequence": str(sequence), "correlation_id": correlation_id}
    return {**fields, "timestamp": f"{time.time():.6f}", **{name: str(value) for name, value in extra.items()}}


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
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None
    result: str | None = None
    usage: str | None = None
    reason: str | None = None
    traceparent: str | None = None  # start and restart markers, with telemetry on: the attempt's trace context
    missing: int = 0  # set by the reader on a done chunk: tokens of this run it knows it never received
    _TEXTS = ("error", "worker", "attempt", "name", "call_id", "arguments", "result", "usage", "reason", "traceparent")

    @property
    def is_done(self) -> bool:
        return self.kind == DONE

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> StreamChunk:
        chunks = fields.get("chunks")
        optional: dict[str, Any] = {name: fields.get(name) for name in cls._TEXTS}  # None when absent
        return cls(
            entry_id=entry_id,
            kind=fields.get("kind", TOKEN),
            text=fields.get("text", ""),
            sequence=int(fields.get("sequence", 0)),
            correlation_id=fields.get("correlation_id", ""),
            timestamp=float(fields.get("timestamp", 0.0)),
            chunks=int(chunks) if chunks is not None else None,
            **optional,
        )


class StreamIdleTimeoutError(Exception):
    """Nothing at all arrived on the stream for the idle timeout."""


class RedisStreamResponseHandler:
    """Writes entries to, and reads them back from, `agent-stream:{session key}`.

    One instance holds one pooled `redis.asyncio` client. Create it on the event loop that uses it
    (the worker creates its own on the agent's loop) and reuse it: a connection per token costs
    about ten times the throughput of one pooled connection (docs/benchmarks.md).
    """

    def __init__(
        self, client: AsyncRedis, *, ttl_seconds: int = 600, max_length: int = 10_000, idle_timeout_seconds: float = 20
    ) -> None:
        self.redis, self.ttl_seconds, self.max_length = client, ttl_seconds, max_length
        self.idle_timeout_seconds = idle_timeout_seconds

    @classmethod
    def from_url(cls, url: str, *, single_connection: bool = False, **options: Any) -> RedisStreamResponseHandler:
        # Redis or RedisCluster (support/redis_connection.py), fields as str; a socket timeout that outlasts
        # XREAD BLOCK (redis-py's 5 s default cuts it short).
        timeout = socket_timeout_outlasting(options.get("idle_timeout_seconds", 20.0))
        client_options = {"single_connection": single_connection, "socket_connect_timeout": 5}
        client = async_client(url, decode_responses=True, socket_timeout=timeout, **client_options)
        return cls(client, **options)

    async def __aenter__(self) -> RedisStreamResponseHandler:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def write_streams(
        self, streams: Sequence[tuple[str, Sequence[Mapping[str, str]]]], expire: Collection[str] = ()
    ) -> list[str]:
        """Append entries to one or more conversations' streams in ONE round trip; return their ids.

        A pipeline, not a transaction (MULTI cannot span keys on a cluster): after a dropped
        connection a retry may repeat entries, which readers recognise by sequence and skip.
        MAXLEN ~ trims lazily (cheap) so a runaway stream cannot grow without bound; EXPIRE for the
        session keys in `expire` (the writer refreshes a TTL only when it is due).
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_key, entries in streams:
                for fields in entries:
                    pipe.xadd(stream_key(session_key), dict(fields), maxlen=self.max_length, approximate=True)  # type: ignore[arg-type]
            for session_key in expire:
                pipe.expire(stream_key(session_key), self.ttl_seconds)
            results = await pipe.execute()
        return [str(entry_id) for entry_id in results[: len(results) - len(expire)]]

    async def last_entry_id(self, session_key: str) -> str:
        """The newest entry's id (`0-0` for an empty stream): a client reads after it, so only its own turn."""
        newest = await self.redis.xrevrange(stream_key(session_key), count=1)
        return str(newest[0][0]) if newest else START_OF_STREAM

    async def read_entries(self, session_key: str, cursor: str | None = None) -> AsyncIterator[StreamChunk]:
        """Every entry after `cursor`, as it arrives, until nothing arrives for the idle timeout.

        XREAD BLOCK parks the request in Redis until an entry arrives, so a token is yielded within
        a millisecond of its XADD: no polling sleep. Raises `StreamIdleTimeoutError` when nothing,
        not even a heartbeat, arrives for `idle_timeout_seconds`; a Redis outage is ridden out as long.
        """
        reads = ReconnectingReads(self.redis, stream_key(session_key), patience_seconds=self.idle_timeout_seconds)
        cursor = validate_cursor(cursor) if cursor is not None else START_OF_STREAM
        while True:
            response = await reads.after(cursor)  # reconnects from the cursor (support/redis_reads.py)
            if not response:
                raise StreamIdleTimeoutError(cursor)
            for entry_id, fields in response[0][1]:
                cursor = str(entry_id)
                yield StreamChunk.from_entry(cursor, fields)
