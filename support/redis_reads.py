"""A blocking read that survives a dropped connection: XREAD again from the same cursor.

A dropped connection is not the end of the answer: the stream is still in Redis, so the reader
asks again from the cursor it holds (no gap, no repeat), backing off between attempts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from support.redis_connection import AsyncRedis
from support.redis_quirks import raise_if_cancel_was_swallowed

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 5


async def xread_reconnecting(redis: AsyncRedis, key: str, cursor: str, block_ms: int) -> Any:
    """XREAD BLOCK `block_ms` from `cursor`, reconnecting after a dropped connection (READ_ATTEMPTS in all)."""
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            response = await redis.xread({key: cursor}, block=block_ms, count=500)
            raise_if_cancel_was_swallowed()  # support/redis_quirks.py, workaround 1
            return response
        except (RedisConnectionError, RedisTimeoutError) as error:
            if attempt == READ_ATTEMPTS:
                raise
            logger.warning("Redis read failed (%s); reconnecting from cursor %s", error, cursor)
            await asyncio.sleep(0.1 * 2**attempt)
