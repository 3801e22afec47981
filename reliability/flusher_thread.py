"""The worker's flusher on a thread of its own, so that a burst of agent work cannot hold tokens back.

Every agent run of a worker shares ONE event loop (agent_framework_durabletask's bridge,
`run_agent_coroutine`). When many runs start or end at once, that loop runs their set-up
(the model's first call, the tools) or their wrap-up (the final response, the entity's state)
back to back, and a flusher on the same loop waits behind all of it: measured with 100 runs
starting together, their first tokens reached Redis up to about 190 ms after they were produced.

On its own thread and loop, the flusher needs the GIL only for the moments it writes. Python
hands the GIL to a waiting thread within its switch interval (5 ms), so the busy agents'
loop delays a write by milliseconds instead of by the whole burst:

    agents' loop (runs)  ── append_token ──▶ writer.pending ──┐  (a lock; one wake-up per batch)
    flusher's thread/loop ◀─────────────────────────────────── ┘── XADD … ──▶ Redis

The Redis client is created on the flusher's loop and used only there; the stop watcher reads
through it with `StreamFlusher.run` (reliability/stop_watch.py).

Try it: `uv run python -m reliability.flusher_thread` streams a run whose loop is kept busy (Redis: as write_behind).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.config import Settings, load_settings

JOIN_SECONDS = 5.0


def start_flusher_thread(redis_url: str, settings: Settings) -> StreamFlusher:
    """A StreamFlusher for `redis_url` on a new daemon thread's event loop; its `aclose()` also ends the thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="stream-flusher", daemon=True)
    thread.start()

    async def open_on_its_loop() -> RedisStreamResponseHandler:
        # A redis.asyncio client (and its Entra ID token renewal) belongs to the loop it is used on: this one.
        # The idle timeout bounds how long a write is retried through an outage (write_behind.py). One
        # connection: the flusher's writes follow one another, and the pool's work around each was a
        # measurable part of a token's cost (docs/benchmarks.md, section 7).
        return RedisStreamResponseHandler.from_url(
            redis_url,
            single_connection=True,
            ttl_seconds=settings.stream_ttl_seconds,
            max_length=settings.stream_max_length,
            idle_timeout_seconds=settings.idle_timeout_seconds,
        )

    handler = asyncio.run_coroutine_threadsafe(open_on_its_loop(), loop).result()

    def stop_thread() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(JOIN_SECONDS)
        if not thread.is_alive():
            loop.close()

    return StreamFlusher(handler, max_silence_seconds=settings.max_silence_seconds, loop=loop, on_closed=stop_thread)


def _keep_busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


async def _demo(redis_url: str) -> None:
    flusher = start_flusher_thread(redis_url, load_settings({}))
    conversation = f"flusher-thread-demo-{uuid.uuid4().hex}"
    writer = RunStreamWriter(flusher, conversation, "run-1")
    writer.start()
    for word in ["Written", "while", "this", "loop", "is", "busy."]:
        writer.append_token(word + " ")
        _keep_busy(0.05)  # the agents' loop, busy (set-up of other runs): the flusher's thread writes anyway
    await writer.finish()
    async with RedisStreamResponseHandler.from_url(redis_url) as reader:
        async for chunk in read_run(reader, conversation, correlation_id="run-1"):
            print(chunk.entry_id, chunk.kind, repr(chunk.text))
    await flusher.aclose()


if __name__ == "__main__":
    from support.services import demo_redis

    with demo_redis() as demo_url:
        asyncio.run(_demo(demo_url))
