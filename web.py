"""The pattern in a browser: an HTTP API and a page that stream the answer as Server-Sent Events.

    uv run web.py                 # then open http://127.0.0.1:8000
    uv run web.py --port 8001

Like sample.py it needs nothing configured: it starts (or finds) the scheduler
and Redis and runs a durable worker in this process, all in the app's lifespan.

    POST /agents/TravelPlanner/run                    {"message": "...", "session": optional}
         -> 202 {"session": key, "correlation_id": id, "cursor": entry id taken BEFORE the run}
    GET  /agents/TravelPlanner/stream/{session}?cursor=...&correlation_id=...
         -> text/event-stream: one event per stream entry after the cursor;
            `id` = the Redis entry id, `event` = message | restart | done | error
    GET  /agents/TravelPlanner/answer/{session}/{correlation_id}
         -> {"text": ...}: the answer the durable entity recorded (404 until it exists)
    GET  /                                             -> static/index.html

Watch the raw events in a terminal:

    curl -s -X POST localhost:8000/agents/TravelPlanner/run -d '{"message": "Plan a 2-day trip to Oslo"}'
    curl -N "localhost:8000/agents/TravelPlanner/stream/<session>?cursor=<cursor>&correlation_id=<correlation_id>"

An SSE `id` is a Redis entry id, so the browser's automatic reconnect (which
sends `Last-Event-ID`) and a resumed read (`?cursor=`) both continue exactly
after the last event delivered: no gap, no duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from client import (
    get_client,
    get_travel_planner,
    message_problem,
    new_session_key,
    session_for,
    start_run,
)
from config import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, ConfigError, Settings, fail, load_settings, setup_logging
from durable_record import wait_for_recorded_answer
from local_services import Services, provide_services
from redis_stream_response_handler import (
    DONE,
    ERROR,
    RESTART,
    START,
    RedisStreamResponseHandler,
    StreamChunk,
    validate_conversation_id,
    validate_cursor,
)
from sample import start_worker_in_process

STATIC = Path(__file__).resolve().parent / "static"
RETRY_MILLISECONDS = 1000  # how soon a browser's EventSource reconnects after a dropped connection
PING_SECONDS = 10  # keep-alive comment while no entry arrives, so proxies keep the connection open
_CORRELATION_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")

WorkerSetup = Callable[[Settings, Services, ExitStack], None]


class BadRequestError(Exception):
    """A request the client must fix; its message becomes the JSON `error`."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def create_app(
    environ: Mapping[str, str] | None = None, worker_setup: WorkerSetup = start_worker_in_process
) -> Starlette:
    """The web app; `environ` and `worker_setup` let tests choose the services and the demo model."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with ExitStack() as stack:
            try:
                settings = load_settings(environ)
                # On this thread, not in a thread pool: a private redis-server is
                # tied to the thread that started it and stops when that thread ends.
                services = provide_services(settings, stack, role="sample")
                worker_setup(settings, services, stack)
            except (ConfigError, ValueError) as error:
                app.state.startup_error = str(error)  # main() reports it as one `error:` line
                raise
            async with RedisStreamResponseHandler.from_url(
                services.redis_url, idle_timeout_seconds=settings.idle_timeout_seconds
            ) as handler:
                app.state.handler = handler
                app.state.client = get_client(settings, services)
                app.state.agent = get_travel_planner(app.state.client)
                app.state.active_streams = 0  # open SSE responses; tests check disconnects bring it back to 0
                yield

    routes = [
        Route("/", index),
        Route("/agents/TravelPlanner/run", run_agent, methods=["POST"]),
        Route("/agents/TravelPlanner/stream/{session}", stream_events),
        Route("/agents/TravelPlanner/answer/{session}/{correlation_id}", recorded_answer),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={BadRequestError: bad_request})
    app.state.startup_error = None
    return app


async def bad_request(request: Request, error: Exception) -> Response:
    status = error.status_code if isinstance(error, BadRequestError) else 400
    return JSONResponse({"error": str(error)}, status_code=status)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def run_agent(request: Request) -> Response:
    """Start a run without waiting for it; answer with where its events will appear."""
    message, session_key = await _run_request(request)
    handler: RedisStreamResponseHandler = request.app.state.handler
    # The cursor is taken BEFORE the run starts, so the stream from it holds this turn and nothing older.
    cursor = await handler.last_entry_id(session_key)
    try:
        # start_run is a blocking gRPC call: keep it off the event loop.
        correlation_id = await asyncio.to_thread(start_run, request.app.state.agent, message, session_for(session_key))
    except grpc.RpcError as error:
        detail = f"{error.code().name} {error.details()}"  # type: ignore[attr-defined]
        return JSONResponse({"error": f"the scheduler failed the request: {detail}"}, status_code=502)
    return JSONResponse({"session": session_key, "correlation_id": correlation_id, "cursor": cursor}, status_code=202)


async def _run_request(request: Request) -> tuple[str, str]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequestError('the body must be JSON: {"message": "...", "session": optional}') from None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        raise BadRequestError('the body must be a JSON object with a "message" string')
    session = body.get("session")
    if session is not None and not isinstance(session, str):
        raise BadRequestError('"session" must be a string (a key returned by an earlier run)')
    problem = message_problem(body["message"])
    if problem is not None:
        raise BadRequestError(problem, status_code=422)
    return body["message"], _checked(validate_conversation_id, session) if session else new_session_key()


async def stream_events(request: Request) -> Response:
    """The run's entries after the cursor as SSE; `Last-Event-ID` (a browser reconnecting) wins over `?cursor=`."""
    session_key = _checked(validate_conversation_id, request.path_params["session"])
    raw_cursor = request.headers.get("last-event-id") or request.query_params.get("cursor")
    cursor = _checked(validate_cursor, raw_cursor) if raw_cursor else None
    correlation_id = request.query_params.get("correlation_id") or None
    if correlation_id is not None and not _CORRELATION_ID.match(correlation_id):
        raise BadRequestError(f"correlation_id must be letters, digits and '-' (got {correlation_id!r})")
    events = sse_events(request.app, session_key, cursor, correlation_id)
    return EventSourceResponse(events, ping=PING_SECONDS)


