"""web.py over real HTTP: SSE framing, resuming with Last-Event-ID, error events, 4xx, disconnects.

Each app runs in a real uvicorn server on a free loopback port (in a thread),
with its own embedded scheduler and in-process worker and the tests' private
Redis, so the events cross a real socket exactly as a browser's would.

    uv run pytest tests/webapp/test_web.py -q
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette

from redis_stream_response_handler import DONE, RESTART, START, RedisStreamResponseHandler, entry_fields, stream_key
from support.config import Settings
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from support.services import Services
from tests.streams import write_entries
from webapp.app import WorkerSetup, create_app
from webapp.server import uvicorn_config
from worker import start_worker

RUN = "/agents/TravelPlanner/run"
STREAM = "/agents/TravelPlanner/stream"


@dataclass
class Event:
    """One SSE event as a client parses it (spec: "Interpreting an event stream")."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    raw: list[str] = field(default_factory=list)


@dataclass
class Server:
    url: str
    app: Starlette


def demo_worker(**model_env: str) -> WorkerSetup:
    """Like worker.start_worker, with the demo model configured by `model_env`."""

    def start(settings: Settings, services: Services, stack: ExitStack) -> None:
        start_worker(settings, services, stack, environ={"DEMO_MODEL_TOKEN_DELAY_MS": "2", **model_env})

    return start


@contextmanager
def serve(redis_url: str, worker_setup: WorkerSetup, **settings: str) -> Iterator[Server]:
    """web.py's app in uvicorn on a free port, with a fresh embedded scheduler (nothing answers on its local port)."""
    environ = {"REDIS_CONNECTION_STRING": redis_url, "LOCAL_SCHEDULER_PORT": str(free_port()), **settings}
    app = create_app(environ, worker_setup)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, port, log_level="warning"))  # web.py's settings
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def events_of(response: httpx.Response, limit: int | None = None) -> list[Event]:
    """Parse SSE from `response` until it ends (or `limit` message events arrived)."""
    events: list[Event] = []
    current, data_lines = Event(), []
    async for line in response.aiter_lines():
        if line == "":  # a blank line dispatches the event, if it has data (the spec drops data-less ones)
            if data_lines:
                current.data = "\n".join(data_lines)
                events.append(current)
                if limit is not None and len([e for e in events if e.event == "message"]) == limit:
                    break
            current, data_lines = Event(), []
            continue
        current.raw.append(line)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
    return events


async def start_run(http: httpx.AsyncClient, message: str, session: str | None = None) -> dict[str, str]:
    response = await http.post(RUN, json={"message": message, **({"session": session} if session else {})})
    assert response.status_code == 202, response.text
    return response.json()


async def read_run(http: httpx.AsyncClient, run: dict[str, str], **headers: str) -> list[Event]:
    params = {"cursor": run["cursor"], "correlation_id": run["correlation_id"]}
    async with http.stream("GET", f"{STREAM}/{run['session']}", params=params, headers=headers) as response:
        assert response.status_code == 200
        return await events_of(response)


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait (up to 10 s, generous on a busy CI machine) until `predicate` holds."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def redis_clients(redis_url: str) -> list[tuple[str, str]]:
    with redis.Redis.from_url(redis_url) as client:
        return [(c["cmd"], c["flags"]) for c in client.client_list()]


