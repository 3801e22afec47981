"""A worker's run slots: many runs at once by default, and a run waiting for a slot says so.

An in-process worker on the embedded scheduler, with the real agent and demo model.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace

from agent_framework_durabletask import DurableAIAgentClient

from agents import AGENT_NAME
from client import start_run
from redis_stream_response_handler import DONE, QUEUED, START, RedisStreamResponseHandler, StreamChunk
from reliability.run_tracker import RunTracker, read_run
from support.config import Settings, load_settings
from support.scheduler import connect_client
from support.services import Services, embedded_scheduler, free_port
from worker import start_worker

MESSAGE = "Plan a 2-day trip to Rome"


@contextmanager
def worker_on_scheduler(redis_url: str, settings: Settings, **model_env: str) -> Iterator[Services]:
    port = free_port()
    services = Services(scheduler_endpoint=f"http://localhost:{port}", redis_url=redis_url)
    with ExitStack() as stack:
        stack.enter_context(embedded_scheduler(port))
        start_worker(settings, services, stack, environ=model_env)
        yield services


async def start_and_read(
    services: Services, handler: RedisStreamResponseHandler, sessions: int
) -> list[list[StreamChunk]]:
    """`sessions` new sessions at once, one turn each, read to their end (as client.py does, one per session)."""
    scheduler = connect_client(services.scheduler_endpoint, load_settings({}).taskhub)
    agent = DurableAIAgentClient(scheduler).get_agent(AGENT_NAME)

    async def turn(key: str) -> list[StreamChunk]:
        correlation_id = (await start_run(agent, handler, key, MESSAGE)).correlation_id
        return [chunk async for chunk in read_run(handler, key, correlation_id=correlation_id)]

    return await asyncio.gather(*(turn(f"slots-{uuid.uuid4().hex[:12]}") for _ in range(sessions)))


async def test_a_run_waiting_for_a_free_slot_is_reported_queued_and_its_reader_waits_for_it(redis_url: str) -> None:
    # One slot, runs of about 2.5 s, readers that give up after 1.5 s of silence: without
    # `queued` notices, the readers of the second and third runs time out.
    settings = replace(load_settings({}), worker_max_concurrent_runs=1, heartbeat_seconds=0.5)
    with worker_on_scheduler(redis_url, settings, DEMO_MODEL_TOKEN_DELAY_MS="20") as services:
        async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=1.5) as handler:
            reads = await start_and_read(services, handler, sessions=3)

    assert all(chunks[-1].kind == DONE for chunks in reads), [chunks[-1].error for chunks in reads]
    waited = [chunks for chunks in reads if chunks[0].kind == QUEUED]
    assert len(waited) == 2, "the two runs that waited must say so before they start"
    assert all([c.kind for c in chunks].count(QUEUED) == 1 for chunks in waited)  # the reader is told once


async def test_the_default_worker_runs_more_than_32_sessions_at_once(redis_url: str) -> None:
    # The old fixed 32 threads ran the 33rd session only after one of the first 32 ended. Each run
    # here thinks for 3 s before its first word: every run must have started before any finishes.
    settings = load_settings({})
    sessions = 40
    model = {"DEMO_MODEL_FIRST_TOKEN_DELAY_MS": "3000", "DEMO_MODEL_TOKEN_DELAY_MS": "2"}
    with worker_on_scheduler(redis_url, settings, **model) as services:
        async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=20) as handler:
            reads = await start_and_read(services, handler, sessions=sessions)

    assert settings.worker_max_concurrent_runs >= 100
    assert all(chunks[-1].kind == DONE for chunks in reads)
    starts = sorted(next(c for c in chunks if c.kind == START).timestamp for chunks in reads)
    first_done = min(chunks[-1].timestamp for chunks in reads)
    assert starts[-1] < first_done, "every session must have started before the first one finished"


def test_a_reader_whose_run_waited_for_a_slot_names_the_busy_worker_when_silence_follows() -> None:
    run = RunTracker("run-1")
    notice = StreamChunk(entry_id="1-0", kind=QUEUED, correlation_id="run-1", worker="host:42")

    assert run.accept(notice) == notice
    assert run.accept(replace(notice, entry_id="2-0")) is None  # told once; later notices only prove it alive
    message = run.idle_message(20)
    assert "waiting for a free slot on host:42" in message and "is a worker running" not in message
