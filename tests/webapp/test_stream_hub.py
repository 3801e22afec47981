"""The stream hub (webapp/stream_hub.py) on a real Redis: many readers, a few connections, nothing lost.

Each test drives the hub as the web app does, through `HubReader` and `read_run`, and checks what a
reader relies on: every reader of a run gets the same text as a lone reader would, an old cursor
catches up, a slow reader is cut off at a place it can resume from, a stream nobody reads is no
longer read, and Redis going away is ridden out.

    uv run pytest tests/webapp/test_stream_hub.py -q
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from redis_stream_response_handler import (
    DONE,
    ERROR,
    RESTART,
    START,
    TOKEN,
    RedisStreamResponseHandler,
    StreamChunk,
    entry_fields,
    stream_key,
)
from reliability.run_tracker import read_run
from support.redis_connection import async_client
from support.redis_reads import RedisUnreachableError
from support.sessions import new_session_key
from tests.reliability.test_redis_outage import RestartableRedis
from tests.streams import write_entries
from tests.webapp.test_web import eventually
from webapp.stream_hub import (
    BUFFER_ENTRIES,
    HUB_CONNECTIONS,
    HubReader,
    ReaderTooSlowError,
    ServerStoppingError,
    StreamHub,
    hub_client_options,
)


@asynccontextmanager
async def hub_on(redis_url: str, idle_timeout_seconds: float = 10.0) -> AsyncIterator[tuple[StreamHub, str]]:
    """A running hub whose connections carry a name of their own (to count them in CLIENT LIST), and that name."""
    name = f"hub-test-{uuid.uuid4().hex[:8]}"
    options: dict[str, Any] = hub_client_options() | {"client_name": name}
    client = async_client(redis_url, wait_for_connection=True, **options)
    async with StreamHub(client, idle_timeout_seconds) as hub:
        yield hub, name


@pytest.fixture
async def handler(redis_url: str) -> AsyncIterator[RedisStreamResponseHandler]:
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=2) as writer:
        yield writer


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    restartable = RestartableRedis()
    yield restartable
    restartable.stop()


def connections_named(redis_url: str, name: str) -> list[dict[str, str]]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return [c for c in client.client_list() if c.get("name") == name]


def tokens(run: str, words: list[str]) -> list[dict[str, str]]:
    return [entry_fields(TOKEN, run, sequence, word, attempt="a1") for sequence, word in enumerate(words)]


async def text_of(chunks: AsyncIterator[StreamChunk]) -> str:
    return "".join([chunk.text async for chunk in chunks if chunk.kind == TOKEN])


async def test_many_readers_of_many_runs_get_the_same_text_over_a_few_connections(
    redis_url: str, handler: RedisStreamResponseHandler
) -> None:
    sessions = [new_session_key() for _ in range(20)]
    words = [f"word{index} " for index in range(5)]
    async with hub_on(redis_url) as (hub, name):
        reader = HubReader(hub)
        readers = [
            asyncio.ensure_future(text_of(read_run(reader, session, "0-0", "run-1")))
            for session in sessions
            for _ in range(10)
        ]
        await eventually(lambda: hub.readers == 200, "every reader joined the hub")
        for position, word in enumerate(words):  # the runs are written at once, a token at a time
            for session in sessions:
                await write_entries(handler, session, [entry_fields(TOKEN, "run-1", position, word, attempt="a1")])
        held = len(connections_named(redis_url, name))

        for session in sessions:
            await write_entries(handler, session, [entry_fields(DONE, "run-1", 5, chunks=5, attempt="a1")])
        texts = await asyncio.gather(*readers)

    assert texts == ["".join(words)] * 200
    assert 1 <= held <= HUB_CONNECTIONS  # 200 readers of 20 streams: not a connection per reader


async def test_a_hub_reader_sees_exactly_what_a_lone_reader_sees_of_a_run_with_faults(
    redis_url: str, handler: RedisStreamResponseHandler
) -> None:
    session = new_session_key()
    entries = [
        entry_fields(START, "run-1", 0, attempt="a1", worker="host-a:1"),
        entry_fields(TOKEN, "run-1", 0, "Day 1 ", attempt="a1"),
        entry_fields(TOKEN, "run-1", 0, "Day 1 ", attempt="a1"),  # written twice by a retried write
        entry_fields(START, "run-1", 0, attempt="a2", worker="host-b:2"),  # delivered again: a restart
        entry_fields(TOKEN, "run-1", 0, "Day 1: ", attempt="a2"),
        entry_fields(TOKEN, "run-1", 1, "stale ", attempt="a1"),  # the superseded attempt woke up
        entry_fields(DONE, "run-1", 2, chunks=2, attempt="a1"),  # ... and its done must not end the read
        entry_fields(TOKEN, "run-1", 2, "museums.", attempt="a2"),  # sequence 1 never arrived: missing
        entry_fields(DONE, "run-1", 3, chunks=3, attempt="a2"),
    ]
    async with hub_on(redis_url) as (hub, _):
        live = asyncio.ensure_future(_all(read_run(HubReader(hub), session, "0-0", "run-1")))
        await eventually(lambda: hub.readers == 1, "the live reader joined")
        await write_entries(handler, session, entries)
        from_the_hub = await live
        late = await _all(read_run(HubReader(hub), session, "0-0", "run-1"))
    alone = await _all(read_run(handler, session, "0-0", "run-1"))

    assert from_the_hub == late == alone
    after_restart = alone[[c.kind for c in alone].index(RESTART) :]
    assert [c.text for c in after_restart if c.kind == TOKEN] == ["Day 1: ", "museums."] and alone[-1].missing == 1


async def _all(chunks: AsyncIterator[StreamChunk]) -> list[StreamChunk]:
    return [chunk async for chunk in chunks]


async def test_a_reader_from_an_old_cursor_catches_up_then_follows_the_shared_tail(
    redis_url: str, handler: RedisStreamResponseHandler
) -> None:
    session = new_session_key()
    async with hub_on(redis_url) as (hub, _):
        ahead = HubReader(hub).read_entries(session, "0-0")
        first = await write_entries(handler, session, tokens("run-1", [f"w{n} " for n in range(1_200)]))
        assert [(await anext(ahead)).entry_id for _ in first] == first  # the hub's position is the newest entry
        behind = HubReader(hub).read_entries(session, first[99])  # older than the hub: catches up (XRANGE pages)
        assert (await anext(behind)).entry_id == first[100]
        later = await write_entries(handler, session, tokens("run-1", ["more ", "still more "]))
        rest = [(await anext(behind)).entry_id for _ in range(len(first) - 101 + len(later))]
        await ahead.aclose()
        await behind.aclose()

    assert rest == first[101:] + later  # no gap, no repeat


async def test_a_slow_reader_is_cut_off_at_its_place_and_resumes_losing_nothing(
    redis_url: str, handler: RedisStreamResponseHandler
) -> None:
    session = new_session_key()
    async with hub_on(redis_url) as (hub, _):
        slow = HubReader(hub).read_entries(session, "0-0")
        ids = await write_entries(handler, session, tokens("run-1", ["first "]))
        received = (await anext(slow)).entry_id  # then it stops taking entries, as a stalled client does
        ids += await write_entries(handler, session, tokens("run-1", ["x "] * (BUFFER_ENTRIES + 10)))
        fast = HubReader(hub).read_entries(session, received)
        assert [(await anext(fast)).entry_id for _ in ids[1:]] == ids[1:]

        with pytest.raises(ReaderTooSlowError):
            await anext(slow)
        assert hub.readers == 1  # the slow one left: its buffer is freed
        resumed = HubReader(hub).read_entries(session, received)
        assert [(await anext(resumed)).entry_id for _ in ids[1:]] == ids[1:]
        await fast.aclose()
        await resumed.aclose()


async def test_a_reader_that_hears_nothing_ends_with_the_idle_timeout_message(redis_url: str) -> None:
    async with hub_on(redis_url, idle_timeout_seconds=0.5) as (hub, _):
        chunks = await _all(read_run(HubReader(hub), new_session_key(), "0-0", "run-1"))

    assert [c.kind for c in chunks] == [ERROR]
    assert "no answer started within 0.5s" in (chunks[0].error or "")
    assert hub.readers == 0


async def test_a_stream_nobody_reads_any_more_is_dropped_from_the_hubs_read(
    redis_url: str, handler: RedisStreamResponseHandler
) -> None:
    session = new_session_key()
    async with hub_on(redis_url) as (hub, name):
        reader = HubReader(hub).read_entries(session, "0-0")
        await write_entries(handler, session, tokens("run-1", ["one "]))
        await anext(reader)
        assert stream_key(session) in hub.streams
        await reader.aclose()  # the client went away

        assert hub.readers == 0 and not hub.streams
        await eventually(
            lambda: not [c for c in connections_named(redis_url, name) if c["cmd"] == "xread" and "b" in c["flags"]],
            "the hub's blocked XREAD returned, and no new one was sent",
        )


async def test_stopping_ends_every_reader_with_the_server_stopping_error(redis_url: str) -> None:
    async with hub_on(redis_url) as (hub, _):
        readers = [asyncio.ensure_future(_all(HubReader(hub).read_entries(new_session_key()))) for _ in range(3)]
        await eventually(lambda: hub.readers == 3, "the readers joined")
        hub.stop(ServerStoppingError("the server is stopping"))
        ended = await asyncio.gather(*readers, return_exceptions=True)
        late = HubReader(hub).read_entries(new_session_key())
        with pytest.raises(ServerStoppingError):
            await anext(late)

    assert all(isinstance(error, ServerStoppingError) for error in ended)


async def test_the_hub_rides_out_a_redis_restart_and_reports_an_outage_longer_than_the_idle_timeout(
    restartable_redis: RestartableRedis,
) -> None:
    session = new_session_key()
    async with (
        RedisStreamResponseHandler.from_url(restartable_redis.url) as writer,
        hub_on(restartable_redis.url, idle_timeout_seconds=4) as (hub, _),
    ):
        reader = HubReader(hub).read_entries(session, "0-0")
        await write_entries(writer, session, tokens("run-1", ["before "]))
        assert (await anext(reader)).text == "before "
        waiting = asyncio.ensure_future(anext(reader))
        restartable_redis.stop()
        await asyncio.sleep(1)
        restartable_redis.start()  # empty (no persistence); new entries get newer ids
        await write_entries(writer, session, tokens("run-1", ["after "]))
        assert (await waiting).text == "after "

        restartable_redis.stop()  # for longer than the idle timeout
        with pytest.raises(RedisUnreachableError):
            await anext(reader)
