"""The web app: an HTTP API that starts runs, and Server-Sent Events that stream (and resume) their answers.

Run it with `uv run web.py` (webapp/server.py). Like sample.py it needs nothing configured: it
starts (or finds) the scheduler and Redis and runs a durable worker in this process, all in the
app's lifespan.

    POST /agents/TravelPlanner/run                    {"message": "...", "session": optional}
         -> 202 {"session": key, "correlation_id": id, "cursor": entry id taken BEFORE the run}
    GET  /agents/TravelPlanner/stream/{session}?cursor=...&correlation_id=...
         -> text/event-stream: one event per stream entry after the cursor (the entry kinds and fields:
            redis_stream_response_handler.py); `id` = the Redis entry id, `event` = message (a token) |
            tool_call | tool_result | restart | queued | done | error | cancelled (see `to_event`); a run that
            ended without its done marker but is in the durable record ends with `done` and `"from_record": true`
    POST /agents/TravelPlanner/cancel/{session}       -> stop the session's current run (webapp/cancel.py)
    GET  /agents/TravelPlanner/answer/{session}/{correlation_id}
         -> {"text": ...}: the answer the durable entity recorded (404 until it exists)
    GET  /agents/TravelPlanner/history/{session}
         -> [{"turn", "correlation_id", "role", "text", "contents", "status", ...}, ...]: the conversation the
            durable entity recorded, one object per message, as `client.py --history --json` prints it
            (reliability/conversation_record.py); 404 for an unknown session. The page restores its turns from it.
    GET  /                                             -> static/index.html

Watch the raw events in a terminal:

    curl -s localhost:8000/agents/TravelPlanner/run -H "Content-Type: application/json" \
         -d '{"message": "Plan a 2-day trip to Oslo"}'
    curl -N "localhost:8000/agents/TravelPlanner/stream/<session>?cursor=<cursor>&correlation_id=<correlation_id>"

An SSE `id` is a Redis entry id, so the browser's automatic reconnect (which
sends `Last-Event-ID`) and a resumed read (`?cursor=`) both continue exactly
after the last event delivered: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import grpc
from agent_framework import AgentResponse
from agent_framework_durabletask import DurableAIAgentClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from redis.exceptions import RedisClusterException, RedisError
from sse_starlette import ServerSentEvent
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agents import AGENT_NAME
from client import start_run
from redis_stream_response_handler import (
    DONE,
    ERROR,
    QUEUED,
    RESTART,
    START,
    RedisStreamResponseHandler,
    StreamChunk,
)
from reliability.conversation_record import history_messages, recorded_conversation
from reliability.durable_record import is_answer_to_show, reattach_point_exists
from reliability.durable_record import recorded_answer as recorded
from support.config import Settings, check_environment
from support.errors import UsageError
from support.scheduler import connect_client
from support.services import Services, provide_services
from support.sessions import new_session_key
from support.validation import message_problem, validate_cursor, validate_session_key
from webapp import ag_ui
from webapp.activity_events import activity_event
from webapp.cancel import cancel_run
from webapp.guards import RequestGuard
from webapp.shared_runs import Frame, SharedRuns
from webapp.sse_response import SharedRunResponse
from webapp.stream_budget import (
    RETRY_AFTER_SECONDS,
    StreamBudget,
    request_handler,
    stream_hub,
    too_many_streams,
)
from webapp.stream_hub import HubReader
from worker import start_worker

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PING_SECONDS = 10  # keep-alive comment while no entry arrives, so proxies keep the connection open
RECORD_WAIT_SECONDS = 5.0  # how long GET /answer waits for the record to appear
RECORD_POLL_SECONDS = 0.1
START_THREADS = 64  # runs being started at once (each a short gRPC call); more wait for a thread
_CORRELATION_ID = re.compile(r"[0-9A-Za-z-]{1,64}")

WorkerSetup = Callable[[Settings, Services, ExitStack], object]  # worker.start_worker, or a test's


class BadRequestError(Exception):
    """A request the client must fix; its message becomes the JSON `error`."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def create_app(environ: Mapping[str, str] | None = None, worker_setup: WorkerSetup = start_worker) -> Starlette:
    """The web app; `environ` and `worker_setup` let tests choose the services and the demo model."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with ExitStack() as stack:
            try:
                settings = check_environment(environ)
                # On this thread, not in a thread pool: a private redis-server is
                # tied to the thread that started it and stops when that thread ends.
                services = provide_services(settings, stack, role="sample")
                worker_setup(settings, services, stack)
            except UsageError as error:
                app.state.startup_error = str(error)  # main() reports it as one `error:` line
                raise
            app.state.settings = settings
            app.state.stream_budget = StreamBudget(settings.web_max_streams)
            # The durable record is polled on threads of its own, so /answer never holds up /run's.
            app.state.record_threads = stack.enter_context(ThreadPoolExecutor(4, thread_name_prefix="record"))
            # Starting a run is a blocking gRPC call on the loop's default executor (client.start_run):
            # its default 6 threads (2 cores) queued 100 simultaneous POST /run behind each other.
            starts = stack.enter_context(ThreadPoolExecutor(START_THREADS, thread_name_prefix="start"))
            asyncio.get_running_loop().set_default_executor(starts)
            async with (
                stream_hub(services.redis_url, settings.idle_timeout_seconds) as hub,
                request_handler(services.redis_url, settings.idle_timeout_seconds) as handler,
            ):
                # Every reader goes through the hub (webapp/stream_hub.py): a few Redis connections in all.
                app.state.hub, app.state.handler, app.state.readers = hub, handler, HubReader(hub)
                # SSE readers share reads; one that ends in an error is checked against the record first.
                app.state.shared_runs = SharedRuns(
                    app.state.readers, sse_frame, functools.partial(done_from_record, app)
                )
                app.state.client = connect_client(services.scheduler_endpoint, settings.taskhub)
                app.state.agent = DurableAIAgentClient(app.state.client).get_agent(AGENT_NAME)
                app.state.active_streams = 0  # open SSE responses; tests check disconnects bring it back to 0
                yield

    routes = [
        Route("/", index),
        Route("/agents/TravelPlanner/run", run_agent, methods=["POST"]),
        Route("/agents/TravelPlanner/stream/{session}", stream_events),
        Route("/agents/TravelPlanner/answer/{session}/{correlation_id}", recorded_answer),
        Route("/agents/TravelPlanner/history/{session}", conversation_history),
        Route("/agents/TravelPlanner/cancel/{session}", cancel, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *ag_ui.ROUTES,  # AG-UI: the same durable, resumable runs for AG-UI clients (webapp/ag_ui.py)
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            BadRequestError: bad_request,
            RedisError: redis_unavailable,
            RedisClusterException: redis_unavailable,  # "cannot be connected": not a RedisError
            ClientDisconnect: client_gone,
            Exception: unexpected_error,  # the last resort: JSON with a status, never a bare 500 page
        },
        middleware=[Middleware(RequestGuard)],  # Host allow-list, same-origin writes, body size limit
    )
    app.state.startup_error = None
    return app


async def bad_request(request: Request, error: Exception) -> Response:
    status = error.status_code if isinstance(error, BadRequestError) else 400
    return JSONResponse({"error": str(error)}, status_code=status)


async def redis_unavailable(request: Request, error: Exception) -> Response:
    """Redis down or unreachable while answering a request: 503, retry (whatever the request took is released)."""
    body = {"error": f"Redis is unavailable ({error}); retry shortly"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def client_gone(request: Request, error: Exception) -> Response:
    # The client closed the connection before its request was read: nobody reads this answer, and nothing failed.
    return JSONResponse({"error": "the client closed the connection mid-request"}, status_code=400)


async def unexpected_error(request: Request, error: Exception) -> Response:
    # Starlette logs the traceback (ServerErrorMiddleware); the client gets JSON it can parse.
    return JSONResponse({"error": f"the server failed unexpectedly ({type(error).__name__})"}, status_code=500)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def run_agent(request: Request) -> Response:
    """Start a run without waiting for it; answer with where its events will appear."""
    message, session_key = await _run_request(request)
    try:
        # Fire and forget, as client.py does; the cursor is taken BEFORE the run starts.
        run = await start_run(request.app.state.agent, request.app.state.handler, session_key, message)
    except grpc.RpcError as error:
        detail = f"{error.code().name} {error.details()}"  # type: ignore[attr-defined]
        return JSONResponse({"error": f"the scheduler failed the request: {detail}"}, status_code=502)
    body = {"session": session_key, "correlation_id": run.correlation_id, "cursor": run.cursor}
    return JSONResponse(body, status_code=202)


async def _run_request(request: Request) -> tuple[str, str]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequestError('the body must be JSON: {"message": "...", "session": optional}') from None
    except RecursionError:  # json.loads of thousands of nested brackets
        raise BadRequestError("the body's JSON is nested too deeply") from None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        raise BadRequestError('the body must be a JSON object with a "message" string')
    session = body.get("session")
    if session is not None and not isinstance(session, str):
        raise BadRequestError('"session" must be a string (a key returned by an earlier run)')
    problem = message_problem(body["message"])
    if problem is not None:
        raise BadRequestError(problem, status_code=422)
    return body["message"], _checked(validate_session_key, session) if session else new_session_key()


async def stream_events(request: Request) -> Response:
    """The run's entries after the cursor as SSE; `Last-Event-ID` (a browser reconnecting) wins over `?cursor=`."""
    session_key = _checked(validate_session_key, request.path_params["session"])
    raw_cursor = request.headers.get("last-event-id") or request.query_params.get("cursor")
    cursor = _checked(validate_cursor, raw_cursor) if raw_cursor else None
    correlation_id = request.query_params.get("correlation_id") or None
    if correlation_id is not None and not _CORRELATION_ID.fullmatch(correlation_id):
        raise BadRequestError(f"correlation_id must be letters, digits and '-' (got {correlation_id!r})")
    if cursor is not None:  # as client.py does: a cursor past the stream's end is a mistake to report now
        await _check_not_past_the_end(request.app.state.handler, session_key, cursor)
    budget: StreamBudget = request.app.state.stream_budget
    if not budget.try_open():
        return too_many_streams(budget)
    # The readers of one run from one cursor share its read and its encoded events (webapp/shared_runs.py).
    runs: SharedRuns = request.app.state.shared_runs
    return SharedRunResponse(runs, (session_key, cursor, correlation_id), ping=PING_SECONDS, budget=budget)


