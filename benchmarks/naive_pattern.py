"""The naive baseline the pattern is measured against (written from its description, not copied).

- `ConnectionPerChunkWriter`: opens a NEW Redis connection for every token and
  sends XADD and EXPIRE as two separate round trips, then closes it.
- `polling_read`: non-blocking XREAD; whenever the stream has nothing new it
  sleeps one second before asking again.

Not run by itself: `delivery_latency` and `write_throughput` use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from redis_stream_response_handler import MARKERS_THAT_END_A_RUN, START_OF_STREAM, StreamChunk, stream_key

POLL_INTERVAL_SECONDS = 1.0


class ConnectionPerChunkWriter:
    """One fresh connection per chunk; XADD and EXPIRE as two round trips."""

    def __init__(self, url: str, *, ttl_seconds: int = 600, ca_file: str | None = None) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.client_options: dict[str, Any] = {"ssl_ca_certs": ca_file} if ca_file else {}

    async def write(self, conversation_id: str, fields: dict[str, str]) -> str:
        key = stream_key(conversation_id)
        client = aioredis.Redis.from_url(self.url, decode_responses=True, **self.client_options)
        try:
            entry_id = await client.xadd(key, fields)  # type: ignore[arg-type]
            await client.expire(key, self.ttl_seconds)
            return str(entry_id)
        finally:
            await client.aclose()


async def polling_read(
    client: aioredis.Redis, conversation_id: str, cursor: str = START_OF_STREAM
) -> AsyncIterator[StreamChunk]:
    """Yield every entry after `cursor` until a done/error marker, polling once a second when idle."""
    key = stream_key(conversation_id)
    while True:
        response: Any = await client.xread({key: cursor}, count=500)  # no BLOCK: returns at once
        if not response:
            await asyncio.sleep(POLL_INTERVAL_SECONDS)
            continue
        for entry_id, fields in response[0][1]:
            cursor = str(entry_id)
            chunk = StreamChunk.from_entry(cursor, fields)
            yield chunk
            if chunk.kind in MARKERS_THAT_END_A_RUN:
                return
