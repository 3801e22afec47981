"""A loopback TCP proxy in front of a real redis-server that makes chosen writes fail, at the wire.

Point a client at `proxy.url` instead of the server's own URL. Every command passes through
unchanged, except the pipelines that carry XADD or the worker's fenced-write script (EVAL):
"writes", numbered from 0 in the order they arrive over all connections. A write whose number
is in `faults` fails one of two ways:

- `REPLY_LOST`: the write reaches Redis and is applied; then the proxy cuts the connection before
  the reply gets back (a network drop at the worst moment). The client sees a connection error
  and cannot know its entries were written.
- `REFUSED`: the real server refuses it. The proxy sets the server's `maxmemory` to 1 byte just
  before forwarding the write, so every XADD gets Redis's own "-OOM command not allowed" error
  (what a full Redis answers), and lifts the limit again before the next write goes through.

Faults are chosen by count, not by time, so a test using this proxy does not depend on the
machine's speed; and nothing here answers in Redis's place.

    with PrivateRedisServer(port) as server, WireFaults(server.port, {3: REPLY_LOST}) as wire:
        ...  # a client on wire.url: its fourth write is applied, and its reply lost
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from typing import Literal

import redis.asyncio as aioredis

from support.ports import free_port

Fault = Literal["reply lost", "refused"]
REPLY_LOST: Fault = "reply lost"
REFUSED: Fault = "refused"


class WireFaults:
    """The proxy, served on its own thread and event loop while the `with` block lasts."""

    def __init__(self, redis_port: int, faults: dict[int, Fault]) -> None:
        self.redis_port = redis_port
        self.faults = dict(faults)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.writes = 0  # write pipelines seen so far
        self.injected: Counter[Fault] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wire-faults", daemon=True)
        self._server: asyncio.Server | None = None
        self._admin: aioredis.Redis | None = None
        self._memory_limited = False
        self._connections: set[asyncio.Task[None]] = set()

    def __enter__(self) -> WireFaults:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._admin = aioredis.Redis(port=self.redis_port)  # straight to the server, never through the proxy
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        assert self._server is not None and self._admin is not None
        self._server.close()
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(OSError, aioredis.RedisError):  # the server may be gone already
            await self._limit_memory(False)
        await self._admin.aclose()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        except OSError:  # the server is down: so is the proxy, to this client
            client_writer.close()
            self._connections.discard(task)
            return
        cut = asyncio.Event()  # set when the reply to a REPLY_LOST write must never reach the client
        pumps = [
            asyncio.ensure_future(self._to_redis(client_reader, server_writer, cut)),
            asyncio.ensure_future(self._to_client(server_reader, client_writer, cut)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)  # either side closed, or the cut
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
            self._connections.discard(task)

    async def _to_redis(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event) -> None:
        buffered = b""
        while data := await reader.read(65536):
            buffered += data
            complete, names = _whole_commands(buffered)  # forward whole commands only, so writes can be told apart
            commands, buffered = buffered[:complete], buffered[complete:]
            if not commands:
                continue
            if b"XADD" in names or b"EVAL" in names:  # the worker writes through a script (reliability/fencing.py)
                fault = self.faults.get(self.writes)
                self.writes += 1
                await self._limit_memory(fault == REFUSED)
                if fault is not None:
                    self.injected[fault] += 1
                if fault == REPLY_LOST:
                    cut.set()
            writer.write(commands)
            await writer.drain()

    async def _to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event) -> None:
        while data := await reader.read(65536):
            if cut.is_set():
                return  # Redis has applied the write and answered; the client never hears of it
            writer.write(data)
            await writer.drain()

    async def _limit_memory(self, limited: bool) -> None:
        if limited != self._memory_limited:
            assert self._admin is not None
            await self._admin.config_set("maxmemory", 1 if limited else 0)  # noeviction (the default): -OOM
            self._memory_limited = limited


def _whole_commands(buffer: bytes) -> tuple[int, list[bytes]]:
    """How many leading bytes of `buffer` are whole RESP commands, and those commands' names (upper case)."""
    position, names = 0, []
    while (parsed := _one_command(buffer, position)) is not None:
        position, name = parsed
        names.append(name.upper())
    return position, names


def _one_command(buffer: bytes, start: int) -> tuple[int, bytes] | None:
    """(end, name) of the command at `start`, or None if it is not all there yet.

    A client sends a command as an array of bulk strings: `*<n>\\r\\n`, then n times `$<len>\\r\\n<bytes>\\r\\n`.
    """
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    if buffer[start : start + 1] != b"*":
        raise ValueError(f"not a RESP command: {buffer[start : start + 20]!r}")
    position, name = line_end + 2, b""
    for index in range(int(buffer[start + 1 : line_end])):
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        end = line_end + 2 + int(buffer[position + 1 : line_end]) + 2
        if end > len(buffer):
            return None
        if index == 0:
            name = buffer[line_end + 2 : end - 2]
        position = end
    return position, name