async def _check_not_past_the_end(handler: RedisStreamResponseHandler, session_key: str, cursor: str) -> None:
    """A cursor after the newest entry (from another stream, or made up) would wait the idle timeout for nothing."""
    try:
        await reattach_point_exists(handler, session_key, cursor)  # False (no stream): expired, or not begun; read on
    except UsageError as error:
        raise BadRequestError(str(error)) from None


def sse_frame(chunk: StreamChunk) -> Frame | None:
    """The chunk's SSE event, encoded: once per run and cursor, however many readers send it."""
    event = to_event(chunk)
    return None if event is None else Frame(chunk.entry_id, event.encode())


def to_event(chunk: StreamChunk) -> ServerSentEvent | None:
    """The SSE event for one chunk (None for a start marker, which the page has no use for).

    Every event carries data, because EventSource drops an event whose data is
    empty. Text with newlines becomes several `data:` lines, which the browser
    joins back with "\\n" (sse-starlette does the splitting).
    """
    if chunk.kind == START:
        return None
    if (event := activity_event(chunk)) is not None:  # tool_call, tool_result, cancelled
        return event
    if chunk.kind == DONE:
        # `missing` > 0: tokens this reader never got (a gap, a trimmed cursor); the page fetches the record.
        done = {"correlation_id": chunk.correlation_id, "chunks": chunk.chunks, "missing": chunk.missing}
        usage = {"usage": json.loads(chunk.usage)} if chunk.usage else {}  # when the model reported it
        return ServerSentEvent(json.dumps(done | usage), event="done", id=chunk.entry_id)
    if chunk.kind == ERROR:
        # EventSource also fires an "error" event of its own when the connection drops; the page
        # tells the two apart by this one's data.
        return ServerSentEvent(chunk.error or "the run failed", event="error", id=chunk.entry_id)
    if chunk.kind == RESTART:
        return ServerSentEvent("the answer restarted", event="restart", id=chunk.entry_id)
    if chunk.kind == QUEUED:  # the run waits for a free worker slot
        return ServerSentEvent("waiting for a free worker", event="queued", id=chunk.entry_id)
    return ServerSentEvent(chunk.text, event="message", id=chunk.entry_id)


