"""Time to first token through the whole pattern: client → scheduler → worker entity → agent → Redis → client.

Each repetition starts a fresh conversation with the client's fire-and-forget
`start_run(...)` (embedded in-memory scheduler, in-process worker, offline demo
model) and reads the answer with `read_run`, to its done marker, so turns
never overlap. Two model paces: DEMO_MODEL_TOKEN_DELAY_MS=0 (the model costs
~nothing, but never yields the event loop between words) and 20 (LLM pace).
The time to the first token splits into:

- dispatch:          start marker's timestamp − the moment start_run was called
                     (scheduler signal, entity dispatch, agent invocation)
- agent → 1st token: first token's timestamp − start marker's timestamp
                     (the demo model's tool-call round, tools, first word)
- Redis delivery:    client receives the first token − its timestamp

    uv run python -m benchmarks --quick     # runs this among the others
"""

from __future__ import annotations

import time

from benchmarks.agent_stack import AgentStack
from benchmarks.common import Row, new_key, summarize_ms
from client import start_run
from redis_stream_response_handler import ERROR, START, TOKEN, RedisStreamResponseHandler
from reliability.run_tracker import read_run

MESSAGE = "Plan a 2-day trip to Lisbon"


async def one_turn(stack: AgentStack, handler: RedisStreamResponseHandler) -> dict[str, float]:
    """Seconds for each leg of one turn's first token."""
    session_key = new_key("ttft")
    called = time.time()
    run = await start_run(stack.agent, handler, session_key, MESSAGE)
    acknowledged = time.time()
    legs: dict[str, float] = {"start_run call returns": acknowledged - called}
    started_at = 0.0
    async for chunk in read_run(handler, session_key, run.cursor, correlation_id=run.correlation_id):
        if chunk.kind == START:
            started_at = chunk.timestamp
        if chunk.kind == TOKEN and len(legs) == 1:
            received = time.time()
            legs["dispatch (start_run → start marker)"] = started_at - called
            legs["agent start → first token"] = chunk.timestamp - started_at
            legs["Redis delivery of first token"] = received - chunk.timestamp
            legs["TTFT total (start_run → first token at client)"] = received - called
        if chunk.kind == ERROR or (chunk.is_done and len(legs) == 1):
            raise RuntimeError(f"the run ended without a token: {chunk}")
    return legs


async def measure(stack: AgentStack, repetitions: int, token_delay_ms: int) -> list[Row]:
    handler = RedisStreamResponseHandler.from_url(stack.services.redis_url, idle_timeout_seconds=30)
    try:
        await one_turn(stack, handler)  # warm-up: first entity, first model, first Redis connection
        turns = [await one_turn(stack, handler) for _ in range(repetitions)]
    finally:
        await handler.aclose()
    model = f"demo model, {token_delay_ms} ms/word"
    return [{"model": model, "leg": leg, **summarize_ms([turn[leg] for turn in turns])} for leg in turns[0]]
