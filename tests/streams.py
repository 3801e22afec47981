"""Writing raw entries for tests through the handler's one write primitive (`write_streams`), and waiting for them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis_stream_response_handler import DONE, TOKEN, RedisStreamResponseHandler, entry_fields, stream_key


async def all_entries(handler: RedisStreamResponseHandler, session_key: str) -> list[dict[str, str]]:
    """Every entry of the session's stream, oldest first: what a reader from the start would get, raw."""
    entries: list[tuple[str, dict[str, str]]] = await handler.redis.xrange(stream_key(session_key))  # type: ignore[assignment]
    return [fields for _, fields in entries]


async def write_entries(
    handler: RedisStreamResponseHandler, session_key: str, entries: Sequence[dict[str, str]]
) -> list[str]:
    return await handler.write_streams([(session_key, entries)], expire={session_key})


async def write_chunk(handler: RedisStreamResponseHandler, session_key: str, text: str, sequence: int, run: str) -> str:
    return (await write_entries(handler, session_key, [entry_fields(TOKEN, run, sequence, text)]))[0]


async def write_completion(handler: RedisStreamResponseHandler, session_key: str, sequence: int, run: str) -> str:
    return (await write_entries(handler, session_key, [entry_fields(DONE, run, sequence, chunks=sequence)]))[0]


async def until_written(handler: RedisStreamResponseHandler, session_key: str, count: int) -> None:
    """Block (XREAD) until the session's stream holds `count` entries: written by the flusher, not just queued."""
    cursor, seen = "0-0", 0
    async with asyncio.timeout(10):
        while seen < count:
            reply: Any = await handler.redis.xread({stream_key(session_key): cursor}, block=1000)
            for entry_id, _ in reply[0][1] if reply else []:
                cursor, seen = str(entry_id), seen + 1
