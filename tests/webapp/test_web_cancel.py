"""Stop over HTTP: `POST /agents/TravelPlanner/cancel/{session}` and the `cancelled` SSE event.

A real uvicorn server with its own embedded scheduler and in-process worker (see test_web.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.webapp.test_web import STREAM, Server, demo_worker, events_of, read_run, serve, start_run

CANCEL = "/agents/TravelPlanner/cancel"


@pytest.fixture(scope="module")
def slow_web(redis_url: str) -> Iterator[Server]:
    with serve(redis_url, demo_worker(DEMO_MODEL_TOKEN_DELAY_MS="20")) as server:
        yield server


@pytest.fixture
async def http(slow_web: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=slow_web.url, timeout=30) as client:
        yield client


async def test_stop_ends_the_run_with_a_cancelled_event_and_the_session_goes_on(http: httpx.AsyncClient) -> None:
    run = await start_run(http, "Plan a 3-day trip to Tokyo")
    params = {"cursor": run["cursor"], "correlation_id": run["correlation_id"]}
    async with http.stream("GET", f"{STREAM}/{run['session']}", params=params) as response:
        head = await events_of(response, limit=5)  # then this reader disconnects: the run goes on

    stopped = await http.post(f"{CANCEL}/{run['session']}")
    events = await read_run(http, run)
    again = await http.post(f"{CANCEL}/{run['session']}")
    next_events = await read_run(http, await start_run(http, "Plan a 1-day trip to Oslo", session=run["session"]))

    assert stopped.status_code == 200, stopped.text  # the disconnect above did not stop the run; this did
    assert stopped.json() == {"session": run["session"], "correlation_id": run["correlation_id"], "status": "cancelled"}
    kinds = [e.event for e in events]
    assert kinds[:4] == ["tool_call", "tool_call", "tool_result", "tool_result"] and kinds[-1] == "cancelled"
    assert [e.event for e in head[:4]] == kinds[:4]
    call = json.loads(events[0].data)
    assert call["name"] in ("get_weather_forecast", "get_local_events") and json.loads(call["arguments"])
    result = json.loads(events[2].data)
    assert result["call_id"] in {json.loads(e.data)["call_id"] for e in events[:2]} and result["result"]
    assert json.loads(events[-1].data) == {
        "correlation_id": run["correlation_id"],
        "reason": "stopped through POST /agents/TravelPlanner/cancel",
    }
    assert again.status_code == 409 and "no run in progress" in again.json()["error"]
    assert next_events[-1].event == "done" and json.loads(next_events[-1].data)["usage"]["output_tokens"] > 0


@pytest.mark.parametrize(("session", "status"), [("never-seen-session", 404), ("bad%20key", 400)])
async def test_stop_for_an_unknown_or_malformed_session_is_refused(
    http: httpx.AsyncClient, session: str, status: int
) -> None:
    response = await http.post(f"{CANCEL}/{session}")

    assert response.status_code == status
    assert response.json()["error"]
