"""Tool activity in the stream: real Agent Framework runs, written by the real writer to a real Redis, read back.

The agent runs in-process (no scheduler) so each test can give it the tools it needs; the last
test runs the durable TravelPlanner through the embedded scheduler and a worker, as users do.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from agent_framework import Agent, AgentResponse, AgentResponseUpdate, Content

from agents import get_local_events, get_weather_forecast
from redis_stream_response_handler import (
    DONE,
    START,
    TOKEN,
    TOOL_CALL,
    TOOL_RESULT,
    RedisStreamResponseHandler,
    StreamChunk,
)
from reliability.activity import RESULT_LIMIT
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.demo_model import DemoChatClient
from support.sessions import new_session_key
from tests.tutorial.test_end_to_end import ask, connect, worker_stack


async def stream_agent_run(
    handler: RedisStreamResponseHandler, agent: Agent, message: str = "Plan a 2-day trip to Oslo"
) -> tuple[list[StreamChunk], AgentResponse]:
    """What the worker's callback does with a run's updates, then what a reader gets back."""
    session = f"activity-{uuid.uuid4().hex}"
    writer = RunStreamWriter(StreamFlusher(handler), session, "run-1")
    writer.start()
    stream = agent.run(message, stream=True)
    async for update in stream:
        writer.append_update(update)
    response = await stream.get_final_response()
    await writer.finish(usage=response.usage_details)
    return [chunk async for chunk in read_run(handler, session, correlation_id="run-1")], response


async def write_updates(handler: RedisStreamResponseHandler, updates: list[AgentResponseUpdate]) -> list[StreamChunk]:
    session = f"activity-{uuid.uuid4().hex}"
    writer = RunStreamWriter(StreamFlusher(handler), session, "run-1")
    writer.start()
    for update in updates:
        writer.append_update(update)
    await writer.finish()
    return [chunk async for chunk in read_run(handler, session, correlation_id="run-1")]


def travel_agent(*tools: Any) -> Agent:
    tools = tools or (get_weather_forecast, get_local_events)
    return Agent(DemoChatClient(token_delay_seconds=0), "Plan trips.", name="TravelPlanner", tools=list(tools))


async def test_tool_calls_and_results_precede_the_first_token_and_share_its_sequence(redis_url: str) -> None:
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks, response = await stream_agent_run(handler, travel_agent())

    kinds = [c.kind for c in chunks]
    assert kinds[:5] == [START, TOOL_CALL, TOOL_CALL, TOOL_RESULT, TOOL_RESULT]
    assert set(kinds[5:-1]) == {TOKEN} and kinds[-1] == DONE
    numbered = chunks[1:-1]
    assert [c.sequence for c in numbered] == list(range(len(numbered)))  # one counter for tokens and tools
    assert chunks[-1].chunks == len(numbered) and chunks[-1].missing == 0
    calls, results = chunks[1:3], chunks[3:5]
    assert {c.name for c in calls} == {"get_weather_forecast", "get_local_events"}
    weather = next(c for c in calls if c.name == "get_weather_forecast")
    assert json.loads(weather.arguments or "") == {"destination": "Oslo", "days": 2}
    weather_result = next(r for r in results if r.call_id == weather.call_id)
    assert weather_result.name == "get_weather_forecast" and weather_result.error is None
    assert weather_result.result == get_weather_forecast("Oslo", 2)
    assert "".join(c.text for c in chunks) == response.text  # the text the durable record is compared with
    usage = json.loads(chunks[-1].usage or "")
    assert usage == {
        "input_tokens": response.usage_details["input_token_count"],  # type: ignore[index]
        "output_tokens": response.usage_details["output_token_count"],  # type: ignore[index]
    }
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > len(chunks) - 7


async def test_a_failing_tool_is_an_entry_with_its_error_and_the_run_goes_on(redis_url: str) -> None:
    def get_weather_forecast(destination: str, days: int = 3) -> str:
        """Fails like a weather service that is down."""
        raise ConnectionError("weather service unreachable: token=secret")

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks, _ = await stream_agent_run(handler, travel_agent(get_weather_forecast, get_local_events))

    failed = next(c for c in chunks if c.kind == TOOL_RESULT and c.name == "get_weather_forecast")
    assert failed.error and failed.result and "secret" not in failed.error + failed.result
    other = next(c for c in chunks if c.kind == TOOL_RESULT and c.name == "get_local_events")
    assert other.error is None
    assert chunks[-1].kind == DONE and any(c.kind == TOKEN for c in chunks)


async def test_a_huge_result_is_cut_with_a_marker_saying_so(redis_url: str) -> None:
    def get_local_events(destination: str) -> str:
        """Returns far more than a reader should be sent."""
        return "x" * 1_000_000

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks, _ = await stream_agent_run(handler, travel_agent(get_weather_forecast, get_local_events))

    result = next(c for c in chunks if c.kind == TOOL_RESULT and c.name == "get_local_events").result or ""
    assert result.startswith("x" * RESULT_LIMIT) and result.endswith("[cut: 1,000,000 characters in all]")
    assert len(result) < RESULT_LIMIT + 50


async def test_a_result_json_cannot_hold_is_written_as_text(redis_url: str) -> None:
    class Forecast:
        def __str__(self) -> str:
            return "Forecast(sunny)"

    def get_weather_forecast(destination: str, days: int = 3) -> Any:
        """Returns an object, not text."""
        return {"when": datetime(2026, 1, 1, tzinfo=UTC), "forecast": Forecast(), "tags": {"b"}}

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks, _ = await stream_agent_run(handler, travel_agent(get_weather_forecast, get_local_events))

    result = next(c for c in chunks if c.kind == TOOL_RESULT and c.name == "get_weather_forecast").result or ""
    assert "2026-01-01" in result and "Forecast(sunny)" in result
    assert chunks[-1].kind == DONE


async def test_arguments_and_results_no_reader_could_parse_become_entries_it_can(redis_url: str) -> None:
    not_utf8 = b"Z\xfcrich".decode("utf-8", "surrogateescape")  # what a mis-decoded byte string looks like
    calls = [
        Content.from_function_call("call_1", "timed", arguments={"when": datetime(2026, 1, 1, tzinfo=UTC)}),
        Content.from_function_call("call_2", "odd_keys", arguments={("a", 1): "tuple key"}),  # type: ignore[dict-item]
        Content.from_function_call("call_3", "not_json", arguments="destination=Oslo"),
        Content.from_function_call("call_4", not_utf8, arguments={"city": not_utf8}),
        Content.from_function_call("call_5", "huge", arguments={"text": "y" * 100_000}),
    ]
    updates = [AgentResponseUpdate(contents=[call]) for call in calls]
    updates.append(AgentResponseUpdate(role="tool", contents=[Content.from_function_result("call_4", result=not_utf8)]))
    updates.append(AgentResponseUpdate(contents=[Content.from_text("Done.")]))

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks = await write_updates(handler, updates)

    tool_calls = [c for c in chunks if c.kind == TOOL_CALL]
    assert [c.call_id for c in tool_calls] == ["call_1", "call_2", "call_3", "call_4", "call_5"]
    arguments = [json.loads(c.arguments or "") for c in tool_calls]
    assert all(isinstance(a, dict) for a in arguments)
    assert "2026-01-01" in arguments[0]["when"]
    assert arguments[2] == {"raw": "destination=Oslo"}
    assert arguments[3]["city"].startswith("Z") and len(tool_calls[4].arguments or "") < RESULT_LIMIT + 100
    assert next(c for c in chunks if c.kind == TOOL_RESULT).result == "Z?rich"
    assert chunks[-1].kind == DONE and chunks[-2].text == "Done."


async def test_arguments_streamed_in_fragments_make_one_tool_call(redis_url: str) -> None:
    fragments = ['{"destination": ', '"Oslo", ', '"days": 2}']
    first = Content.from_function_call("call_1", "get_weather_forecast", arguments=fragments[0], id="occurrence-1")
    rest = [Content.from_function_call("", "", arguments=text, id="occurrence-1") for text in fragments[1:]]
    no_arguments = Content.from_function_call("call_2", "get_local_events", arguments="")
    updates = [AgentResponseUpdate(contents=[content]) for content in [first, *rest, no_arguments]]
    updates.append(AgentResponseUpdate(contents=[Content.from_text("Oslo it is.")]))

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks = await write_updates(handler, updates)

    calls = [c for c in chunks if c.kind == TOOL_CALL]
    assert [(c.name, c.call_id) for c in calls] == [("get_weather_forecast", "call_1"), ("get_local_events", "call_2")]
    assert json.loads(calls[0].arguments or "") == {"destination": "Oslo", "days": 2}
    assert calls[1].arguments == "{}"
    assert [c.kind for c in chunks[-2:]] == [TOKEN, DONE]


async def test_a_durable_run_streams_tool_activity_and_usage_through_the_worker(redis_url: str) -> None:
    with worker_stack(redis_url) as services:
        stack = await connect(services)
        try:
            session_key = new_session_key()
            correlation_id, chunks = await ask(stack, session_key, "Plan a 3-day trip to Tokyo")
            record = await asyncio.to_thread(stack.recorded, session_key, correlation_id or "")
        finally:
            await stack.handler.aclose()

    kinds = [c.kind for c in chunks]
    first_token = kinds.index(TOKEN)
    assert TOOL_CALL in kinds[:first_token] and TOOL_RESULT in kinds[:first_token]
    assert chunks[-1].is_done and json.loads(chunks[-1].usage or "")["output_tokens"] > 0
    assert record is not None and record.text == "".join(c.text for c in chunks)


async def test_a_tool_call_still_open_when_the_run_ends_is_written_before_the_done_marker(redis_url: str) -> None:
    # The model's last update is a call whose arguments never completed: the final marker flushes it
    # first, numbered like the rest, so `chunks` counts it and no reader sees a gap or loses it.
    open_call = Content.from_function_call("call_9", "get_local_events", arguments='{"destination": "Oslo"')
    updates = [AgentResponseUpdate(contents=[Content.from_text("Hello ")]), AgentResponseUpdate(contents=[open_call])]

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        chunks = await write_updates(handler, updates)

    assert [c.kind for c in chunks] == [START, TOKEN, TOOL_CALL, DONE]
    assert chunks[2].call_id == "call_9" and chunks[-1].chunks == 2 and chunks[-1].missing == 0