async def done_from_record(app: Starlette, session_key: str, chunk: StreamChunk) -> Frame | None:
    """A `done` event for a read that ended with an error while the durable record holds the run's answer.

    A worker that dies after the scheduler recorded its run, but before the done marker reached Redis
    (or a Redis outage that outlasted the flusher's retries), leaves its readers with silence, though the
    answer exists. The event's `from_record` tells the client to take the recorded answer (GET /answer/...),
    as client.py does (reliability/durable_record.py, `end_without_done`). None: the error stands.
    """
    if not chunk.correlation_id:  # no run started at all
        return None
    loop = asyncio.get_running_loop()
    try:
        answer = await loop.run_in_executor(
            app.state.record_threads, recorded, app.state.client, session_key, chunk.correlation_id
        )
    except grpc.RpcError as error:  # the scheduler is unreachable too: readers get the stream's own error
        logger.warning("cannot ask the durable record about run %s (%s)", chunk.correlation_id, error)
        return None
    if not is_answer_to_show(answer):
        return None
    done = {"correlation_id": chunk.correlation_id, "chunks": None, "missing": None, "from_record": True}
    return Frame(chunk.entry_id, ServerSentEvent(json.dumps(done), event="done", id=chunk.entry_id).encode())


async def cancel(request: Request) -> Response:
    return await cancel_run(request, _checked(validate_session_key, request.path_params["session"]))


