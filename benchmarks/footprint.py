"""Redis footprint: bytes per entry and per finished stream, and what bounds a stream.

Streams are written with RunStreamWriter (tokens of 3-6 characters, like the
demo model's words) and measured with MEMORY USAGE key SAMPLES 0 (exact).
Then two bounds are checked: MAXLEN ~ caps the entry count (a 5,000-token run
against max_length=1,000), and the TTL removes a finished stream (ttl_seconds=1).

    uv run python -m benchmarks --quick     # runs this among the others
"""

from __future__ import annotations

import asyncio

from benchmarks.common import RedisTarget, Row, memory_usage, new_key
from redis_stream_response_handler import RedisStreamResponseHandler, stream_key
from reliability.write_behind import RunStreamWriter, StreamFlusher

RUN_ID = "0f8c5a8e-6d1b-4f0e-9d55-2b7c3e9a41d7"  # the shape of a real correlation id (a UUID)


async def write_run(handler: RedisStreamResponseHandler, tokens: int) -> str:
    key = new_key("footprint")
    writer = RunStreamWriter(StreamFlusher(handler), key, RUN_ID)
    writer.start()
    for n in range(tokens):
        writer.append_token(f"w{n % 1000} ")
        if n % 50 == 0:
            await asyncio.sleep(0)  # several batches, like a real run
    await writer.finish()
    return key


async def size_row(target: RedisTarget, tokens: int) -> Row:
    handler = target.handler()
    try:
        key = await write_run(handler, tokens)
        entries = int(await handler.redis.xlen(stream_key(key)))
        ttl = int(await handler.redis.ttl(stream_key(key)))
    finally:
        await handler.aclose()
    usage = memory_usage(target.url, stream_key(key))
    return {
        "check": f"finished stream of {tokens} tokens",
        "entries": entries,
        "memory_usage_bytes": usage,
        "bytes_per_entry": round(usage / entries, 1),
        "ttl_s": ttl,
    }


async def maxlen_row(target: RedisTarget, tokens: int = 5_000, max_length: int = 1_000) -> Row:
    handler = target.handler(max_length=max_length)
    try:
        key = await write_run(handler, tokens)
        entries = int(await handler.redis.xlen(stream_key(key)))
    finally:
        await handler.aclose()
    usage = memory_usage(target.url, stream_key(key))
    return {
        "check": f"MAXLEN ~{max_length}: {tokens} tokens written",
        "entries": entries,
        "memory_usage_bytes": usage,
        "bytes_per_entry": round(usage / entries, 1),
        "bounded": max_length <= entries <= max_length + 100,  # '~' trims whole 100-entry nodes
    }


async def ttl_row(target: RedisTarget, ttl_seconds: int = 1) -> Row:
    handler = target.handler(ttl_seconds=ttl_seconds)
    try:
        key = await write_run(handler, 100)
        ttl_after_write = int(await handler.redis.pttl(stream_key(key)))
        await asyncio.sleep(ttl_seconds + 0.3)
        exists_after = bool(await handler.redis.exists(stream_key(key)))
    finally:
        await handler.aclose()
    return {
        "check": f"TTL {ttl_seconds} s: stream gone after {ttl_seconds + 0.3:g} s",
        "pttl_after_last_write_ms": ttl_after_write,
        "exists_after": exists_after,
        "bounded": not exists_after,
    }


async def measure(target: RedisTarget) -> list[Row]:
    rows = [await size_row(target, tokens) for tokens in (1, 100, 500, 10_000 - 2)]
    return [*rows, await maxlen_row(target), await ttl_row(target)]
