"""`GET /agents/TravelPlanner/history/{session}`: the conversation the durable entity recorded, over HTTP.

A real uvicorn server (see test_web.py) whose worker and scheduler are real, on a scheduler this
module starts, so `client.py --history --json` can read the same record from a subprocess: both
must return the same messages.

    uv run pytest tests/webapp/test_web_history.py -n 0
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from support.ports import free_port
from support.services import embedded_scheduler
from tests.conftest import cli_environment, run_cli
from tests.webapp.test_web import STREAM, Event, Server, demo_worker, events_of, read_run, serve, start_run

HISTORY = "/agents/TravelPlanner/history"


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    port = free_port()
    with embedded_scheduler(port):
        yield f"http://localhost:{port}"


@pytest.fixture(scope="module")
def paced_web(redis_url: str, scheduler: str) -> Iterator[Server]:
    """20 ms a token, so a Stop lands mid-answer."""
    with serve(redis_url, demo_worker(DEMO_MODEL_TOKEN_DELAY_MS="20"), ENDPOINT=scheduler) as server:
        yield server


@pytest.fixture
async def http(paced_web: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=paced_web.url, timeout=30) as client:
        yield client


def text_of(events: list[Event]) -> str:
    return "".join(e.data for e in events if e.event == "message")


async def test_history_holds_two_answers_and_a_cancelled_turn_as_the_cli_prints_them(
    http: httpx.AsyncClient, redis_url: str, scheduler: str
) -> None:
    first = await start_run(http, "Plan a 2-day trip to Paris")
    session = first["session"]
    answers = [text_of(await read_run(http, first))]
    answers.append(text_of(await read_run(http, await start_run(http, "Make day 2 more relaxed", session=session))))
    third = await start_run(http, "Plan a 3-day trip to Tokyo", session=session)
    params = {"cursor": third["cursor"], "correlation_id": third["correlation_id"]}
    async with http.stream("GET", f"{STREAM}/{session}", params=params) as response:
        await events_of(response, limit=5)  # mid-answer
    assert (await http.post(f"/agents/TravelPlanner/cancel/{session}")).status_code == 200
    stopped = await read_run(http, third)

    history = await http.get(f"{HISTORY}/{session}")
    cli = run_cli(
        "client.py", "--session", session, "--history", "--json",
        env=cli_environment(ENDPOINT=scheduler, REDIS_CONNECTION_STRING=redis_url),
    )  # fmt: skip

    assert stopped[-1].event == "cancelled"
    assert history.status_code == 200, history.text
    messages = history.json()
    assert [json.loads(line) for line in cli.stdout.splitlines()] == messages, cli.stderr
    assert [(m["turn"], m["role"]) for m in messages if m["role"] == "user"] == [(1, "user"), (2, "user"), (3, "user")]
    by_turn = {n: [m for m in messages if m["turn"] == n] for n in (1, 2, 3)}
    assert [by_turn[n][0]["status"] for n in (1, 2, 3)] == ["completed", "completed", "cancelled"]
    assert by_turn[3][0]["reason"] == "stopped through POST /agents/TravelPlanner/cancel"
    assert by_turn[1][0]["text"] == "Plan a 2-day trip to Paris"
    for n, answer in ((1, answers[0]), (2, answers[1]), (3, text_of(stopped))):
        said = "".join(m["text"] for m in by_turn[n] if m["role"] == "assistant")
        assert said == answer, n  # the record holds what was streamed, the stopped turn's part too
        assert len({m["correlation_id"] for m in by_turn[n]}) == 1  # one run per turn
    calls = [c for m in by_turn[1] for c in m["contents"] if c["type"] == "function_call"]
    results = [c for m in by_turn[1] for c in m["contents"] if c["type"] == "function_result"]
    assert {c["name"] for c in calls} == {"get_weather_forecast", "get_local_events"}
    assert calls[0]["arguments"]["destination"] == "Paris"
    assert {r["call_id"] for r in results} == {c["call_id"] for c in calls} and all(r["result"] for r in results)
    assert by_turn[1][-1]["usage"]["output_token_count"] > 0  # on a turn's last message
    assert by_turn[1][0]["correlation_id"] == first["correlation_id"]
    assert by_turn[3][0]["correlation_id"] == third["correlation_id"]


@pytest.mark.parametrize(("session", "status"), [("never-seen-session", 404), ("bad%20key", 400)])
async def test_history_of_an_unknown_or_malformed_session_is_refused(
    http: httpx.AsyncClient, session: str, status: int
) -> None:
    response = await http.get(f"{HISTORY}/{session}")

    assert response.status_code == status
    assert response.json()["error"] and "\n" not in response.json()["error"]
