"""Stopping a run: the real worker, scheduler, Redis and Agent Framework; the demo model as the model.

A stop must end the run for every reader with a `cancelled` marker, write nothing of that run
after it, reach a run whose model is silent, leave a durable record of what was said, and leave
the session usable. Asking when nothing runs, or for an unknown session, says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from agent_framework import Agent

from agents import get_local_events
from client import start_run
from redis_stream_response_handler import (
    CANCELLED,
    DONE,
    TOKEN,
    TOOL_RESULT,
    StreamChunk,
    entry_fields,
)
from reliability.run_tracker import read_run
from reliability.stop_requests import stop_current_run
from reliability.stop_watch import CancelSignal, cancelled_response, until_cancelled
from support.demo_model import DemoChatClient
from support.services import Services
from support.sessions import new_session_key
from tests.streams import write_entries
from tests.tutorial.test_end_to_end import Stack, ask, connect, scheduler_client, worker_stack


@pytest.fixture(scope="module")
def slow_services(redis_url: str) -> Iterator[Services]:
    """A model at 20 ms a token, so a stop lands mid-answer (a Tokyo plan is about 250 tokens)."""
    with worker_stack(redis_url, DEMO_MODEL_TOKEN_DELAY_MS="20") as services:
        yield services


@pytest.fixture
async def stack(slow_services: Services) -> AsyncIterator[Stack]:
    connected = await connect(slow_services)
    yield connected
    await connected.handler.aclose()


async def stop(stack: Stack, session_key: str, reason: str = "test stop") -> str:
    scheduler = scheduler_client(stack.services)
    outcome = await stop_current_run(stack.handler, scheduler, session_key, reason, idle_timeout_seconds=20)
    return outcome.status


async def entries_of_run(stack: Stack, session_key: str, correlation_id: str) -> list[dict[str, str]]:
    entries: list[tuple[str, dict[str, str]]] = await stack.handler.redis.xrange(f"agent-stream:{session_key}")  # type: ignore[assignment]
    return [fields for _, fields in entries if fields["correlation_id"] == correlation_id]


async def test_a_stop_ends_the_run_for_readers_and_the_session_goes_on(stack: Stack) -> None:
    session_key = new_session_key()
    run = await start_run(stack.agent, stack.handler, session_key, "Plan a 3-day trip to Tokyo")
    cursor, correlation_id = run.cursor, run.correlation_id
    assert correlation_id is not None
    seen: list[StreamChunk] = []
    async for chunk in read_run(stack.handler, session_key, cursor, correlation_id):
        seen.append(chunk)
        if len([c for c in seen if c.kind == TOKEN]) == 10:
            break  # a reader that leaves: this alone must not stop the run
    status = await stop(stack, session_key, reason="stopped by the test")
    rest = [c async for c in read_run(stack.handler, session_key, seen[-1].entry_id, correlation_id)]

    assert status == "cancelled"
    assert rest[-1].kind == CANCELLED and rest[-1].reason == "stopped by the test"
    streamed = "".join(c.text for c in seen + rest)
    assert streamed and "Enjoy your trip!" not in streamed
    await asyncio.sleep(0.5)  # anything the worker still wrote would be there by now
    kinds = [fields["kind"] for fields in await entries_of_run(stack, session_key, correlation_id)]
    assert kinds[-1] == CANCELLED and kinds.count(CANCELLED) == 1
    record = await asyncio.to_thread(stack.recorded, session_key, correlation_id)
    assert record is not None and record.text == streamed  # the record holds what was said before the stop
    contents = [c.type for m in record.messages for c in m.contents]
    assert contents.count("function_call") == contents.count("function_result") == 2

    next_id, next_chunks = await ask(stack, session_key, "Plan a 1-day trip to Oslo")  # the same session goes on
    assert next_chunks[-1].kind == DONE and "Oslo" in "".join(c.text for c in next_chunks)
    assert await stop(stack, session_key) == "not_running"  # it ended: nothing to stop
    assert next_id != correlation_id


async def test_a_stop_reaches_a_run_whose_model_is_silent(redis_url: str) -> None:
    # A minute of silence before the first word, like a slow tool or a slow model: heartbeats only.
    with worker_stack(redis_url, DEMO_MODEL_FIRST_TOKEN_DELAY_MS="60000") as services:
        silent = await connect(services)
        try:
            session_key = new_session_key()
            run = await start_run(silent.agent, silent.handler, session_key, "Plan a trip to Rome")
            cursor, correlation_id = run.cursor, run.correlation_id
            async for chunk in read_run(silent.handler, session_key, cursor, correlation_id):
                if chunk.kind == TOOL_RESULT:
                    break  # the tools ran; the model is now silent
            status = await stop(silent, session_key)  # waits up to 5 s for the cancelled marker
            record = await asyncio.to_thread(silent.recorded, session_key, correlation_id or "")
        finally:
            await silent.handler.aclose()

    assert status == "cancelled"
    assert record is not None and record.text == ""


async def test_stopping_when_nothing_runs_or_for_an_unknown_session_says_so(stack: Stack) -> None:
    assert await stop(stack, f"never-{uuid.uuid4().hex}") == "unknown"

    finished = new_session_key()
    _, chunks = await ask(stack, finished, "Plan a 1-day trip to Bern")
    assert chunks[-1].kind == DONE
    assert await stop(stack, finished) == "not_running"

    abandoned = f"abandoned-{uuid.uuid4().hex}"  # a run whose worker died: its last entry is old
    old_token = entry_fields(TOKEN, "run-1", 0, "Hel") | {"timestamp": f"{time.time() - 60:.6f}"}
    await write_entries(stack.handler, abandoned, [old_token])
    assert await stop(stack, abandoned) == "not_running"
    assert await stack.handler.redis.get(f"agent-cancel:{abandoned}") is None  # nothing was asked of a worker


async def test_a_tool_call_cut_short_by_a_stop_is_left_out_of_the_record() -> None:
    async def get_weather_forecast(destination: str, days: int = 3) -> str:
        """A weather service that takes a minute."""
        await asyncio.sleep(60)
        return "sunny"

    agent = Agent(DemoChatClient(token_delay_seconds=0), "Plan trips.", tools=[get_weather_forecast, get_local_events])
    signal = CancelSignal("session", "run-1")
    asyncio.get_running_loop().call_later(0.5, signal.request, "stopped mid tool call")
    updates = [u async for u in until_cancelled(agent.run("Plan a trip to Oslo", stream=True), signal)]
    response = cancelled_response(updates, signal.reason or "")

    assert [c.type for u in updates for c in u.contents if c.type != "usage"] == ["function_call"] * 2
    kept = [c.type for m in response.messages for c in m.contents]
    assert kept == []  # neither call got its result: a dangling call would break the next turn
    assert response.additional_properties["cancelled"] == "stopped mid tool call"
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]  # the stop did not leak out
