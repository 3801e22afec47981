"""The worker's flusher on its own thread (reliability/flusher_thread.py), against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import cast

from redis_stream_response_handler import DONE, ERROR, START, TOKEN, stream_key
from reliability.flusher_thread import start_flusher_thread
from reliability.write_behind import ABANDONED, RunStreamWriter
from support.config import load_settings
from support.redis_connection import sync_client


def _entries(redis_url: str, conversation: str) -> list[dict[str, str]]:
    """The stream's entries, read with a blocking client: usable while the test's loop is busy."""
    redis = sync_client(redis_url, decode_responses=True)
    try:
        return [fields for _, fields in cast(list[tuple[str, dict[str, str]]], redis.xrange(stream_key(conversation)))]
    finally:
        redis.close()


def _keep_the_loop_busy_until(done: threading.Event, limit_seconds: float) -> None:
    """What 100 runs starting at once do to the agents' loop: CPU work, no await."""
    deadline = time.monotonic() + limit_seconds
    while not done.is_set() and time.monotonic() < deadline:
        pass


async def test_tokens_reach_redis_while_the_runs_loop_is_busy(redis_url: str) -> None:
    """Default settings. With the flusher on the runs' loop, this token would wait for the loop."""
    conversation = f"flusher-thread-{uuid.uuid4().hex}"
    flusher = start_flusher_thread(redis_url, load_settings({}))
    arrived = threading.Event()

    def watch_redis() -> None:
        while not arrived.is_set():
            if TOKEN in [entry["kind"] for entry in _entries(redis_url, conversation)]:
                arrived.set()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_redis, daemon=True)
    try:
        writer = RunStreamWriter(flusher, conversation, "run-1")
        writer.start()
        writer.append_token("Day 1: ")
        watcher.start()
        _keep_the_loop_busy_until(arrived, limit_seconds=10)  # this loop never yields meanwhile
        assert arrived.is_set()  # written by the flusher's thread while this loop was busy
        await writer.finish()
    finally:
        arrived.set()
        await flusher.aclose()


async def test_many_runs_append_concurrently_and_every_stream_is_complete_and_in_order(redis_url: str) -> None:
    flusher = start_flusher_thread(redis_url, load_settings({}))
    writers = [RunStreamWriter(flusher, f"flusher-thread-{uuid.uuid4().hex}", f"run-{n}") for n in range(20)]
    try:
        for writer in writers:
            writer.start()
        for step in range(200):  # appends race the flusher's thread taking the batches
            for writer in writers:
                writer.append_token(f"{step} ")
            if step % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*(writer.finish() for writer in writers)), timeout=30)
    finally:
        await flusher.aclose()

    for writer in writers:
        entries = _entries(redis_url, writer.session_key)
        tokens = [entry for entry in entries if entry["kind"] == TOKEN]
        assert [int(entry["sequence"]) for entry in tokens] == list(range(200))
        assert "".join(entry["text"] for entry in tokens) == "".join(f"{step} " for step in range(200))
        assert entries[0]["kind"] == START and entries[-1]["kind"] == DONE


async def test_closing_it_abandons_unfinished_runs_and_ends_its_thread(redis_url: str) -> None:
    conversation = f"flusher-thread-{uuid.uuid4().hex}"
    threads_before = set(threading.enumerate())
    flusher = start_flusher_thread(redis_url, load_settings({}))

    async def a_run_still_talking() -> None:
        writer = RunStreamWriter(flusher, conversation, "run-1")
        writer.start()
        writer.append_token("Day 1: ")
        await asyncio.sleep(60)

    run = asyncio.create_task(a_run_still_talking())
    await asyncio.sleep(0.2)
    await asyncio.wait_for(flusher.aclose(ABANDONED), timeout=10)
    with contextlib.suppress(asyncio.CancelledError):
        await run

    assert run.cancelled()  # cancelled on its own loop, from the flusher's thread
    assert [thread.name for thread in set(threading.enumerate()) - threads_before] == []  # its thread has ended
    entries = _entries(redis_url, conversation)
    assert [entry["kind"] for entry in entries] == [START, TOKEN, ERROR]
    assert entries[-1]["error"] == ABANDONED
