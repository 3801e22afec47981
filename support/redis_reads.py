"""A blocking read that rides out a Redis outage: XREAD again from the same cursor, until Redis is silent too long.

A dropped connection, or a Redis that is down for a while (a restart, a failover), is not the
end of the answer: the stream is still in Redis, or is written again once Redis is back, so the
reader asks again from the cursor it holds (no gap, no repeat). It backs off between attempts
(0.1 s, doubling, capped at 1 s), and gives up only when Redis has not answered for the reader's
patience, counted from its last successful read. That patience is the idle timeout: a reader
then waits as long for a Redis that is down as for a worker that is silent, and never longer.

The outage is logged twice, once when it begins and once when reads resume, not once per attempt.
Nothing is held while the reader waits: a failed connection goes back to the pool, and the wait is
a plain `asyncio.sleep`, so Ctrl+C or a closed web request stops it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from support.redis_connection import AsyncRedis
from support.redis_quirks import raise_if_cancel_was_swallowed

logger = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 1.0
RETRIED = (RedisConnectionError, RedisTimeoutError)  # BusyLoadingError (a restart loading its data) is one too


class RedisUnreachableError(RedisConnectionError):
    """Redis did not answer a reader for its whole patience (the idle timeout)."""


class ReconnectingReads:
    """`XREAD BLOCK` on one stream, for one reader, riding out a Redis outage for up to `patience_seconds`.

    The block itself lasts `patience_seconds` too, so that an empty answer means "nothing arrived
    for the idle timeout" whether or not Redis went away in between.
    """

    def __init__(self, redis: AsyncRedis, key: str, patience_seconds: float) -> None:
        self.redis, self.key, self.patience_seconds = redis, key, patience_seconds
        self.block_ms = max(1, int(patience_seconds * 1000))
        self.last_answer = time.monotonic()  # the reader starts now: the first read gets the full patience
        self.outage_began: float | None = None
        self.failed_attempts = 0

    async def after(self, cursor: str) -> Any:
        """The entries after `cursor` (XREAD's reply; empty when none arrived for the patience)."""
        delay = FIRST_RETRY_SECONDS
        while True:
            asked = time.monotonic()
            try:
                response = await self.redis.xread({self.key: cursor}, block=self.block_ms, count=500)
            except RETRIED as error:
                await self._back_off(error, cursor, delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            raise_if_cancel_was_swallowed()  # support/redis_quirks.py, workaround 1
            self._answered(cursor, asked)
            return response

    async def _back_off(self, error: Exception, cursor: str, delay: float) -> None:
        now = time.monotonic()
        remaining = self.last_answer + self.patience_seconds - now
        if remaining <= 0:
            silence = f"{self.patience_seconds:g}s, the idle timeout"
            raise RedisUnreachableError(f"no answer from Redis for {silence}; last error: {error}") from error
        if self.outage_began is None:
            self.outage_began = now
            logger.warning(
                "Redis read failed (%s); reconnecting from cursor %s for up to %.0fs", error, cursor, remaining
            )
        self.failed_attempts += 1
        await asyncio.sleep(min(delay, remaining))  # the last attempt falls on the deadline

    def _answered(self, cursor: str, asked: float) -> None:
        self.last_answer = time.monotonic()
        if self.outage_began is not None:  # Redis was back when it was asked (its reply may have waited for entries)
            logger.warning(
                "Redis reads resumed after %.1fs (%d failed attempts), from cursor %s",
                asked - self.outage_began,
                self.failed_attempts,
                cursor,
            )
            self.outage_began, self.failed_attempts = None, 0
