"""Delivery latency: from the moment a token is produced to the moment a reader yields it.

Each entry carries a `timestamp` field: the moment the token was produced, in
this process (RunStreamWriter stamps it in `append_token`, so its write-behind
buffering counts; the naive and bare writers stamp it with the moment the
token was produced too, which for a burst is the burst's arrival, so their
one-round-trip-per-token back-pressure counts as well). The reader subtracts it
from `time.time()` when it yields the chunk. Three pairs are compared:

- ours:     RunStreamWriter (write-behind, one shared flusher) + reliability.run_tracker.read_run
- naive:    connection-per-chunk writer + reader polling XREAD once a second
- bare:     one connection XADD per token + a bare XREAD BLOCK loop (the limit)

at two paces: LLM (one token every 20 ms) and bursty (bursts of tokens, then a 300 ms pause).

    uv run python -m benchmarks --quick     # runs this among the others
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchmarks.common import Mode, RedisTarget, Row, new_key, summarize_ms
from benchmarks.naive_pattern import ConnectionPerChunkWriter, polling_read
from redis_stream_response_handler import DONE, TOKEN, StreamChunk, entry_fields, stream_key
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher

RUN_ID = "bench-run"
LLM_PAUSE_SECONDS = 0.020
BURST_PAUSE_SECONDS = 0.300

Emit = Callable[[int, float], Awaitable[None]]


def llm_pauses(tokens: int) -> list[float]:
    return [LLM_PAUSE_SECONDS] * tokens


def bursty_pauses(burst_size: int, bursts: int) -> list[float]:
    """No pause inside a burst, 300 ms after each one."""
    return [BURST_PAUSE_SECONDS if (n + 1) % burst_size == 0 else 0.0 for n in range(burst_size * bursts)]


async def collect_latencies(chunks: AsyncIterator[StreamChunk]) -> list[float]:
    """Seconds from each token's timestamp to the moment the reader yielded it."""
    latencies: list[float] = []
    async for chunk in chunks:
        if chunk.kind == TOKEN:
            latencies.append(time.time() - chunk.timestamp)
    return latencies


async def paced(pauses: list[float], emit: Emit) -> None:
    """Call emit(n, produced_at) per token; tokens after a zero pause share their burst's arrival time."""
    produced_at = time.time()
    for n, pause in enumerate(pauses):
        await emit(n, produced_at)
        if pause:
            await asyncio.sleep(pause)
            produced_at = time.time()


def stamped(n: int, produced_at: float) -> dict[str, str]:
    """A token entry whose timestamp is when the token was produced, not when it is written."""
    return {**entry_fields(TOKEN, RUN_ID, n, f"w{n} "), "timestamp": f"{produced_at:.6f}"}


async def run_pair(chunks: AsyncIterator[StreamChunk], write_all: Callable[[], Awaitable[None]]) -> list[float]:
    """Start the reader first (parked on the empty stream), then write, then wait for the reader."""
    reader = asyncio.ensure_future(collect_latencies(chunks))
    await asyncio.sleep(0.05)
    await write_all()
    return await asyncio.wait_for(reader, timeout=60)


async def ours(target: RedisTarget, pauses: list[float]) -> list[float]:
    writer_side, reader_side = target.handler(), target.handler(idle_timeout_seconds=30)
    key = new_key("latency-ours")

    async def write_all() -> None:
        writer = RunStreamWriter(StreamFlusher(writer_side), key, RUN_ID)
        writer.start()

        async def emit(n: int, _produced_at: float) -> None:
            writer.append_token(f"w{n} ")  # stamps the entry itself

        await paced(pauses, emit)
        await writer.finish()

    try:
        return await run_pair(read_run(reader_side, key, "0-0", correlation_id=RUN_ID), write_all)
    finally:
        await writer_side.aclose()
        await reader_side.aclose()


async def naive(target: RedisTarget, pauses: list[float]) -> list[float]:
    writer = ConnectionPerChunkWriter(target.url, ca_file=target.ca_file)
    reader_client = target.client()
    key = new_key("latency-naive")

    async def write_all() -> None:
        async def emit(n: int, produced_at: float) -> None:
            await writer.write(key, stamped(n, produced_at))

        await paced(pauses, emit)
        await writer.write(key, entry_fields(DONE, RUN_ID, len(pauses)))

    try:
        return await run_pair(polling_read(reader_client, key), write_all)
    finally:
        await reader_client.aclose()


async def bare_block_read(target: RedisTarget, conversation_id: str) -> AsyncIterator[StreamChunk]:
    client, key, cursor = target.client(), stream_key(conversation_id), "0-0"
    try:
        while True:
            response: Any = await client.xread({key: cursor}, block=30_000, count=500)
            for entry_id, fields in response[0][1]:
                cursor = str(entry_id)
                chunk = StreamChunk.from_entry(cursor, fields)
                yield chunk
                if chunk.kind == DONE:
                    return
    finally:
        await client.aclose()


async def bare(target: RedisTarget, pauses: list[float]) -> list[float]:
    client, key = target.client(), new_key("latency-bare")

    async def write_all() -> None:
        async def emit(n: int, produced_at: float) -> None:
            await client.xadd(stream_key(key), stamped(n, produced_at))  # type: ignore[arg-type]

        await paced(pauses, emit)
        await client.xadd(stream_key(key), entry_fields(DONE, RUN_ID, len(pauses)))  # type: ignore[arg-type]

    try:
        return await run_pair(bare_block_read(target, key), write_all)
    finally:
        await client.aclose()


VARIANTS = {
    "ours: RunStreamWriter + read_run": ours,
    "naive: conn-per-chunk + 1 s polling": naive,
    "limit: bare XADD + XREAD BLOCK": bare,
}


async def measure(target: RedisTarget, mode: Mode) -> tuple[list[Row], dict[str, list[float]]]:
    """One row per (pace, variant); also the raw samples, for the plots."""
    paces = {
        f"LLM pace (20 ms, {mode.latency_tokens} tokens)": llm_pauses(mode.latency_tokens),
        f"bursty ({mode.bursts}x{mode.burst_size} tokens, 300 ms pauses)": bursty_pauses(mode.burst_size, mode.bursts),
    }
    rows: list[Row] = []
    raw: dict[str, list[float]] = {}
    for pace, pauses in paces.items():
        for variant, run in VARIANTS.items():
            latencies = await run(target, pauses)
            rows.append({"pace": pace, "variant": variant, **summarize_ms(latencies)})
            raw[f"{pace} | {variant}"] = latencies
    return rows, raw
