"""A stopping worker's unfinished runs (reliability/write_behind.py `StreamFlusher.aclose`), against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from redis_stream_response_handler import ERROR, START, TOKEN, RedisStreamResponseHandler
from reliability.write_behind import ABANDONED, RunStreamWriter, StreamFlusher
from tests.streams import all_entries


async def _a_run_still_talking(flusher: StreamFlusher, conversation: str) -> asyncio.Task[None]:
    async def run() -> None:  # the callback runs inside the run's own task, as in the durable entity
        writer = RunStreamWriter(flusher, conversation, "run-1")
        writer.start()
        writer.append_token("Day 1: ")
        await asyncio.sleep(60)  # the model is still answering

    task = asyncio.create_task(run())
    await asyncio.sleep(0.2)
    return task


@pytest.mark.parametrize(("reason", "kinds"), [(ABANDONED, [START, TOKEN, ERROR]), (None, [START, TOKEN])])
async def test_a_stopping_worker_cancels_unfinished_runs_and_marks_them_only_when_asked(
    redis_url: str, reason: str | None, kinds: list[str]
) -> None:
    conversation = f"shutdown-{uuid.uuid4().hex}"
    flusher = StreamFlusher(RedisStreamResponseHandler.from_url(redis_url))
    run = await _a_run_still_talking(flusher, conversation)

    await asyncio.wait_for(flusher.aclose(reason), timeout=5)
    with contextlib.suppress(asyncio.CancelledError):
        await run

    assert run.cancelled()  # the model stops: the worker does not wait for the rest of the answer
    async with RedisStreamResponseHandler.from_url(redis_url) as reader:
        entries = await all_entries(reader, conversation)
    # With a reason (the scheduler stops too), readers learn it at once; without, the scheduler that
    # outlives this worker delivers the run again and the new attempt replaces this one.
    assert [entry["kind"] for entry in entries] == kinds
    assert reason is None or entries[-1]["error"] == reason
