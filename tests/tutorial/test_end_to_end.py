"""The whole pattern in one process: embedded gRPC scheduler, real worker, real Redis, offline model.

These call the sample's functions; tests/tutorial/test_cli.py runs the same flows as a user does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import pytest
from agent_framework import AgentResponse
from agent_framework_durabletask import DurableAIAgent, DurableAIAgentClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient

from agents import AGENT_NAME, get_local_events, get_weather_forecast
from client import start_run
from redis_stream_response_handler import RedisStreamResponseHandler, StreamChunk
from reliability.durable_record import wait_for_recorded_answer
from reliability.run_tracker import read_run
from support.config import load_settings
from support.ports import free_port
from support.scheduler import connect_client
from support.services import Services, embedded_scheduler
from support.sessions import new_session_key
from worker import start_worker


@dataclass
class Stack:
    agent: DurableAIAgent[AgentResponse]
    handler: RedisStreamResponseHandler
    services: Services

    def recorded(self, session_key: str, correlation_id: str) -> AgentResponse | None:
        return wait_for_recorded_answer(scheduler_client(self.services), session_key, correlation_id)


@contextmanager
def worker_stack(redis_url: str, **model_env: str) -> Iterator[Services]:
    """A fresh embedded scheduler with one in-process worker whose demo model is set by `model_env`."""
    port = free_port()
    settings = replace(load_settings({}), heartbeat_seconds=0.5)
    services = Services(scheduler_endpoint=f"http://localhost:{port}", redis_url=redis_url)
    with ExitStack() as stack:
        stack.enter_context(embedded_scheduler(port))
        start_worker(settings, services, stack, environ={"DEMO_MODEL_TOKEN_DELAY_MS": "1", **model_env})
        yield services


@pytest.fixture(scope="module")
def healthy_services(redis_url: str) -> Iterator[Services]:
    with worker_stack(redis_url) as services:
        yield services


async def connect(services: Services) -> Stack:
    handler = RedisStreamResponseHandler.from_url(services.redis_url, idle_timeout_seconds=20)
    return Stack(DurableAIAgentClient(scheduler_client(services)).get_agent(AGENT_NAME), handler, services)


def scheduler_client(services: Services) -> DurableTaskSchedulerClient:
    return connect_client(services.scheduler_endpoint, load_settings({}).taskhub)


@pytest.fixture
async def stack(healthy_services: Services) -> AsyncIterator[Stack]:
    connected = await connect(healthy_services)
    yield connected
    await connected.handler.aclose()


async def ask(stack: Stack, session_key: str, message: str) -> tuple[str | None, list[StreamChunk]]:
    run = await start_run(stack.agent, stack.handler, session_key, message)
    cursor, correlation_id = run.cursor, run.correlation_id
    chunks = [c async for c in read_run(stack.handler, session_key, cursor, correlation_id=correlation_id)]
    return correlation_id, chunks


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(c.text for c in chunks)


async def test_the_streamed_answer_uses_the_tools_and_matches_the_durable_record(stack: Stack) -> None:
    session_key = new_session_key()
    correlation_id, chunks = await ask(stack, session_key, "Plan a 3-day trip to Tokyo")

    assert correlation_id is not None
    assert chunks[-1].is_done
    answer = text_of(chunks)
    assert "Tokyo" in answer
    weather_line = get_weather_forecast("Tokyo", 3).splitlines()[1].split(":", 1)[1].strip()
    assert weather_line in answer  # the tool's data reached the answer
    assert any(
        line.split("- Tokyo ")[-1].split(" (")[0] in answer for line in get_local_events("Tokyo").splitlines()[1:]
    )
    record = await asyncio.to_thread(stack.recorded, session_key, correlation_id)
    assert record is not None and record.text == answer


async def test_resuming_mid_answer_from_a_cursor_loses_and_repeats_nothing(stack: Stack) -> None:
    session_key = new_session_key()
    run = await start_run(stack.agent, stack.handler, session_key, "Plan a 2-day trip to Lisbon")
    cursor, correlation_id = run.cursor, run.correlation_id
    first_part: list[StreamChunk] = []
    async for chunk in read_run(stack.handler, session_key, cursor, correlation_id=correlation_id):
        first_part.append(chunk)
        if len([c for c in first_part if c.text]) == 7:
            break  # the client "disconnects" mid-answer
    resume_from = first_part[-1].entry_id

    rest = [c async for c in read_run(stack.handler, session_key, resume_from, correlation_id=correlation_id)]

    assert rest[-1].is_done
    record = await asyncio.to_thread(stack.recorded, session_key, correlation_id or "")
    assert record is not None
    assert text_of(first_part) + text_of(rest) == record.text


async def test_a_second_turn_streams_only_its_own_answer(stack: Stack) -> None:
    session_key = new_session_key()
    _, first = await ask(stack, session_key, "Plan a 2-day trip to Rome")
    second_id, second = await ask(stack, session_key, "Now plan a 1-day trip to Oslo")

    assert first[-1].is_done and second[-1].is_done
    assert "Rome" in text_of(first)
    assert "Oslo" in text_of(second) and "Rome" not in text_of(second)
    assert {c.correlation_id for c in second} == {second_id}


@pytest.mark.parametrize("fail_after", ["0", "3"])
async def test_a_failing_model_ends_the_stream_with_an_error_marker(redis_url: str, fail_after: str) -> None:
    with worker_stack(redis_url, DEMO_MODEL_FAIL_AFTER_TOKENS=fail_after) as services:
        failing = await connect(services)
        _, chunks = await ask(failing, new_session_key(), "Plan a 2-day trip to Paris")
        await failing.handler.aclose()

    assert chunks[-1].kind == "error"
    assert chunks[-1].error is not None and "Demo model failure" in chunks[-1].error
    assert "stopped" not in chunks[-1].error  # an error marker, not the idle timeout
    assert len([c for c in chunks if c.text]) == int(fail_after)
