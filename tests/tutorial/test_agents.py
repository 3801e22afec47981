"""The TravelPlanner agent on the offline demo model, with the real Agent Framework.

No mocks: the agent's function-invocation layer really runs both tools, and the
demo model really writes its answer from their results.
"""

from __future__ import annotations

import pytest
from agent_framework import Agent, AgentResponse

from agents import (
    AGENT_NAME,
    create_travel_agent,
    get_local_events,
    get_weather_forecast,
)
from support.demo_model import (
    DemoChatClient,
    TripRequest,
    demo_model_from_env,
    parse_trip_request,
)
from support.errors import UsageError

REQUEST = "Plan a 3-day trip to Tokyo with emphasis on culture"


def make_agent(fail_after_tokens: int | None = None) -> Agent:
    client = DemoChatClient(token_delay_seconds=0, fail_after_tokens=fail_after_tokens)
    return create_travel_agent(client)


def tool_lines(report: str) -> list[str]:
    """The per-day and per-event lines of a tool result, as the answer must quote them."""
    lines = [line.strip() for line in report.splitlines()]
    return [line.removeprefix("- ") for line in lines if line.startswith(("Day ", "- "))]


def assert_itinerary_for_tokyo(text: str) -> None:
    assert "Tokyo" in text
    weather = tool_lines(get_weather_forecast("Tokyo", 3))
    events = tool_lines(get_local_events("Tokyo"))
    assert len(weather) == 3 and len(events) == 3
    for line in weather + events:
        assert line in text


def assert_both_tools_ran(response: AgentResponse) -> None:
    contents = [content for message in response.messages for content in message.contents]
    calls = {c.call_id: c.name for c in contents if c.type == "function_call"}
    results = [c for c in contents if c.type == "function_result"]
    assert sorted(map(str, calls.values())) == [
        "get_local_events",
        "get_weather_forecast",
    ]
    assert set(calls) == {r.call_id for r in results}
    results_by_tool = {calls[r.call_id]: r.result for r in results}
    assert results_by_tool["get_weather_forecast"] == get_weather_forecast("Tokyo", 3)


def test_agent_is_named_travel_planner() -> None:
    assert make_agent().name == AGENT_NAME == "TravelPlanner"


@pytest.mark.asyncio
async def test_non_streaming_run_calls_both_tools_and_plans_the_trip() -> None:
    response = await make_agent().run(REQUEST)

    assert_both_tools_ran(response)
    assert_itinerary_for_tokyo(response.text)
    assert response.text.startswith("# Your 3-day trip to Tokyo")


@pytest.mark.asyncio
async def test_streamed_updates_join_into_the_final_response() -> None:
    stream = make_agent().run(REQUEST, stream=True)
    texts = [update.text async for update in stream]
    response = await stream.get_final_response()

    assert "".join(texts) == response.text
    text_updates = [text for text in texts if text]
    assert len(text_updates) > 50  # one word per update, not one big chunk
    assert all(text.strip() and " " not in text.strip() for text in text_updates)
    assert_both_tools_ran(response)
    assert_itinerary_for_tokyo(response.text)


@pytest.mark.asyncio
async def test_streaming_and_non_streaming_give_the_same_answer() -> None:
    stream = make_agent().run(REQUEST, stream=True)
    async for _ in stream:
        pass
    streamed = await stream.get_final_response()
    completed = await make_agent().run(REQUEST)

    assert streamed.text == completed.text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (REQUEST, TripRequest("Tokyo", 3)),
        ("I'd like 5 days in New York City in May", TripRequest("New York City", 5)),
        ("We want to go to Lisbon for 2 days", TripRequest("Lisbon", 2)),
        ("A 30-day tour to visit Zürich", TripRequest("Zürich", 7)),
        ("A week in Rio de Janeiro", TripRequest("Rio de Janeiro", 7)),
        ("Surprise me!", TripRequest("Paris", 3)),
    ],
)
def test_parse_trip_request(message: str, expected: TripRequest) -> None:
    assert parse_trip_request(message) == expected


@pytest.mark.asyncio
async def test_plans_for_the_destination_in_the_message() -> None:
    response = await make_agent().run("Plan a 2-day trip to Oslo")

    assert response.text.startswith("# Your 2-day trip to Oslo")
    for line in tool_lines(get_weather_forecast("Oslo", 2)):
        assert line in response.text


def test_tools_are_deterministic_and_name_the_destination() -> None:
    forecast = get_weather_forecast("Tokyo", days=4)

    assert forecast == get_weather_forecast("Tokyo", days=4)
    assert "Tokyo" in forecast
    assert [line.split(":")[0] for line in tool_lines(forecast)] == [
        "Day 1",
        "Day 2",
        "Day 3",
        "Day 4",
    ]
    assert all(line.endswith("°C") for line in tool_lines(forecast))
    music = get_local_events("Tokyo", category="music")
    assert tool_lines(music) and all("(music)" in line for line in tool_lines(music))


@pytest.mark.asyncio
async def test_injected_failure_stops_the_stream_after_two_tokens() -> None:
    stream = make_agent(fail_after_tokens=2).run(REQUEST, stream=True)
    text_updates: list[str] = []

    with pytest.raises(RuntimeError, match="after 2 tokens"):
        async for update in stream:
            if update.text:
                text_updates.append(update.text)

    assert len(text_updates) == 2
    assert "".join(text_updates) == "# Your "


@pytest.mark.asyncio
async def test_injected_failure_also_fails_the_non_streaming_run() -> None:
    with pytest.raises(RuntimeError, match="after 2 tokens"):
        await make_agent(fail_after_tokens=2).run(REQUEST)


def test_demo_model_from_env_reads_the_knobs() -> None:
    client = demo_model_from_env({"DEMO_MODEL_TOKEN_DELAY_MS": "0", "DEMO_MODEL_FAIL_AFTER_TOKENS": "5"})
    assert client.token_delay_seconds == 0
    assert client.fail_after_tokens == 5

    defaults = demo_model_from_env({"DEMO_MODEL_FAIL_AFTER_TOKENS": ""})
    assert defaults.token_delay_seconds == 0.02
    assert defaults.fail_after_tokens is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEMO_MODEL_TOKEN_DELAY_MS", "abc"),
        ("DEMO_MODEL_TOKEN_DELAY_MS", "-5"),
        ("DEMO_MODEL_TOKEN_DELAY_MS", "1.5"),
        ("DEMO_MODEL_FAIL_AFTER_TOKENS", "-1"),
        ("DEMO_MODEL_FAIL_AFTER_TOKENS", "two"),
    ],
)
def test_demo_model_from_env_rejects_bad_values(variable: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"^{variable} must be a whole number") as error:
        demo_model_from_env({variable: value})

    assert repr(value) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.asyncio
async def test_a_follow_up_request_in_the_same_session_gets_fresh_tool_calls() -> None:
    # The history now holds Tokyo's tool results; only the latest request counts.
    agent = make_agent()
    session = agent.create_session()
    await agent.run(REQUEST, session=session)
    response = await agent.run("Now plan 2 days in Oslo instead", session=session)

    assert response.text.startswith("# Your 2-day trip to Oslo")
    for line in tool_lines(get_weather_forecast("Oslo", 2)):
        assert line in response.text
