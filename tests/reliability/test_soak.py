"""Soak: 200 runs, readers cut off at random points and resumed from their last cursor.

Not part of the default run (about two minutes). Run it with:

    uv run pytest -m soak -s -n 0

It prints the figures: runs, interruptions, tokens checked, lost, duplicated.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from client import start_run
from redis_stream_response_handler import StreamChunk
from reliability.run_tracker import NUMBERED_KINDS, read_run
from support.sessions import new_session_key
from tests.tutorial.test_end_to_end import Stack, connect, worker_stack

RUNS = 200
CONCURRENT = 8


@pytest.mark.soak
@pytest.mark.timeout(900)  # about two minutes on a quiet machine; the suite's 300 s is for ordinary tests
async def test_soak_random_interruptions_lose_and_duplicate_nothing(redis_url: str) -> None:
    rng = random.Random(7)
    with worker_stack(redis_url, DEMO_MODEL_TOKEN_DELAY_MS="3") as services:
        stack = await connect(services)
        gate = asyncio.Semaphore(CONCURRENT)
        results = await asyncio.gather(*(_one_run(stack, gate, rng.uniform(0.01, 0.4)) for _ in range(RUNS)))
        await stack.handler.aclose()

    interruptions = sum(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    mismatches = [r for r in results if not r[2]]
    print(f"\nsoak: {RUNS} runs, {interruptions} interruptions, {tokens} tokens checked, {len(mismatches)} mismatched")
    assert not mismatches


async def _one_run(stack: Stack, gate: asyncio.Semaphore, cut_after: float) -> tuple[int, int, bool]:
    async with gate:
        session = new_session_key()
        run = await start_run(stack.agent, stack.handler, session, "Plan a 2-day trip to Malmo")
        cursor, correlation_id = run.cursor, run.correlation_id
        received: list[StreamChunk] = []
        interruptions = 0
        while not (received and received[-1].kind in ("done", "error")):
            reader = asyncio.create_task(_read(stack, session, cursor, correlation_id, received))
            done, _ = await asyncio.wait({reader}, timeout=cut_after)
            if not done:
                reader.cancel()  # the reader "dies" mid-answer
                interruptions += 1
            await asyncio.gather(reader, return_exceptions=True)
            cursor = received[-1].entry_id if received else cursor
            cut_after *= 2
        record = await asyncio.to_thread(stack.recorded, session, correlation_id or "")
        text = "".join(c.text for c in received)
        tokens = [c for c in received if c.kind == "token"]
        numbered = [c for c in received if c.kind in NUMBERED_KINDS]  # tool entries share the tokens' counter
        in_order = [c.sequence for c in numbered] == list(range(len(numbered)))
        return interruptions, len(tokens), record is not None and record.text == text and in_order


async def _read(stack: Stack, session: str, cursor: str, correlation_id: str | None, out: list[StreamChunk]) -> None:
    async for chunk in read_run(stack.handler, session, cursor, correlation_id=correlation_id):
        out.append(chunk)
