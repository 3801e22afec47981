"""Experiment (not part of the main run): what one flush per event-loop turn for ALL runs would save.

Today every RunStreamWriter has its own flusher, so at LLM pace each of K
concurrent runs sends its own MULTI/EXEC (XADD + EXPIRE) round trip per token:
K × 50 round trips per second, and the worker's CPU goes into redis-py's
per-pipeline overhead. This compares, for K sessions × N tokens at 20 ms/token
written from one process, the writer's CPU time per token of:

- per-run flushers: RunStreamWriter as it is;
- one coalescing flusher: every run's pending entries go into ONE MULTI/EXEC
  pipeline per wake-up (XADD × n per stream, one EXPIRE per touched stream).

    uv run python -m benchmarks.experiment_coalesced_flush [sessions] [tokens]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable

from benchmarks.common import new_key
from local_services import PrivateRedisServer, free_port
from redis_stream_response_handler import TOKEN, RedisStreamResponseHandler, entry_fields, stream_key
from run_stream_writer import RunStreamWriter

PACE_SECONDS = 0.020
RUN_ID = "bench-run"


class CoalescingFlusher:
    """One task that writes every run's pending entries in one MULTI/EXEC per wake-up."""

    def __init__(self, handler: RedisStreamResponseHandler) -> None:
        self.handler = handler
        self.pending: dict[str, list[dict[str, str]]] = {}
        self.round_trips = 0
        self._wakeup = asyncio.Event()
        self._closing = False

    def append(self, conversation_id: str, fields: dict[str, str]) -> None:
        self.pending.setdefault(conversation_id, []).append(fields)
        self._wakeup.set()

    async def run(self) -> None:
        while not (self._closing and not self.pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self.pending = self.pending, {}
            if batch:
                await self._write(batch)

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    async def _write(self, batch: dict[str, list[dict[str, str]]]) -> None:
        async with self.handler.redis.pipeline(transaction=True) as pipe:
            for conversation_id, entries in batch.items():
                key = stream_key(conversation_id)
                for fields in entries:
                    pipe.xadd(key, fields, maxlen=self.handler.max_length, approximate=True)  # type: ignore[arg-type]
                pipe.expire(key, self.handler.ttl_seconds)
            await pipe.execute()
        self.round_trips += 1


async def per_run_flushers(handler: RedisStreamResponseHandler, sessions: int, tokens: int) -> int:
    async def one() -> None:
        await asyncio.sleep(random.uniform(0, PACE_SECONDS))
        writer = RunStreamWriter(handler, new_key("exp"), RUN_ID)
        writer.start()
        for n in range(tokens):
            writer.append_token(f"w{n} ")
            await asyncio.sleep(PACE_SECONDS)
        await writer.finish()

    await asyncio.gather(*(one() for _ in range(sessions)))
    return sessions * (tokens + 2)  # at least one round trip per token at this pace


async def coalescing_flusher(handler: RedisStreamResponseHandler, sessions: int, tokens: int) -> int:
    flusher = CoalescingFlusher(handler)
    task = asyncio.get_running_loop().create_task(flusher.run())

    async def one() -> None:
        await asyncio.sleep(random.uniform(0, PACE_SECONDS))
        key = new_key("exp")
        for n in range(tokens):
            flusher.append(key, entry_fields(TOKEN, RUN_ID, n, f"w{n} "))
            await asyncio.sleep(PACE_SECONDS)

    await asyncio.gather(*(one() for _ in range(sessions)))
    await flusher.close()
    await task
    return flusher.round_trips


async def compare(url: str, sessions: int, tokens: int) -> None:
    runs: dict[str, Callable[[RedisStreamResponseHandler, int, int], Awaitable[int]]] = {
        "per-run flushers (RunStreamWriter today)": per_run_flushers,
        "one coalescing flusher": coalescing_flusher,
    }
    for label, run in runs.items():
        handler = RedisStreamResponseHandler.from_url(url)
        await handler.redis.ping()
        cpu, wall = time.process_time(), time.perf_counter()
        round_trips = await run(handler, sessions, tokens)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await handler.aclose()
        per_token_us = cpu / (sessions * tokens) * 1e6
        print(
            f"{label:42} {sessions} sessions × {tokens} tokens: wall {wall:.2f} s (paced minimum "
            f"{tokens * PACE_SECONDS:.2f} s), writer CPU {cpu:.2f} s = {per_token_us:.0f} µs/token, "
            f"{round_trips} round trips"
        )


def main() -> None:
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with PrivateRedisServer(free_port()) as server:
        asyncio.run(compare(server.url, sessions, tokens))


if __name__ == "__main__":
    main()
