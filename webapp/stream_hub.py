"""The stream hub: one web process reads each live stream ONCE, and fans its entries out to every reader in memory.

Before the hub every SSE or AG-UI reader parked an `XREAD BLOCK` on a Redis connection of its own,
so a web process served at most as many readers as it held connections (200): 1,000 readers of
50 runs got 800 refusals and the stack held 204 connections. With the hub:

    XADD ──▶ Redis ──▶ one XREAD BLOCK over every stream that has readers ──▶ hub ──▶ buffer ──▶ reader
                                                                              └──▶ buffer ──▶ reader ...

- **A few connections, however many readers.** One Redis: one connection blocks in a single
  multi-key XREAD over all streams with live readers; another wakes it (an XADD to the hub's own
  wake-up key) when a stream joins or leaves; a few more serve catch-up reads. Redis Cluster
  refuses a multi-key XREAD across hash slots, and every conversation has a slot of its own, so
  there the hub reads all its streams in one pipeline every POLL_SECONDS: redis-py groups the
  pipeline by node (one connection per node) and re-learns the slot owners after a node restart.
- **The same per-reader logic.** The hub hands each reader the raw entries (id, fields) that an
  XREAD of its own would have returned; `HubReader.read_entries` parses them with
  `StreamChunk.from_entry`, and `read_run` (reliability/run_tracker.py) applies the run tracker
  (newest attempt only, repeats, gaps) and the idle timeout exactly as for a lone reader. The SSE
  readers of one run from one cursor share one such read, and its encoded events (webapp/shared_runs.py).
- **Old cursors catch up, then join.** A reader whose cursor is behind the hub's position on that
  stream reads the entries in between with XRANGE, then takes the shared tail: no gap, no repeat.
- **Bounded memory.** Each reader has a buffer of BUFFER_ENTRIES. A reader that falls that far
  behind (a slow client) is cut off with `ReaderTooSlowError`: its client resumes from the last id
  it received (Last-Event-ID) and loses nothing, and the hub never grows without bound.
- **Redis outages** are ridden out by the hub (retry with backoff from the same positions); a reader
  that hears nothing for its idle timeout ends as before, with `RedisUnreachableError` when Redis
  was down all that time.

Seen at work: tests/webapp/test_stream_hub.py; measured: docs/benchmarks.md, the fan-out section.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from redis_stream_response_handler import START_OF_STREAM, StreamChunk, StreamIdleTimeoutError, stream_key
from support.redis_connection import AsyncRedis
from support.redis_quirks import raise_if_cancel_was_swallowed, socket_timeout_outlasting
from support.redis_reads import RedisUnreachableError
from support.validation import entry_id_order, validate_cursor

logger = logging.getLogger(__name__)

Entry = tuple[str, Mapping[str, str]]  # (entry id, fields), as XREAD returns them

BUFFER_ENTRIES = 2_000  # per reader: a slow reader is cut off past this; about 200 s of tokens at 100 ms each
BLOCK_SECONDS = 5.0  # one XREAD's block; streams joining or leaving wake it at once, so this only bounds a wait
POLL_SECONDS = 0.02  # Redis Cluster: how often the pipelined read runs while nothing arrives
READ_COUNT = 500  # entries per stream per read
CATCH_UP_READS = 4  # XRANGEs of readers catching up, at once: what the hub's spare connections serve
HUB_CONNECTIONS = CATCH_UP_READS + 2  # + the blocked XREAD + the wake-up XADD
HUB_CLIENT_NAME = "agent-stream-hub"
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 0.1, 1.0
RETRIED = (RedisConnectionError, RedisTimeoutError, OSError)


class ReaderTooSlowError(Exception):
    """The reader fell BUFFER_ENTRIES behind its stream; it resumes from the last entry it received."""


class ServerStoppingError(Exception):
    """The web process is stopping; the reader resumes (from the last entry it received) on another one."""


@dataclass(eq=False)
class Subscription:
    """One reader's place in the hub: a bounded buffer the hub fills and the reader drains, in order.

    `backlog_until`: the hub's position on the stream when the reader joined, if the reader's cursor
    was behind it; the reader first reads (cursor, backlog_until] itself, then the buffer.
    """

    key: str
    cursor: str  # the last entry handed to the reader
    backlog_until: str | None = None
    ended: Exception | None = None
    _buffer: deque[Entry] = field(default_factory=deque)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, entries: Sequence[Entry]) -> None:
        if self.ended is not None:
            return
        if len(self._buffer) + len(entries) > BUFFER_ENTRIES:
            self._buffer.clear()  # what it never took is dropped: it resumes from its cursor
            self.end(ReaderTooSlowError(f"the reader fell {BUFFER_ENTRIES} entries behind its stream"))
            return
        self._buffer.extend(entries)
        self._arrived.set()

    def end(self, error: Exception) -> None:
        """Stop this reader: its next wait raises `error` (once the entries already buffered are taken)."""
        if self.ended is None:
            self.ended = error
            self._arrived.set()

    async def next_entries(self, idle_seconds: float) -> list[Entry]:
        """The entries buffered since the last call, waiting up to `idle_seconds` (TimeoutError) for one."""
        if not self._buffer and self.ended is None:
            self._arrived.clear()
            async with asyncio.timeout(idle_seconds):
                await self._arrived.wait()
        if self.ended is not None and (isinstance(self.ended, ReaderTooSlowError) or not self._buffer):
            raise self.ended
        entries = list(self._buffer)
        self._buffer.clear()
        return entries


@dataclass(eq=False)
class _Stream:
    """A stream the hub reads: from where, and for whom."""

    position: str  # the newest entry the hub delivered (or where its first reader's cursor was)
    readers: set[Subscription] = field(default_factory=set)


class StreamHub:
    """Reads every stream with live readers on a few connections, and fans the entries out to them.

    Use as an async context manager (it runs the read loop in a task) on the loop that serves the
    readers. `redis` is the hub's own client; its pool must allow HUB_CONNECTIONS.
    """

    def __init__(self, redis: AsyncRedis, idle_timeout_seconds: float) -> None:
        self.redis, self.idle_timeout_seconds = redis, idle_timeout_seconds
        self.streams: dict[str, _Stream] = {}
        self.outage_began: float | None = None  # monotonic time of the first failed read of an outage
        self.stopping: ServerStoppingError | None = None
        self._changed = asyncio.Event()  # a stream joined or left: the next read must include or drop it
        self._reading: Mapping[str, str] = {}  # the positions the XREAD in flight asked for
        self._catch_up = asyncio.Semaphore(CATCH_UP_READS)
        self._wake_key = f"agent-stream-hub:{{{uuid.uuid4().hex}}}"  # this hub's wake-up stream (never a reader's)
        self._wake_position = START_OF_STREAM
        self._wake_sent = False
        self._wakes: set[asyncio.Task[None]] = set()  # held until done (the loop keeps only weak references)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamHub:
        loop = self._poll_cluster if isinstance(self.redis, RedisCluster) else self._block_on_one_node
        self._task = asyncio.create_task(loop(), name="stream-hub")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop(ServerStoppingError("the server is stopping"))
        for task in [self._task, *self._wakes]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *RETRIED):
                    await task
        with contextlib.suppress(*RETRIED):
            await self.redis.delete(self._wake_key)
        await self.redis.aclose()

    @property
    def readers(self) -> int:
        return sum(len(stream.readers) for stream in self.streams.values())

    def subscribe(self, key: str, cursor: str) -> Subscription:
        """Join the readers of `key` after `cursor`: entries arrive in the subscription's buffer."""
        reader = Subscription(key, cursor)
        if self.stopping is not None:
            reader.end(self.stopping)
            return reader
        stream = self.streams.get(key)
        if stream is None:  # the first reader: the hub starts reading at its cursor
            self.streams[key] = stream = _Stream(position=cursor)
            self._wake()
        elif entry_id_order(cursor) < entry_id_order(stream.position):
            reader.backlog_until = stream.position  # what the hub delivered before this reader came
        stream.readers.add(reader)
        return reader

    def unsubscribe(self, reader: Subscription) -> None:
        stream = self.streams.get(reader.key)
        if stream is None:
            return
        stream.readers.discard(reader)
        if not stream.readers:  # nobody reads it: the hub's next XREAD leaves it out
            del self.streams[reader.key]
            self._wake()

    def stop(self, error: ServerStoppingError) -> None:
        """End every reader with `error` (the web process is stopping); later readers get it at once."""
        self.stopping = error
        for stream in self.streams.values():
            for reader in stream.readers:
                reader.end(error)

    async def backlog(self, reader: Subscription) -> list[Entry]:
        """The next page of the entries between the reader's cursor and where the hub was when it joined."""
        assert reader.backlog_until is not None
        async with self._catch_up:  # bounded: the hub's pool has a few spare connections, not one per reader
            page = await self.redis.xrange(
                reader.key, min=f"({reader.cursor}", max=reader.backlog_until, count=READ_COUNT
            )
        entries = [(str(entry_id), fields) for entry_id, fields in page]
        if len(entries) < READ_COUNT or entries[-1][0] == reader.backlog_until:
            reader.backlog_until = None  # caught up: the buffer holds what followed
        return entries

    def _wake(self) -> None:
        """Make the XREAD in flight return, so the next one reads the new set of streams (at most one per read)."""
        if self._wake_sent or self.stopping is not None or isinstance(self.redis, RedisCluster):
            self._changed.set()
            return
        self._wake_sent = True
        self._changed.set()
        task = asyncio.get_running_loop().create_task(self._send_wake())
        self._wakes.add(task)
        task.add_done_callback(self._woken)

    def _woken(self, task: asyncio.Task[None]) -> None:
        self._wakes.discard(task)
        if not task.cancelled() and task.exception() is not None:  # Redis is down: the read loop retries anyway
            self._wake_sent = False

    async def _send_wake(self) -> None:
        await self.redis.xadd(self._wake_key, {"wake": "1"}, maxlen=1, approximate=False)
        await self.redis.expire(self._wake_key, int(BLOCK_SECONDS * 10))

    async def _block_on_one_node(self) -> None:
        """One Redis: a single XREAD BLOCK over every stream with readers, and the wake-up key."""
        while True:
            await self._until_streams()
            self._changed.clear()
            self._wake_sent = False
            asking = {key: stream.position for key, stream in self.streams.items()}
            reply = await self._read(asking | {self._wake_key: self._wake_position}, block=True)
            for key, entries in reply:
                if key == self._wake_key:
                    self._wake_position = entries[-1][0]
                else:
                    self._fan_out(key, asking[key], entries)

    async def _poll_cluster(self) -> None:
        """Redis Cluster: every stream with readers in one non-blocking pipeline, grouped by node by redis-py."""
        while True:
            await self._until_streams()
            asking = {key: stream.position for key, stream in self.streams.items()}
            reply = await self._read(asking, block=False)
            for key, entries in reply:
                self._fan_out(key, asking[key], entries)
            if not reply:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):  # a new stream is read at once, not after the poll
                    await asyncio.wait_for(self._changed.wait(), POLL_SECONDS)

    async def _until_streams(self) -> None:
        """Wait (reading nothing) while no stream has a reader."""
        while not self.streams:
            self._changed.clear()
            await self._changed.wait()

    async def _read(self, asking: Mapping[str, str], *, block: bool) -> list[tuple[str, list[Entry]]]:
        """[(key, entries)] after the positions in `asking`; retries a failed read (an outage) from the same ones."""
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                reply = await (self._xread_blocking(asking) if block else self._xread_pipelined(asking))
            except RETRIED as error:
                self._note_outage(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            raise_if_cancel_was_swallowed()  # support/redis_quirks.py, workaround 1: stopping the hub must stop it
            self._note_answer()
            return reply

    async def _xread_blocking(self, asking: Mapping[str, str]) -> list[tuple[str, list[Entry]]]:
        reply: Any = await self.redis.xread(dict(asking), block=int(BLOCK_SECONDS * 1000), count=READ_COUNT)
        return [(str(key), [(str(i), fields) for i, fields in entries]) for key, entries in reply or []]

    async def _xread_pipelined(self, asking: Mapping[str, str]) -> list[tuple[str, list[Entry]]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, position in asking.items():
                pipe.xread({key: position}, count=READ_COUNT)
            replies: list[Any] = await pipe.execute()
        answered = zip(asking, replies, strict=True)
        return [(key, [(str(i), fields) for i, fields in reply[0][1]]) for key, reply in answered if reply]

    def _fan_out(self, key: str, asked_from: str, entries: list[Entry]) -> None:
        """Hand `entries` to every reader of `key`, if the hub still reads it from where this read asked."""
        stream = self.streams.get(key)
        # A stream that left (and maybe came back at another cursor) while the read was in flight: read it again.
        if stream is None or stream.position != asked_from or not entries:
            return
        stream.position = entries[-1][0]
        for reader in stream.readers:
            reader.deliver(entries)

    def _note_outage(self, error: Exception) -> None:
        if self.outage_began is None:
            self.outage_began = time.monotonic()
            logger.warning("the stream hub's Redis read failed (%s); retrying from the same positions", error)

    def _note_answer(self) -> None:
        if self.outage_began is not None:
            logger.warning("the stream hub's Redis reads resumed after %.1fs", time.monotonic() - self.outage_began)
            self.outage_began = None


class HubReader:
    """`read_run`'s entry source for the web app: the hub's entries, parsed and timed as a lone reader's would be.

    Has what reliability/run_tracker.py's `EntrySource` asks for, so SSE and AG-UI keep the same
    run logic (newest attempt only, repeats, gaps, the idle timeout) as client.py.
    """

    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub

    @property
    def redis(self) -> AsyncRedis:
        return self.hub.redis

    @property
    def idle_timeout_seconds(self) -> float:
        return self.hub.idle_timeout_seconds

    async def read_entries(self, session_key: str, cursor: str | None = None) -> AsyncGenerator[StreamChunk]:
        """Every entry after `cursor`, as it arrives, until nothing arrives for the idle timeout (as the handler's)."""
        cursor = validate_cursor(cursor) if cursor is not None else START_OF_STREAM
        reader = self.hub.subscribe(stream_key(session_key), cursor)
        try:
            while True:
                for entry_id, fields in await self._next(reader):
                    reader.cursor = entry_id
                    yield StreamChunk.from_entry(entry_id, fields)
        finally:
            self.hub.unsubscribe(reader)

    async def _next(self, reader: Subscription) -> list[Entry]:
        if reader.backlog_until is not None:
            return await self.hub.backlog(reader)
        try:
            entries = await reader.next_entries(self.idle_timeout_seconds)
        except TimeoutError:
            outage = self.hub.outage_began
            if outage is not None and time.monotonic() - outage >= self.idle_timeout_seconds:
                silence = f"{self.idle_timeout_seconds:g}s, the idle timeout"
                raise RedisUnreachableError(f"no answer from Redis for {silence}") from None
            raise StreamIdleTimeoutError(reader.cursor) from None
        # Entries the reader already has (the hub started below its cursor): an XREAD after it never returns them.
        newer = entry_id_order(reader.cursor)
        if not entries or entry_id_order(entries[0][0]) > newer:  # the usual case, checked once: entries come in order
            return entries
        return [entry for entry in entries if entry_id_order(entry[0]) > newer]


def hub_client_options() -> dict[str, Any]:
    """The hub client's options: a few connections; a socket timeout that outlasts a block (redis_quirks.py)."""
    return {
        "decode_responses": True,
        "socket_connect_timeout": 5,
        "socket_timeout": socket_timeout_outlasting(BLOCK_SECONDS),
        "max_connections": HUB_CONNECTIONS,
        "client_name": HUB_CLIENT_NAME,  # CLIENT LIST shows which connections are the hub's
    }
