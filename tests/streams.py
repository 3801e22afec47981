"""Writing raw entries for tests, through the handler's one write primitive (`write_streams`)."""

from __future__ import annotations

from collections.abc import Sequence

from redis_stream_response_handler import DONE, TOKEN, RedisStreamResponseHandler, entry_fields


async def write_entries(
    handler: RedisStreamResponseHandler, session_key: str, entries: Sequence[dict[str, str]]
) -> list[str]:
    return await handler.write_streams([(session_key, entries)], expire={session_key})


async def write_chunk(handler: RedisStreamResponseHandler, session_key: str, text: str, sequence: int, run: str) -> str:
    return (await write_entries(handler, session_key, [entry_fields(TOKEN, run, sequence, text)]))[0]


async def write_completion(handler: RedisStreamResponseHandler, session_key: str, sequence: int, run: str) -> str:
    return (await write_entries(handler, session_key, [entry_fields(DONE, run, sequence, chunks=sequence)]))[0]
