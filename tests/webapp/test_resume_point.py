"""Where an SSE stream resumes: `Last-Event-ID` (a browser reconnecting) wins over `?cursor=`.

A reconnecting EventSource keeps its URL, with the cursor it was first given, and sends the id
of the last event it received as `Last-Event-ID`; honouring the stale cursor instead would
repeat every event since. The app runs in-process over ASGI without its lifespan (no worker, no
scheduler): its handler reads a stream written to the tests' real Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack

import httpx
import pytest

from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, entry_fields
from support.config import Settings
from support.services import Services
from support.sessions import new_session_key
from tests.streams import write_entries
from webapp.app import create_app, sse_frame
from webapp.shared_runs import SharedRuns
from webapp.stream_budget import StreamBudget

STREAM = "/agents/TravelPlanner/stream"


def no_worker(settings: Settings, services: Services, stack: ExitStack) -> None:
    """Never called: the lifespan does not run here."""


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, list[str]]]:
    """An HTTP client for the app, a session, and the entry ids of its stream: start, 4 tokens, done."""
    app = create_app({}, worker_setup=no_worker)
    session = new_session_key()
    async with RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=5) as handler:
        tokens = [entry_fields(TOKEN, "run-1", n, f"t{n}") for n in range(4)]
        ids = await write_entries(handler, session, [entry_fields(START, "run-1", 0), *tokens])
        ids += await write_entries(handler, session, [entry_fields(DONE, "run-1", 4, chunks=4)])
        app.state.handler, app.state.active_streams = handler, 0  # what the lifespan would set up
        app.state.readers, app.state.stream_budget = handler, StreamBudget(10)
        app.state.shared_runs = SharedRuns(handler, sse_frame)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
            yield http, session, ids


def event_ids(body: str) -> list[str]:
    return [line.removeprefix("id: ") for line in body.splitlines() if line.startswith("id: ")]


@pytest.mark.parametrize(
    ("cursor_at", "last_event_id_at", "first_event_at"),
    [
        (None, None, 1),  # from the start (the start marker itself is no event)
        (1, None, 2),  # ?cursor= alone: what follows it
        (None, 3, 4),  # Last-Event-ID alone: what follows it
        (1, 3, 4),  # both: Last-Event-ID wins
        (3, 1, 2),  # both, even when it is the older one: it is what the browser last received
    ],
    ids=["neither", "cursor", "last-event-id", "both", "both, header older"],
)
async def test_last_event_id_wins_over_the_cursor(
    stream: tuple[httpx.AsyncClient, str, list[str]],
    cursor_at: int | None,
    last_event_id_at: int | None,
    first_event_at: int,
) -> None:
    http, session, ids = stream
    params = {"cursor": ids[cursor_at]} if cursor_at is not None else {}
    headers = {"Last-Event-ID": ids[last_event_id_at]} if last_event_id_at is not None else {}

    response = await http.get(f"{STREAM}/{session}", params=params, headers=headers)

    assert response.status_code == 200
    assert event_ids(response.text) == ids[first_event_at:]  # exactly what follows, through the done event