async def recorded_answer(request: Request) -> Response:
    """The answer the durable entity recorded for one run: what the streamed text must equal."""
    session_key = _checked(validate_session_key, request.path_params["session"])
    correlation_id = request.path_params["correlation_id"]
    if not _CORRELATION_ID.fullmatch(correlation_id):
        raise BadRequestError(f"correlation_id must be letters, digits and '-' (got {correlation_id!r})")
    answer = await poll_recorded_answer(request, session_key, correlation_id)
    if answer is None:
        return JSONResponse({"error": "no recorded answer (yet) for this run"}, status_code=404)
    return JSONResponse({"session": session_key, "correlation_id": correlation_id, "text": answer.text})


async def conversation_history(request: Request) -> Response:
    """The conversation the durable entity recorded: the objects `client.py --history --json` prints."""
    session_key = _checked(validate_session_key, request.path_params["session"])
    app = request.app
    loop = asyncio.get_running_loop()
    turns = await loop.run_in_executor(app.state.record_threads, recorded_conversation, app.state.client, session_key)
    if turns is None:
        return JSONResponse({"error": f"unknown session {session_key}: the agent recorded no conversation"}, 404)
    return JSONResponse(history_messages(turns))


async def poll_recorded_answer(request: Request, session_key: str, correlation_id: str) -> AgentResponse | None:
    """The recorded answer, polled for up to RECORD_WAIT_SECONDS without holding a thread between polls.

    Each poll is one quick gRPC call on the app's record threads; the waiting is an asyncio sleep.
    (Waiting in a thread, 30 concurrent requests held the default pool's threads for 5 s each and
    delayed `POST /run` from 0.17 s to 24.6 s.)
    """
    app = request.app
    client: DurableTaskSchedulerClient = app.state.client
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECONDS
    while True:
        answer = await loop.run_in_executor(app.state.record_threads, recorded, client, session_key, correlation_id)
        if answer is not None or loop.time() >= deadline or await request.is_disconnected():
            return answer  # (a caller that went away stops the polling)
        await asyncio.sleep(RECORD_POLL_SECONDS)


def _checked(validate: Callable[[str], str], value: str) -> str:
    try:
        return validate(value)
    except UsageError as error:
        raise BadRequestError(str(error)) from None
