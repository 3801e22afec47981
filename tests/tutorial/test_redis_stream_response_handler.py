"""The Redis Streams transport against a real Redis: writing, blocking reads, cursors, timeouts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from redis_stream_response_handler import (
    DONE,
    ERROR,
    HEARTBEAT,
    START,
    TOKEN,
    RedisStreamResponseHandler,
    StreamChunk,
    entry_fields,
    stream_key,
)
from reliability.run_tracker import read_run
from support.errors import UsageError
from tests.streams import write_chunk, write_completion, write_entries


@pytest.fixture
async def handler(redis_url: str) -> AsyncIterator[RedisStreamResponseHandler]:
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=120, idle_timeout_seconds=1.0) as h:
        yield h


def new_conversation() -> str:
    return f"test-{uuid.uuid4().hex}"


async def collect(stream: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


async def write_answer(handler: RedisStreamResponseHandler, conversation: str, words: list[str], run: str) -> list[str]:
    ids = [await write_chunk(handler, conversation, word, n, run) for n, word in enumerate(words)]
    ids.append(await write_completion(handler, conversation, len(words), run))
    return ids


async def test_reads_back_every_token_in_order_then_the_done_marker(handler: RedisStreamResponseHandler) -> None:
    conversation = new_conversation()
    words = ["Day ", "1: ", "Tokyo ", "temples"]
    await write_answer(handler, conversation, words, "run-1")

    chunks = await collect(read_run(handler, conversation))

    assert [c.text for c in chunks if c.kind == TOKEN] == words
    assert [c.sequence for c in chunks if c.kind == TOKEN] == [0, 1, 2, 3]
    assert chunks[-1].is_done and chunks[-1].chunks == 4
    assert all(c.correlation_id == "run-1" and c.timestamp > 0 for c in chunks)


async def test_resuming_from_a_cursor_yields_exactly_what_follows(handler: RedisStreamResponseHandler) -> None:
    conversation = new_conversation()
    words = [f"w{n} " for n in range(10)]
    ids = await write_answer(handler, conversation, words, "run-1")

    resumed = await collect(read_run(handler, conversation, cursor=ids[3]))

    assert "".join(c.text for c in resumed) == "".join(words[4:])
    assert resumed[0].entry_id == ids[4]


async def test_a_blocked_reader_gets_tokens_as_they_are_written(handler: RedisStreamResponseHandler) -> None:
    conversation = new_conversation()
    received: list[str] = []

    async def read() -> None:
        async for chunk in read_run(handler, conversation):
            received.append(chunk.text)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.1)  # the reader is now parked in XREAD BLOCK on an empty stream
    async with RedisStreamResponseHandler.from_url(_url_of(handler)) as writer:
        await write_answer(writer, conversation, ["late ", "tokens"], "run-1")
    await asyncio.wait_for(reader, timeout=5)
    assert received == ["late ", "tokens", ""]


def _url_of(handler: RedisStreamResponseHandler) -> str:
    assert isinstance(handler.redis, aioredis.Redis)  # a single node here, not a RedisCluster
    kwargs = handler.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}"


async def test_only_the_requested_run_is_yielded(handler: RedisStreamResponseHandler) -> None:
    conversation = new_conversation()
    await write_answer(handler, conversation, ["first ", "turn"], "run-1")
    cursor = await handler.last_entry_id(conversation)
    await write_answer(handler, conversation, ["second ", "turn"], "run-2")

    from_cursor = await collect(read_run(handler, conversation, cursor=cursor, correlation_id="run-2"))
    whole_stream = await collect(read_run(handler, conversation, correlation_id="run-2"))

    assert "".join(c.text for c in from_cursor) == "second turn"
    assert "".join(c.text for c in whole_stream) == "second turn"


async def test_without_a_run_id_the_reader_follows_the_first_run_after_the_cursor(
    handler: RedisStreamResponseHandler,
) -> None:
    conversation = new_conversation()
    await write_answer(handler, conversation, ["first"], "run-1")
    await write_answer(handler, conversation, ["second"], "run-2")

    chunks = await collect(read_run(handler, conversation))

    assert "".join(c.text for c in chunks) == "first"
    assert chunks[-1].is_done


async def test_a_batch_written_twice_is_not_yielded_twice(handler: RedisStreamResponseHandler) -> None:
    conversation = new_conversation()
    batch = [entry_fields(TOKEN, "run-1", n, f"t{n} ") for n in range(3)]
    await write_entries(handler, conversation, [entry_fields(START, "run-1", 0), *batch])
    await write_entries(handler, conversation, batch)  # a retry after a lost reply
    await write_completion(handler, conversation, 3, "run-1")

    chunks = await collect(read_run(handler, conversation))

    assert "".join(c.text for c in chunks) == "t0 t1 t2 "


async def test_heartbeats_keep_a_reader_waiting_but_are_not_yielded(redis_url: str) -> None:
    conversation = new_conversation()
    async with (
        RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=0.5) as reader,
        RedisStreamResponseHandler.from_url(redis_url) as writer,
    ):
        await write_entries(writer, conversation, [entry_fields(START, "run-1", 0)])

        async def slow_run() -> None:
            for _ in range(4):  # 1.2 s of silence in all, with a heartbeat every 0.3 s
                await asyncio.sleep(0.3)
                await write_entries(writer, conversation, [entry_fields(HEARTBEAT, "run-1", 0)])
            await write_answer(writer, conversation, ["finally"], "run-1")

        worker = asyncio.create_task(slow_run())
        chunks = await collect(read_run(reader, conversation))
        await worker

    assert [c.kind for c in chunks] == [START, TOKEN, DONE]


async def test_idle_timeout_before_any_entry_ends_the_read_with_an_error(handler: RedisStreamResponseHandler) -> None:
    chunks = await collect(read_run(handler, new_conversation()))

    assert len(chunks) == 1 and chunks[0].kind == ERROR
    assert chunks[0].error is not None and "no answer started" in chunks[0].error


async def test_idle_timeout_after_data_stopped_ends_the_read_with_an_error(handler: RedisStreamResponseHandler) -> None:
    conversation = new_conversation()
    last_id = await write_chunk(handler, conversation, "half an ans", 0, "run-1")  # and then the worker died

    chunks = await collect(read_run(handler, conversation))

    assert [c.kind for c in chunks] == [TOKEN, ERROR]
    assert chunks[-1].error is not None and "stopped" in chunks[-1].error
    assert chunks[-1].entry_id == last_id  # the cursor to resume from


async def test_a_malformed_cursor_is_rejected_before_any_redis_call() -> None:
    unreachable = RedisStreamResponseHandler.from_url("redis://127.0.0.1:1")
    with pytest.raises(UsageError, match="cursor must be a Redis stream entry id"):
        await collect(read_run(unreachable, "conversation", cursor="not-a-cursor"))


@pytest.mark.parametrize("bad_key", ["", "has space", "a*b", "x" * 129, "new\nline"])
def test_unsafe_session_keys_never_become_redis_keys(bad_key: str) -> None:
    with pytest.raises(UsageError, match="session key"):
        stream_key(bad_key)


async def test_every_write_refreshes_the_ttl(redis_url: str) -> None:
    conversation = new_conversation()
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=42) as handler:
        await write_chunk(handler, conversation, "x", 0, "run-1")
        ttl = await handler.redis.ttl(stream_key(conversation))
    assert 0 < ttl <= 42


async def test_maxlen_bounds_a_runaway_stream(redis_url: str) -> None:
    conversation = new_conversation()
    async with RedisStreamResponseHandler.from_url(redis_url, max_length=100) as handler:
        for start in range(0, 2000, 100):
            await write_entries(
                handler, conversation, [entry_fields(TOKEN, "run-1", n, "x") for n in range(start, start + 100)]
            )
        length = await handler.redis.xlen(stream_key(conversation))
    assert length < 300  # approximate trimming: a little over the cap, never 2000