async def test_events_follow_the_sse_framing(web: Server, http: httpx.AsyncClient, redis_url: str) -> None:
    session = f"framing-{uuid.uuid4().hex}"
    texts = ["Hello ", "two\nlines", "\n\n", "end"]
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        entries = [entry_fields(START, "run-1", 0), entry_fields(RESTART, "run-1", 0)]
        entries += [entry_fields("token", "run-1", n, text) for n, text in enumerate(texts)]
        ids = await write_entries(handler, session, [*entries, entry_fields(DONE, "run-1", 4, chunks=4)])

    async with http.stream("GET", f"{STREAM}/{session}", params={"cursor": "0-0"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    async with http.stream("GET", f"{STREAM}/{session}", params={"cursor": "0-0"}) as response:
        events = await events_of(response)

    assert "retry: 1000\r\n" in raw  # the reconnect hint comes first, before any event
    # Multi-line text: one data: line per line, each field on its own line, a blank line after.
    assert f"id: {ids[3]}\r\nevent: message\r\ndata: two\r\ndata: lines\r\n\r\n" in raw
    assert f"id: {ids[4]}\r\nevent: message\r\ndata: \r\ndata: \r\ndata: \r\n\r\n" in raw
    assert [e.event for e in events] == ["restart", "message", "message", "message", "message", "done"]
    assert [e.id for e in events] == ids[1:]  # the start marker is skipped; ids are the Redis entry ids
    assert [e.data for e in events[1:5]] == texts  # the client rebuilds the exact text, newlines included
    assert json.loads(events[-1].data) == {"correlation_id": "run-1", "chunks": 4, "missing": 0}


async def test_resuming_with_last_event_id_gives_exactly_the_rest(web: Server, http: httpx.AsyncClient) -> None:
    run = await start_run(http, "Plan a 2-day trip to Lisbon")
    params = {"cursor": run["cursor"], "correlation_id": run["correlation_id"]}
    async with http.stream("GET", f"{STREAM}/{run['session']}", params=params) as response:
        first = await events_of(response, limit=10)  # then the connection drops
    # A reconnecting EventSource keeps its URL (the old cursor) and sends Last-Event-ID, which wins.
    rest = await read_run(http, run, **{"Last-Event-ID": first[-1].id or ""})
    everything = await read_run(http, run)

    assert rest[-1].event == "done"
    assert [e.id for e in first + rest] == [e.id for e in everything]  # no gap, no duplicate
    streamed = "".join(e.data for e in first + rest if e.event == "message")
    answer = await http.get(f"/agents/TravelPlanner/answer/{run['session']}/{run['correlation_id']}")
    assert answer.status_code == 200
    assert streamed == answer.json()["text"]
    assert "Lisbon" in streamed

    # The next turn's cursor is where this one ended: its stream holds only the new answer.
    second = await start_run(http, "Now plan a 1-day trip to Oslo", session=run["session"])
    assert second["session"] == run["session"] and second["cursor"] == everything[-1].id
    second_text = "".join(e.data for e in await read_run(http, second) if e.event == "message")
    assert "Oslo" in second_text and "Lisbon" not in second_text


async def test_a_failing_run_ends_with_an_error_event(redis_url: str) -> None:
    with serve(redis_url, demo_worker(DEMO_MODEL_FAIL_AFTER_TOKENS="3")) as failing:
        async with httpx.AsyncClient(base_url=failing.url, timeout=30) as http:
            events = await read_run(http, await start_run(http, "Plan a 2-day trip to Paris"))

    assert [e.event for e in events] == ["tool_call"] * 2 + ["tool_result"] * 2 + ["message"] * 3 + ["error"]
    assert "Demo model failure" in events[-1].data


async def test_a_recorded_run_whose_done_marker_never_arrived_ends_with_done_from_the_record(
    web: Server, http: httpx.AsyncClient, redis_url: str
) -> None:
    """The worker died after the scheduler recorded the run, before its done marker's XADD: readers hear silence.

    Default settings: the read waits out the default idle timeout (20 s), then the app asks the record, which
    has the answer: a `done` event that points there (the page then shows GET /answer), not "the worker may
    have died". The stream keeps the run's first half only.
    """
    run = await start_run(http, "Plan a 2-day trip to Lyon")
    complete = await read_run(http, run)
    half = len(complete) // 2
    with redis.Redis.from_url(redis_url) as client:  # the second half and the done marker never reached Redis
        client.xdel(stream_key(run["session"]), *[event.id or "" for event in complete[half:]])

    events = await read_run(http, run)

    assert [e.id for e in events[:-1]] == [e.id for e in complete[:half]]
    assert events[-1].event == "done" and "error" not in [e.event for e in events]
    assert json.loads(events[-1].data) == {
        "correlation_id": run["correlation_id"],
        "chunks": None,
        "missing": None,
        "from_record": True,
    }
    answer = await http.get(f"/agents/TravelPlanner/answer/{run['session']}/{run['correlation_id']}")
    assert answer.json()["text"] == "".join(e.data for e in complete if e.event == "message")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (f"{STREAM}/bad%20key", {}),
        (f"{STREAM}/{'k' * 129}", {}),
        (f"{STREAM}/abc?cursor=not-an-id", {}),
        (f"{STREAM}/abc?cursor=0-0", {"Last-Event-ID": "1-2-3"}),
        (f"{STREAM}/abc?correlation_id=a%0Ab", {}),
    ],
)
async def test_a_bad_stream_request_is_a_400_with_one_line(
    http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    response = await http.get(path, headers=headers)
    assert response.status_code == 400
    assert "\n" not in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"not json", 400, "must be JSON"),
        (b'["a list"]', 400, '"message" string'),
        (b'{"message": 3}', 400, '"message" string'),
        (b'{"message": "hi", "session": "../../etc"}', 400, "session"),
        (b'{"message": "   "}', 422, "the message is empty"),
        (json.dumps({"message": "x" * 32_001}).encode(), 422, "the limit is 32000"),
    ],
)
async def test_a_bad_run_request_is_refused(http: httpx.AsyncClient, body: bytes, status: int, reason: str) -> None:
    response = await http.post(RUN, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert reason in error and "\n" not in error
    assert "-m" not in error  # the command line's fix means nothing to an HTTP caller


def blocked_readers(redis_url: str) -> int:
    """Connections parked in XREAD BLOCK on the tests' Redis."""
    with redis.Redis.from_url(redis_url) as client:
        return sum(1 for c in client.client_list() if c["cmd"] == "xread" and "b" in c["flags"])


async def test_a_disconnected_reader_leaves_the_hub_and_its_stream_is_no_longer_read() -> None:
    # A Redis of its own: the test counts blocked reads (CLIENT LIST), which no other test's client may add to.
    with PrivateRedisServer(free_port()) as redis_server, serve(redis_server.url, demo_worker()) as web:
        async with httpx.AsyncClient(base_url=web.url, timeout=30) as http:
            await disconnect_three_times(web, http, redis_server.url)


async def disconnect_three_times(web: Server, http: httpx.AsyncClient, redis_url: str) -> None:
    hub = web.app.state.hub  # webapp/stream_hub.py: every reader of the web process goes through it
    session = f"nobody-writes-{uuid.uuid4().hex}"  # the reader waits on the hub until the client goes
    for _ in range(3):
        async with http.stream("GET", f"{STREAM}/{session}") as response:
            # Held: a line iterator dropped mid-stream is finalized (aclose), which closes the response and its
            # connection at once, a disconnect racing the reader's join (this test failed 1 run in 4 that way).
            lines = response.aiter_lines()
            async for line in lines:
                if line == "":
                    break  # the retry hint arrived: the response is streaming
            await eventually(
                lambda: hub.readers == 1 and stream_key(session) in hub.streams, "the reader joined the hub"
            )
            assert web.app.state.active_streams == 1
        # Leaving the block closed the connection mid-stream: the reader's subscription is released...
        await eventually(lambda: web.app.state.active_streams == 0, "the SSE generator finishes")
        await eventually(lambda: hub.readers == 0 and not hub.streams, "the reader left the hub")
        # ... and the hub stops reading a stream nobody reads (its XREAD returns, and none is sent again).
        await eventually(lambda: blocked_readers(redis_url) == 0, "the hub no longer reads the stream")


async def test_many_sse_readers_of_each_run_get_the_same_text_over_a_few_redis_connections() -> None:
    """Issue 20: readers share the hub's connections; a Redis connection per reader held 204 for 1,000 readers."""
    with (
        PrivateRedisServer(free_port()) as redis_server,
        # 5 s before each itinerary's first word: no run can end (and close its readers) before all 120 are
        # streaming, which on a busy CI machine took longer than the shortest run's second of words.
        serve(
            redis_server.url, demo_worker(DEMO_MODEL_TOKEN_DELAY_MS="20", DEMO_MODEL_FIRST_TOKEN_DELAY_MS="5000")
        ) as web,
    ):
        async with httpx.AsyncClient(base_url=web.url, timeout=60, limits=httpx.Limits(max_connections=None)) as http:
            runs = [await start_run(http, f"Plan a {days}-day trip to Oslo") for days in (1, 2, 3)]
            readers = [asyncio.ensure_future(read_run(http, run)) for run in runs for _ in range(40)]
            # Readers of one run from one cursor share one read of the hub (webapp/shared_runs.py): 3 hub readers.
            await eventually(lambda: web.app.state.active_streams == len(readers), "every reader is streaming")
            held = len(redis_clients(redis_server.url))
            events = await asyncio.gather(*readers)

    texts = ["".join(e.data for e in run_events if e.event == "message") for run_events in events]
    for index in range(len(runs)):
        assert len(set(texts[index * 40 : (index + 1) * 40])) == 1 and texts[index * 40]
        assert all(run_events[-1].event == "done" for run_events in events)
    assert held <= 40  # the whole stack (web app, hub, worker) for 120 readers; before the hub, one more per reader
