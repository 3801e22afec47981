"""Every way a stream request can fail gives its place in the stream budget back, and answers JSON with a status.

What issue 20's probe found: an AG-UI start that failed unexpectedly (50,000 nested `[`, Redis down)
answered a bare 500 and kept its stream for good: the budget shrank by one each time until every
stream got 503. Each case below checks the answer and that the budget is whole again afterwards.

    uv run pytest tests/webapp/test_web_errors.py -q
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from redis_stream_response_handler import stream_key
from tests.reliability.test_redis_outage import RestartableRedis
from tests.webapp.test_ag_ui import AG_UI, run_input
from tests.webapp.test_web import RUN, STREAM, Server, eventually, serve
from tests.webapp.test_web_guards import no_worker

DEEPLY_NESTED = b"[" * 50_000  # json.loads raises RecursionError, not JSONDecodeError
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def web(redis_url: str) -> Iterator[Server]:
    with serve(redis_url, no_worker, WEB_MAX_STREAMS="3") as server:
        yield server


@pytest.fixture
async def http(web: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
        yield client


def streams_open(web: Server) -> int:
    return web.app.state.stream_budget.open


@pytest.mark.parametrize("path", [RUN, AG_UI])
@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [(b"{not json", None, "must be JSON"), (DEEPLY_NESTED, 400, "nested too deeply")],
    ids=["bad-json", "deep-nesting"],
)
async def test_a_body_that_is_not_usable_json_is_a_json_4xx_and_holds_no_stream(
    web: Server, http: httpx.AsyncClient, path: str, body: bytes, status: int | None, reason: str
) -> None:
    for _ in range(5):  # more times than the budget: a leak would show as a 503
        response = await http.post(path, content=body, headers=JSON)
        assert response.status_code == (status or (400 if path == RUN else 422)), response.text
        assert reason in response.json()["error"]
    assert streams_open(web) == 0


async def test_a_client_gone_mid_request_gives_its_stream_back(web: Server) -> None:
    url = urlsplit(web.url)
    for _ in range(5):
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        head = f"POST {AG_UI} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: 1000\r\n\r\n".encode() + b'{"threadId": ')  # the rest never comes
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        del reader
    await eventually(lambda: streams_open(web) == 0, "every abandoned request gave its stream back")


async def test_redis_down_is_a_503_with_retry_after_and_holds_no_stream() -> None:
    redis_server = RestartableRedis()
    try:
        with serve(redis_server.url, no_worker, WEB_MAX_STREAMS="3") as web:
            redis_server.stop()
            async with httpx.AsyncClient(base_url=web.url, timeout=60) as http:
                for attempt in range(5):
                    thread = f"redis-down-{attempt}"
                    for response in (
                        await http.post(AG_UI, json=run_input(thread, "run-1")),
                        await http.post(RUN, json={"message": "Plan a 2-day trip to Oslo"}),
                    ):
                        assert response.status_code == 503, response.text
                        assert "Redis is unavailable" in response.json()["error"]
                        assert response.headers["Retry-After"].isdigit()
                assert streams_open(web) == 0
                assert (
                    await http.get(f"{STREAM}/redis-down-0", headers={"Accept": "text/event-stream"})
                ).status_code == 200
    finally:
        redis_server.stop()


async def test_a_cursor_past_the_end_of_the_stream_is_a_400_at_once(
    web: Server, http: httpx.AsyncClient, redis_url: str
) -> None:
    session = f"future-cursor-{uuid.uuid4().hex}"
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:  # one entry; the cursor: a day later
        newest = str(client.xadd(stream_key(session), {"kind": "heartbeat", "correlation_id": "run-1"}))
    future = f"{int(time.time() * 1000) + 86_400_000}-0"
    refused = await http.get(f"{STREAM}/{session}", params={"cursor": future})
    assert refused.status_code == 400 and "past the end of the stream" in refused.json()["error"]
    assert streams_open(web) == 0
    async with http.stream("GET", f"{STREAM}/{session}", headers={"Last-Event-ID": newest}) as resumed:
        assert resumed.status_code == 200  # ... while the newest entry's own id is a valid place to resume
