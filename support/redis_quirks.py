"""Workarounds for two behaviours of redis-py's asyncio client (8.1; 2. re-checked in 8.2.0) that break a reader.

1. A cancellation that lands while the client finishes a reply can be swallowed. redis-py's
   asyncio connection catches `CancelledError` while it reads the rest of a reply, so that the
   connection stays usable, and the read can then return normally: the task was asked to stop but
   keeps going. A reader parked in `XREAD BLOCK` would then miss Ctrl+C, or a closed web request,
   and read on. Checking `Task.cancelling()` after each read honours the request.
2. Every client gets `socket_timeout=5` unless told otherwise (`redis/_defaults.py`; redis-py issue
   #3138), so an `XREAD BLOCK` longer than 5 s fails on the client with `TimeoutError` before Redis
   answers: a reader with the 20 s idle timeout retried and ended with "Redis failed while
   streaming" instead of "no answer started within 20s". A reader's socket timeout must outlast
   its block: by a margin, so a dead, half-open connection still fails. Cluster readers included:
   redis-py 8.2 fixed the `RedisCluster` bug that made the sample run them without one (see
   docs/workarounds.md).
"""

from __future__ import annotations

import asyncio

READ_MARGIN_SECONDS = 10.0  # time for Redis to answer a block that ran out, on a loaded machine


def raise_if_cancel_was_swallowed() -> None:
    """Raise `CancelledError` if this task was asked to stop while redis-py finished a reply."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def socket_timeout_outlasting(block_seconds: float) -> float:
    """The client socket timeout for reads that block up to `block_seconds` in Redis."""
    return float(block_seconds) + READ_MARGIN_SECONDS
