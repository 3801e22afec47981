"""The web app under abuse: other hosts, cross-site writes, huge bodies, too many streams, slow polls.

Each case is what issue 10 reproduced against the defaults: a POST from another origin (or as
text/plain, or a form) started a run; any Host header was accepted (DNS rebinding); a 400 MB body
was read into memory before the 422; past 100 open streams `POST /run` failed with 500; and 30
concurrent `GET /answer` polls held the thread pool so `POST /run` waited 24 s.

    uv run pytest tests/webapp/test_web_guards.py -q
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from support.config import Settings
from support.services import Services
from tests.webapp.test_ag_ui import AG_UI, run_input
from tests.webapp.test_web import RUN, STREAM, Server, eventually, serve
from webapp.ag_ui import record_key
from webapp.guards import MAX_BODY_BYTES

BUDGET = 2
ANSWER = "/agents/TravelPlanner/answer"


def no_worker(settings: Settings, services: Services, stack: ExitStack) -> None:
    """Runs are queued and never start: these tests are about the HTTP edge."""


@pytest.fixture(scope="module")
def web(redis_url: str) -> Iterator[Server]:
    with serve(redis_url, no_worker, WEB_MAX_STREAMS=str(BUDGET)) as server:
        yield server


@pytest.fixture
async def http(web: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
        yield client


async def test_a_host_outside_the_allow_list_is_refused(http: httpx.AsyncClient) -> None:
    rebound = await http.get("/", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 400 and "WEB_ALLOWED_HOSTS" in rebound.json()["error"]
    assert (await http.get("/", headers={"Host": "localhost:8000"})).status_code == 200


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"Origin": "https://evil.example", "Content-Type": "application/json"}, '{"message": "hi"}', 403),
        ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, '{"message": "hi"}', 403),
        ({"Content-Type": "text/plain"}, '{"message": "hi"}', 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, '{"message": "hi"}', 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, '{"message": "hi"}', 415),
        ({}, '{"message": "hi"}', 415),  # a body with no type at all
    ],
    ids=["other-origin", "cross-site", "text-plain", "form", "multipart", "untyped-body"],
)
async def test_a_cross_site_write_is_refused(
    http: httpx.AsyncClient, headers: dict[str, str], content: str, status: int
) -> None:
    response = await http.post(RUN, content=content, headers=headers)
    assert response.status_code == status, response.text


async def test_an_origin_on_the_same_host_but_another_port_or_scheme_is_refused(
    web: Server, http: httpx.AsyncClient
) -> None:
    # Same host name, different origin: a dev server on another port, or the https twin, may not POST here.
    parts = urlsplit(web.url)
    for origin in (f"http://{parts.hostname}:3000", f"https://{parts.netloc}"):
        response = await http.post(RUN, json={"message": "hi"}, headers={"Origin": origin})
        assert response.status_code == 403, (origin, response.text)


async def test_a_same_origin_write_is_accepted(web: Server, http: httpx.AsyncClient) -> None:
    response = await http.post(RUN, json={"message": "Plan a 2-day trip to Oslo"}, headers={"Origin": web.url})
    assert response.status_code == 202, response.text


async def test_a_body_over_the_limit_is_413_before_it_is_read(web: Server, http: httpx.AsyncClient) -> None:
    # Only the head is sent: the 413 comes back without waiting for (or reading) a byte of the body.
    host, port = web.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {RUN} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {400 * 1024 * 1024}\r\n\r\n".encode()
    )
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    writer.close()
    assert status_line.split()[1] == b"413", status_line

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY_BYTES // 65_536 + 2):
            yield b" " * 65_536

    streamed = await http.post(RUN, content=chunked(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    message = json.dumps({"message": "é" * 32_000})  # the largest message, escaped: under the limit
    assert (await http.post(RUN, content=message, headers={"Content-Type": "application/json"})).status_code == 202


async def test_streams_past_the_budget_get_503_and_runs_still_start(web: Server, http: httpx.AsyncClient) -> None:
    async with AsyncExitStackOfStreams(http) as streams:
        for _ in range(BUDGET):
            assert (await streams.open("budget-test")).status_code == 200
        refused = await http.get(f"{STREAM}/budget-test")
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert "WEB_MAX_STREAMS" in refused.json()["error"]
        assert (await http.post(RUN, json={"message": "Plan a 2-day trip to Oslo"})).status_code == 202
        await streams.close_one()
        await eventually(lambda: web.app.state.stream_budget.open < BUDGET, "the closed stream gave its place back")
        assert (await streams.open("budget-test")).status_code == 200


async def test_waiting_for_recorded_answers_does_not_hold_up_new_runs(http: httpx.AsyncClient) -> None:
    # Each poll waits 5 s for a record that never comes; before the fix each held a thread of the
    # default pool (6 threads on 2 cores) all that time, and POST /run queued behind them.
    polls = [asyncio.create_task(http.get(f"{ANSWER}/poll-test/run-{n}")) for n in range(12)]
    await asyncio.sleep(0.5)
    started = await http.post(RUN, json={"message": "Plan a 2-day trip to Oslo"})
    assert started.status_code == 202
    assert not any(poll.done() for poll in polls), "POST /run waited for the /answer polls"
    for poll in polls:  # each would end in a 404 after 5 s; no need to wait for that
        poll.cancel()
    await asyncio.gather(*polls, return_exceptions=True)


async def test_ag_ui_streams_count_against_the_same_budget_and_a_refused_one_starts_nothing(
    http: httpx.AsyncClient, redis_url: str
) -> None:
    async with AsyncExitStackOfStreams(http) as streams:
        for _ in range(BUDGET):
            assert (await streams.open("budget-ag-ui")).status_code == 200
        refused = await http.post(AG_UI, json=run_input("budget-ag-ui-thread", "run-1"))
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        with redis.Redis.from_url(redis_url) as client:  # the app's own client belongs to the server's loop
            assert client.exists(record_key("budget-ag-ui-thread", "run-1")) == 0
        resumed = await http.get(f"{AG_UI}/budget-ag-ui-thread/runs/run-1")
        assert resumed.status_code in (404, 503)  # unknown run (nothing was started), or still over budget


class AsyncExitStackOfStreams:
    """Open SSE streams held open by the test, closed when it ends."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.responses: list[httpx.Response] = []

    async def open(self, session: str) -> httpx.Response:
        response = await self.http.send(self.http.build_request("GET", f"{STREAM}/{session}"), stream=True)
        if response.status_code == 200:
            self.responses.append(response)
        return response

    async def close_one(self) -> None:
        await self.responses.pop().aclose()

    async def __aenter__(self) -> AsyncExitStackOfStreams:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for response in self.responses:
            await response.aclose()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", RUN, {"message": "hi", "session": "evil\n"}),
        ("GET", f"{STREAM}/evil%0A", None),
        ("GET", f"{STREAM}/s?cursor=99999999999999999999-0", None),  # 20 digits: above 2**64-1
        ("GET", f"{STREAM}/s?cursor=%D9%A1-%D9%A0", None),  # Arabic-Indic digits
        ("GET", f"{STREAM}/s?correlation_id=abc%0A", None),
    ],
    ids=["session-newline", "stream-session-newline", "cursor-over-64-bits", "cursor-non-ascii", "run-id-newline"],
)
async def test_input_that_only_an_unanchored_or_unicode_pattern_accepts_is_a_400(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, str] | None
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == 400, response.text


class _MeetingAgent:
    """The app's agent, whose `run` first waits until `parties` runs are being started at the same moment."""

    def __init__(self, agent: Any, parties: int) -> None:
        self.agent, self.barrier = agent, threading.Barrier(parties, timeout=30)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.barrier.wait()  # BrokenBarrierError (a 500) if the others are queued behind a full pool
        return self.agent.run(*args, **kwargs)


async def test_forty_runs_start_at_the_same_time_not_behind_the_default_thread_pool(
    web: Server, http: httpx.AsyncClient
) -> None:
    # Starting a run is a blocking gRPC call on a thread. The loop's default pool has min(32, CPUs + 4)
    # threads (6 on 2 cores): forty simultaneous starts could never all be under way at once.
    agent = web.app.state.agent
    web.app.state.agent = _MeetingAgent(agent, parties=40)
    try:
        started = await asyncio.gather(
            *(http.post(RUN, json={"message": f"Plan a {n % 5 + 1}-day trip to Oslo"}) for n in range(40))
        )
    finally:
        web.app.state.agent = agent
    assert [response.status_code for response in started] == [202] * 40
