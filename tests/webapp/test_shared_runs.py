"""Shared runs (webapp/shared_runs.py) on a real Redis: one read per run and cursor, the same bytes for every reader.

Each reader here does what the SSE response does with its place in a shared run (take the frames it
has not sent, wait for more), and the bytes are compared with what a lone reader's `read_run`,
encoded event by event, would have sent.

    uv run pytest tests/webapp/test_shared_runs.py -q
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from redis_stream_response_handler import DONE, START, RedisStreamResponseHandler, entry_fields
from reliability.run_tracker import read_run
from support.sessions import new_session_key
from tests.streams import write_entries
from tests.webapp.test_stream_hub import hub_on, tokens
from tests.webapp.test_web import eventually
from webapp import shared_runs
from webapp.app import sse_frame
from webapp.shared_runs import RunReader, SharedRuns
from webapp.stream_hub import HubReader, ReaderTooSlowError

WORDS = [f"word{index} " for index in range(8)]


@pytest.fixture
async def handler(redis_url: str) -> AsyncIterator[RedisStreamResponseHandler]:
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=2) as writer:
        yield writer


def run_entries() -> list[dict[str, str]]:
    done = entry_fields(DONE, "run-1", len(WORDS), chunks=len(WORDS), attempt="a1")
    return [entry_fields(START, "run-1", 0, attempt="a1"), *tokens("run-1", WORDS), done]


async def sent_by(reader: RunReader) -> bytes:
    """What the SSE response writes for this reader: every frame, until the run's end."""
    sent = b""
    while True:
        reader.arrived.clear()
        if reader.position < reader.run.end:
            sent += reader.unsent()
        elif reader.run.ended:
            return sent
        else:
            await reader.arrived.wait()


async def lone_reader_bytes(handler: RedisStreamResponseHandler, session: str, cursor: str) -> bytes:
    frames = [sse_frame(chunk) async for chunk in read_run(handler, session, cursor, "run-1")]
    return b"".join(frame.data for frame in frames if frame is not None)


async def test_readers_of_one_run_from_one_cursor_share_one_read_and_get_a_lone_readers_bytes(
    redis_url: str, handler: RedisStreamResponseHandler
) -> None:
    session = new_session_key()
    async with hub_on(redis_url) as (hub, _):
        runs = SharedRuns(HubReader(hub), sse_frame)
        readers = [runs.join((session, "0-0", "run-1")) for _ in range(20)]
        reading = [asyncio.ensure_future(sent_by(reader)) for reader in readers]
        await eventually(lambda: hub.readers == 1, "the shared read joined the hub")
        ids = await write_entries(handler, session, run_entries())
        sent = await asyncio.gather(*reading)
        late = runs.join((session, "0-0", "run-1"))  # after the run ended: a read of its own, the same bytes
        resumed = runs.join((session, ids[3], "run-1"))  # another cursor: exactly the rest
        late_sent, resumed_sent = await sent_by(late), await sent_by(resumed)
        for reader in [*readers, late, resumed]:
            runs.leave(reader)
        await eventually(lambda: hub.readers == 0, "the last reader's leaving stopped the shared reads")

    assert hub.readers == 0
    assert sent == [await lone_reader_bytes(handler, session, "0-0")] * 20
    assert late_sent == sent[0] and b"word7" in late_sent
    assert resumed_sent == await lone_reader_bytes(handler, session, ids[3])
    assert resumed_sent and b"word1 " not in resumed_sent


async def test_a_reader_that_falls_too_far_behind_is_cut_off_where_it_can_resume(
    redis_url: str, handler: RedisStreamResponseHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_runs, "BUFFER_ENTRIES", 2)  # frames kept: between 2 and 4
    session = new_session_key()
    async with hub_on(redis_url) as (hub, _):
        runs = SharedRuns(HubReader(hub), sse_frame)
        fast, slow = runs.join((session, "0-0", "run-1")), runs.join((session, "0-0", "run-1"))
        reading = asyncio.ensure_future(sent_by(fast))
        await eventually(lambda: hub.readers == 1, "the shared read joined the hub")
        for taken, entry in enumerate(run_entries()):  # one at a time, each taken by the fast reader
            await write_entries(handler, session, [entry])
            await eventually(lambda n=taken: fast.position == n, "the fast reader took it")  # (the start: no event)
        fast_sent = await reading  # the slow reader took nothing meanwhile
        with pytest.raises(ReaderTooSlowError):
            slow.unsent()
        runs.leave(fast)
        runs.leave(slow)

    assert fast_sent == await lone_reader_bytes(handler, session, "0-0")  # the others lose nothing
    assert slow.last_sent == "0-0"  # its error event says: resume after the last id it was sent
