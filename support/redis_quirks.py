"""Workaround (redis-py 8.1): a cancellation that lands while the asyncio client finishes a reply can be swallowed.

redis-py's asyncio connection catches `CancelledError` while it reads the rest of a reply, so that
the connection stays usable, and the read can then return normally: the task was asked to stop
but keeps going. A reader parked in `XREAD BLOCK` would then miss Ctrl+C, or a closed web request,
and read on. Checking `Task.cancelling()` after each read honours the request.
"""

from __future__ import annotations

import asyncio


def raise_if_cancel_was_swallowed() -> None:
    """Raise `CancelledError` if this task was asked to stop while redis-py finished a reply."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
