"""Write throughput: chunks per second persisted to a Redis Stream with no pacing at all.

Variants, each on a fresh stream, repeated and reported as the median run:

- ours, append all then finish: `RunStreamWriter.append_token` N times, then
  `await finish()`; timed until finish returns (every entry is in Redis).
- ours, yield per token: the same, but `await asyncio.sleep(0)` after each token,
  the way a model stream that does I/O hands the loop back; the flusher then
  writes many small batches.
- naive: a new connection per chunk, XADD and EXPIRE as two round trips.
- bare: one pooled connection, one XADD round trip per chunk.
- ceiling: pipelined XADD batches of 100 on one connection.

Run against plaintext loopback and, when redis-server supports it, TLS on loopback.

    uv run python -m benchmarks --quick     # runs this among the others
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from benchmarks.common import Mode, RedisTarget, Row, new_key
from benchmarks.naive_pattern import ConnectionPerChunkWriter
from redis_stream_response_handler import TOKEN, entry_fields, stream_key
from reliability.write_behind import RunStreamWriter, StreamFlusher

RUN_ID = "bench-run"
BATCH = 100

Variant = Callable[[RedisTarget, int], Awaitable[float]]


async def ours_append_then_finish(target: RedisTarget, count: int) -> float:
    return await _ours(target, count, yield_per_token=False)


async def ours_yield_per_token(target: RedisTarget, count: int) -> float:
    return await _ours(target, count, yield_per_token=True)


async def _ours(target: RedisTarget, count: int, *, yield_per_token: bool) -> float:
    handler = target.handler(max_length=count + 100)
    key = new_key("throughput-ours")
    await handler.redis.ping()  # connect before the clock starts, as a worker's client already is
    try:
        started = time.perf_counter()
        writer = RunStreamWriter(StreamFlusher(handler), key, RUN_ID)
        writer.start()
        for n in range(count):
            writer.append_token(f"w{n} ")
            if yield_per_token:
                await asyncio.sleep(0)
        await writer.finish()
        elapsed = time.perf_counter() - started
        await _check_length(handler.redis, key, count + 2)  # + start and done markers
        return elapsed
    finally:
        await handler.aclose()


async def naive_connection_per_chunk(target: RedisTarget, count: int) -> float:
    writer, key = ConnectionPerChunkWriter(target.url, ca_file=target.ca_file), new_key("throughput-naive")
    started = time.perf_counter()
    for n in range(count):
        await writer.write(key, entry_fields(TOKEN, RUN_ID, n, f"w{n} "))
    return time.perf_counter() - started


async def bare_round_trip(target: RedisTarget, count: int) -> float:
    client, key = target.client(), stream_key(new_key("throughput-bare"))
    await client.ping()
    try:
        started = time.perf_counter()
        for n in range(count):
            await client.xadd(key, entry_fields(TOKEN, RUN_ID, n, f"w{n} "))  # type: ignore[arg-type]
        return time.perf_counter() - started
    finally:
        await client.aclose()


async def pipelined_batches(target: RedisTarget, count: int) -> float:
    client, key = target.client(), stream_key(new_key("throughput-pipelined"))
    await client.ping()
    try:
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + BATCH, count)):
                    pipe.xadd(key, entry_fields(TOKEN, RUN_ID, n, f"w{n} "))  # type: ignore[arg-type]
                await pipe.execute()
        return time.perf_counter() - started
    finally:
        await client.aclose()


async def _check_length(client: object, key: str, expected: int) -> None:
    from redis.asyncio import Redis

    assert isinstance(client, Redis)
    length = await client.xlen(stream_key(key))
    if length != expected:
        raise AssertionError(f"{key}: {length} entries in Redis, expected {expected}")


OURS_BATCHED = "ours: RunStreamWriter, append all then finish"
OURS_YIELDING = "ours: RunStreamWriter, yield to loop per token"
NAIVE = "naive: new connection per chunk, XADD + EXPIRE"
BARE = "bare: one connection, XADD round trip per chunk"
CEILING = "ceiling: pipelined XADD batches of 100"


def variants(mode: Mode, target: RedisTarget) -> dict[str, tuple[Variant, int]]:
    """Each variant with the number of chunks it writes per repetition (the slow ones write fewer)."""
    naive_chunks = mode.slow_writes // 4 if target.ca_file else mode.slow_writes  # a TLS handshake per chunk
    return {
        OURS_BATCHED: (ours_append_then_finish, mode.fast_writes),
        OURS_YIELDING: (ours_yield_per_token, mode.fast_writes),
        NAIVE: (naive_connection_per_chunk, naive_chunks),
        BARE: (bare_round_trip, mode.slow_writes * 5),
        CEILING: (pipelined_batches, mode.fast_writes),
    }


async def measure(target: RedisTarget, mode: Mode) -> list[Row]:
    rows: list[Row] = []
    for variant, (run, count) in variants(mode, target).items():
        rates = [count / await run(target, count) for _ in range(mode.write_repetitions)]
        rows.append(
            {
                "transport": target.label,
                "variant": variant,
                "chunks": count,
                "repetitions": len(rates),
                "median_chunks_per_s": round(statistics.median(rates)),
                "min_chunks_per_s": round(min(rates)),
                "max_chunks_per_s": round(max(rates)),
            }
        )
    naive_rate = next(row["median_chunks_per_s"] for row in rows if row["variant"] == NAIVE)
    for row in rows:
        row["x_naive"] = round(row["median_chunks_per_s"] / naive_rate, 1)
    return rows
