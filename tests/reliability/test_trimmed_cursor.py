"""A reader whose cursor was trimmed away (MAXLEN) gets the whole answer, from the durable record.

Issue 10: with REDIS_STREAM_MAX_LENGTH=100 and a 7-day trip (235 entries), `--cursor` at an entry
that had been trimmed printed 588 of 1,373 bytes, starting mid-sentence, and exited 0. Nothing
compared the cursor with the oldest entry still in the stream, and a gap before the first token
seen was not counted. Now the cursor is reported as trimmed, the leading gap is counted as
missing, and the client answers from the durable record as for any other gap.

    uv run pytest tests/reliability/test_trimmed_cursor.py -q
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import replace
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis

from client import start_run
from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, entry_fields, stream_key
from reliability.run_tracker import read_run
from support.config import load_settings
from support.ports import free_port
from support.services import Services, embedded_scheduler
from support.sessions import new_session_key
from tests.conftest import cli_environment, run_cli
from tests.streams import write_entries
from tests.tutorial.test_end_to_end import connect
from tests.webapp.test_web import eventually
from worker import start_worker

MAX_LENGTH = 100  # the smallest REDIS_STREAM_MAX_LENGTH allowed


@contextmanager
def trimming_worker(redis_url: str) -> Iterator[Services]:
    """An embedded scheduler and an in-process worker that writes with REDIS_STREAM_MAX_LENGTH=100."""
    port = free_port()
    settings = replace(load_settings({}), stream_max_length=MAX_LENGTH, heartbeat_seconds=0.5)
    services = Services(scheduler_endpoint=f"http://localhost:{port}", redis_url=redis_url)
    with ExitStack() as stack:
        stack.enter_context(embedded_scheduler(port))
        start_worker(settings, services, stack, environ={"DEMO_MODEL_TOKEN_DELAY_MS": "1"})
        yield services


async def test_resuming_from_a_trimmed_cursor_prints_the_whole_answer_from_the_record(redis_url: str) -> None:
    with trimming_worker(redis_url) as services:
        stack = await connect(services)
        session_key = new_session_key()
        async with first_entry_of(redis_url, session_key) as first_entry_id:
            run = await start_run(stack.agent, stack.handler, session_key, "Plan a 7-day trip to Rome")
            early = await first_entry_id()  # a cursor a reader stopped at, at the start of the answer
        recorded = await asyncio.to_thread(stack.recorded, session_key, run.correlation_id or "")
        await stack.handler.aclose()
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            assert client.xlen(stream_key(session_key)) <= 2 * MAX_LENGTH, "the stream was not trimmed"
            assert not client.xrange(stream_key(session_key), min=early, max=early), "the cursor was not trimmed"

        env = cli_environment(ENDPOINT=services.scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url)
        result = run_cli("client.py", "--session", session_key, "--cursor", early, env=env, timeout=90)

    assert recorded is not None and len(recorded.text) > 1000  # a long answer: over 200 entries
    assert result.returncode == 0, result.stderr
    assert f"cursor {early} is older than the oldest entry still in the stream" in result.stderr
    assert "tokens never reached the stream; the full answer, from the durable record" in result.stderr
    assert result.stdout.endswith(recorded.text + "\n"), result.stdout[-300:]


@asynccontextmanager
async def first_entry_of(redis_url: str, session_key: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """The id of the first entry written to the session's stream, however far behind this process runs.

    An XREAD BLOCK sent before anything is written: Redis answers it as the first write completes,
    before the next, so what trims the stream later cannot take the entry first. (Reading along
    with the worker instead, this test fell behind the 100-entry cap under load: `missing=64`.)
    """
    name = f"first-entry-{session_key}"
    async with aioredis.Redis.from_url(redis_url, decode_responses=True, client_name=name) as reader:
        waiting = asyncio.ensure_future(reader.xread({stream_key(session_key): "$"}, count=1, block=60_000))
        await eventually(lambda: _blocked(redis_url, name), "Redis holds the read")

        async def first_entry_id() -> str:
            reply = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], await waiting)
            return reply[0][1][0][0]

        yield first_entry_id


def _blocked(redis_url: str, client_name: str) -> bool:
    with redis.Redis.from_url(redis_url, decode_responses=True) as admin:
        return any(c["name"] == client_name and "b" in c["flags"] for c in admin.client_list())


@pytest.mark.parametrize(("cursor_at", "missing"), [(None, 5), ("the token before the gap", 3)])
async def test_a_gap_before_the_first_token_read_is_counted(
    redis_url: str, cursor_at: str | None, missing: int
) -> None:
    """Tokens 0-4 lost before the first read (no start marker, no cursor): 5 missing; after token 1: 3."""
    session_key, run = new_session_key(), "run-1"
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=5) as handler:
        ids = await write_entries(handler, session_key, [entry_fields(START, run, 0, attempt="a")])
        ids += await write_entries(handler, session_key, [entry_fields(TOKEN, run, n, f"t{n} ") for n in (0, 1)])
        with redis.Redis.from_url(redis_url) as client:  # the head of the stream is gone, as MAXLEN trims it
            client.xdel(stream_key(session_key), *ids[: 1 if cursor_at else 3])
        await write_entries(handler, session_key, [entry_fields(TOKEN, run, n, f"t{n} ") for n in range(5, 10)])
        await write_entries(handler, session_key, [entry_fields(DONE, run, 10, chunks=10)])
        cursor = ids[2] if cursor_at else None
        chunks = [chunk async for chunk in read_run(handler, session_key, cursor)]

    assert chunks[-1].kind == DONE and chunks[-1].missing == missing