async def sse_events(
    app: Starlette, session_key: str, cursor: str | None, correlation_id: str | None
) -> AsyncIterator[ServerSentEvent]:
    """One SSE event per chunk of the run, ending after its done or error event.

    When the client disconnects, sse-starlette cancels this generator while it
    waits in XREAD BLOCK; the cancellation ends the Redis read, and `finally`
    records that the stream is gone.
    """
    handler: RedisStreamResponseHandler = app.state.handler
    app.state.active_streams += 1
    try:
        # No data, so no event for the page: just the reconnect delay, sent at once.
        yield ServerSentEvent(comment="streaming", retry=RETRY_MILLISECONDS)
        async for chunk in handler.read_stream(session_key, cursor, correlation_id=correlation_id):
            event = to_event(chunk)
            if event is not None:
                yield event
    finally:
        app.state.active_streams -= 1


def to_event(chunk: StreamChunk) -> ServerSentEvent | None:
    """The SSE event for one chunk (None for a start marker, which the page has no use for).

    Every event carries data, because EventSource drops an event whose data is
    empty. Text with newlines becomes several `data:` lines, which the browser
    joins back with "\\n" (sse-starlette does the splitting).
    """
    if chunk.kind == START:
        return None
    if chunk.kind == DONE:
        data = json.dumps({"correlation_id": chunk.correlation_id, "chunks": chunk.chunks})
        return ServerSentEvent(data, event="done", id=chunk.entry_id)
    if chunk.kind == ERROR:
        # EventSource also fires an "error" event of its own when the connection drops; the page
        # tells the two apart by this one's data.
        return ServerSentEvent(chunk.error or "the run failed", event="error", id=chunk.entry_id)
    if chunk.kind == RESTART:
        return ServerSentEvent("the answer restarted", event="restart", id=chunk.entry_id)
    return ServerSentEvent(chunk.text, event="message", id=chunk.entry_id)


async def recorded_answer(request: Request) -> Response:
    """The answer the durable entity recorded for one run: what the streamed text must equal."""
    session_key = _checked(validate_conversation_id, request.path_params["session"])
    correlation_id = request.path_params["correlation_id"]
    if not _CORRELATION_ID.match(correlation_id):
        raise BadRequestError(f"correlation_id must be letters, digits and '-' (got {correlation_id!r})")
    client: DurableTaskSchedulerClient = request.app.state.client
    answer = await asyncio.to_thread(wait_for_recorded_answer, client, session_key, correlation_id, 5.0)
    if answer is None:
        return JSONResponse({"error": "no recorded answer (yet) for this run"}, status_code=404)
    return JSONResponse({"session": session_key, "correlation_id": correlation_id, "text": answer.text})


def _checked(validate: Callable[[str], str], value: str) -> str:
    try:
        return validate(value)
    except ValueError as error:
        raise BadRequestError(str(error)) from None


class _HideReportedStartupFailure(logging.Filter):
    """Drop uvicorn's traceback of a startup failure that main() reports as one `error:` line."""

    def __init__(self, app: Starlette) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return self.app.state.startup_error is None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="web.py", description="Serve the TravelPlanner over HTTP and SSE.")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default: 8000)")
    args = parser.parse_args(argv)
    setup_logging()
    if not 1 <= args.port <= 65_535:
        return fail(f"--port must be a TCP port from 1 to 65535 (got {args.port})", EXIT_USAGE)
    try:
        load_settings()  # a bad variable fails here, before anything starts (the lifespan reads them again)
    except ConfigError as error:
        return fail(str(error), EXIT_USAGE)
    app = create_app()
    logging.getLogger("uvicorn.error").addFilter(_HideReportedStartupFailure(app))
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False))
    with contextlib.suppress(SystemExit):  # uvicorn exits this way when the lifespan (or binding the port) fails
        server.run()
    if app.state.startup_error is not None:
        return fail(app.state.startup_error, EXIT_USAGE)
    return EXIT_OK if server.started else EXIT_RUN_FAILED


class _Server(uvicorn.Server):
    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        # uvicorn's own "running on" line is an INFO log, hidden at the sample's WARNING level.
        if self.started:
            url = f"http://{self.config.host}:{self.config.port}"
            print(f"[web] open {url} (Ctrl+C to stop)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
