"""Workarounds (redis-py 8.1) for three behaviours of its asyncio client that break a blocking reader.

1. A cancellation that lands while the client finishes a reply can be swallowed. redis-py's
   asyncio connection catches `CancelledError` while it reads the rest of a reply, so that the
   connection stays usable, and the read can then return normally: the task was asked to stop but
   keeps going. A reader parked in `XREAD BLOCK` would then miss Ctrl+C, or a closed web request,
   and read on. Checking `Task.cancelling()` after each read honours the request.
2. Every client gets `socket_timeout=5` unless told otherwise (`redis/_defaults.py`; redis-py issue
   #3138), so an `XREAD BLOCK` longer than 5 s fails on the client with `TimeoutError` before Redis
   answers: a reader with the 20 s idle timeout retried and ended with "Redis failed while
   streaming" instead of "no answer started within 20s". A reader's socket timeout must outlast
   its block: by a margin, so a dead, half-open connection still fails.
3. On a cluster, a client socket timeout breaks concurrent blocked reads: `RedisCluster`'s asyncio
   client then fails some readers with `AttributeError: 'NoneType' object has no attribute
   'writelines'` (7 of 100 readers in a repro, with the timeout never reached; none without it).
   Cluster readers therefore get no socket timeout: XREAD BLOCK still ends on the server at the
   idle timeout, but a half-open connection to a node is not detected by the client.
"""

from __future__ import annotations

import asyncio

from support.redis_connection import parse_target

READ_MARGIN_SECONDS = 10.0  # time for Redis to answer a block that ran out, on a loaded machine


def raise_if_cancel_was_swallowed() -> None:
    """Raise `CancelledError` if this task was asked to stop while redis-py finished a reply."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def socket_timeout_outlasting(block_seconds: float, url: str) -> float | None:
    """The client socket timeout for reads that block up to `block_seconds` in Redis (None on a cluster: 3.)."""
    if parse_target(url).cluster:
        return None
    return float(block_seconds) + READ_MARGIN_SECONDS
