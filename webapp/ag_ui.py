"""AG-UI: the durable TravelPlanner over Agent Framework's front-end protocol, resumable with Last-Event-ID.

    POST /ag-ui/TravelPlanner                              body: an AG-UI RunAgentInput
         threadId = the session key (the conversation), runId = the client's id for this run, the
         last user message = the message. Starts the durable run without waiting, then streams it
         as AG-UI events (text/event-stream), every event with an `id:`.
    GET  /ag-ui/TravelPlanner/{threadId}/runs/{runId}      header Last-Event-ID: the last id received
         The same run's events after that id (all of them without the header): no gap, no repeat,
         whether the run is still going or long finished, and even after the worker restarted. Once
         its stream expired: the recorded outcome (the thread's messages, then RUN_FINISHED).
    POST /ag-ui/TravelPlanner/connect                      body: a RunAgentInput (only threadId matters)
         Join the thread, knowing only its id (`connectAgent()` in @ag-ui/client): one run's events,
         beginning with a MESSAGES_SNAPSHOT of the thread so far; the run in progress, live to its
         end, if there is one, else a finished run.

Every run's events: RUN_STARTED, MESSAGES_SNAPSHOT (the thread before this run, from the durable
record, and the run's user message), the answer's events, then MESSAGES_SNAPSHOT (the record with
the answer) and RUN_FINISHED, whose outcome is {type: "cancelled"} for a stopped run (POST
/agents/TravelPlanner/cancel/{threadId}); a failed run ends with RUN_ERROR. A run whose done marker
never reached the stream (its worker died a moment after the run was recorded) finishes with the
record's snapshot, not RUN_ERROR. A threadId is a bearer secret: whoever knows it can read and
continue the conversation.

Bad input (not a RunAgentInput, no user message, an unsafe threadId or runId) is a 422 with the
reason, and nothing is started. A runId already started on the thread is a 409: resume it instead.

Watch the events in a terminal (`uv run web.py` first):

    curl -N localhost:8000/ag-ui/TravelPlanner -H 'content-type: application/json' -d '{"threadId": "t1",
      "runId": "r1", "messages": [{"id": "m1", "role": "user", "content": "Plan a 2-day trip to Oslo"}],
      "tools": [], "context": [], "forwardedProps": {}}'
    curl -N localhost:8000/ag-ui/TravelPlanner/t1/runs/r1 -H 'Last-Event-ID: <an id from above>'

How it works: the run's entries are read from Redis (`read_run`) and mapped to events by
`webapp/ag_ui_events.py`, whose event ids come from entry ids. A resume replays the run from the
cursor stored when it started and skips every event up to Last-Event-ID. The snapshots come from
the durable record (`webapp/ag_ui_history.py`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc
from ag_ui.core import (
    BaseEvent,
    Message,
    MessagesSnapshotEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunStartedEvent,
    TextInputContent,
    UserMessage,
)
from agent_framework_durabletask import DurableAgentState
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from client import start_run
from redis_stream_response_handler import (
    CANCELLED,
    DONE,
    ERROR,
    MARKERS_THAT_END_A_RUN,
    START_OF_STREAM,
    RedisStreamResponseHandler,
    StreamChunk,
)
from reliability.durable_record import is_answer_to_show, recorded_state
from reliability.run_tracker import EntrySource, read_run
from support.errors import UsageError
from support.validation import entry_id_order, message_problem, validate_session_key
from webapp.ag_ui_events import RunEvents, event_id_order, sse_frame
from webapp.ag_ui_history import MessageIds, has_response, run_request_messages, thread_messages
from webapp.sse_response import RETRY_MILLISECONDS  # a browser EventSource on the resume route: as the SSE route
from webapp.stream_budget import BudgetedEventSourceResponse, StreamBudget, too_many_streams
from webapp.stream_hub import ReaderTooSlowError, ServerStoppingError

logger = logging.getLogger(__name__)

PATH = "/ag-ui/TravelPlanner"
RUN_KEY_PREFIX = "ag-ui-run:"
THREAD_KEY_PREFIX = "ag-ui-thread:"  # a thread's newest AG-UI run id: what /connect joins
PING_SECONDS = 10  # keep-alive comment while the run is silent, so proxies keep the connection open
# A run's record (its cursor and correlation id) must outlive its stream, whose TTL counts from the
# stream's LAST write: keep the record that long after the run STARTED, plus an hour for the run itself.
RUN_RECORD_EXTRA_SECONDS = 3600
RECORD_WAIT_SECONDS = 5.0  # how long the closing snapshot waits for the entity to commit the run's response
RECORD_POLL_SECONDS = 0.05
_RUN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")  # fullmatch: `$` would accept a trailing newline


class RejectedError(Exception):
    """A request answered with JSON {"error": message} and `status_code` instead of a stream; nothing started."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class RunRecord:
    """What a resume needs to replay one AG-UI run from the conversation's stream."""

    thread_id: str
    run_id: str
    cursor: str  # the stream's newest entry id BEFORE the run started
    correlation_id: str | None  # the durable run; None: follow the first run after the cursor
    message: str | None = None  # the user's message, until the entity records it (at the end of the run)
    outcome: str | None = None  # done | cancelled | error, once a reader saw the run end
    expired: bool = False  # the stream is gone: only the durable record is left


async def run_agent(request: Request) -> Response:
    """Check the RunAgentInput, start the durable run without waiting, stream its events."""
    budget: StreamBudget = request.app.state.stream_budget
    if not budget.try_open():  # checked first: a refused stream starts no run
        return too_many_streams(budget)
    try:
        run_input = await _checked_input(request)
        message = _last_user_message(run_input)
        record = await _start_run(request.app, run_input.thread_id, run_input.run_id, message)
    except RejectedError as error:
        budget.close()
        return JSONResponse({"error": str(error)}, status_code=error.status_code)
    except BaseException:  # Redis down, the client gone, a bug: the stream was never opened, so give it back
        budget.close()
        raise
    return BudgetedEventSourceResponse(_frames(request.app, record, after=None), ping=PING_SECONDS, budget=budget)


async def resume_run(request: Request) -> Response:
    """Replay one run's events after Last-Event-ID (all of them without it), live until the run ends."""
    outcome: list[BaseEvent] = []
    try:
        thread_id = _checked_thread_id(request.path_params["thread_id"])
        run_id = _checked_run_id(request.path_params["run_id"])
        last_event_id = request.headers.get("last-event-id")
        after = _checked_event_id(last_event_id) if last_event_id else None
        record = await _load_record(request.app, thread_id, run_id)
        if record.expired:
            outcome = await _recorded_outcome(request.app, record)  # before the budget: a 404 holds no stream
        elif after is not None:
            await _check_not_past_the_end(request.app, thread_id, after)
    except RejectedError as error:
        return JSONResponse({"error": str(error)}, status_code=error.status_code)
    budget: StreamBudget = request.app.state.stream_budget
    if not budget.try_open():
        return too_many_streams(budget)
    frames = _outcome_frames(outcome) if record.expired else _frames(request.app, record, after, retry=True)
    return BudgetedEventSourceResponse(frames, ping=PING_SECONDS, budget=budget)


async def connect_run(request: Request) -> Response:
    """Join a thread: its messages so far, then the run in progress to its end (else a finished run)."""
    joined: list[BaseEvent] = []
    try:
        run_input = await _checked_input(request)
        record = await _run_in_progress(request.app, run_input.thread_id)
        if record is None:
            state = await _state(request.app, run_input.thread_id)
            joined = [
                RunStartedEvent(thread_id=run_input.thread_id, run_id=run_input.run_id),
                MessagesSnapshotEvent(messages=thread_messages(state)),
                RunFinishedEvent(thread_id=run_input.thread_id, run_id=run_input.run_id),
            ]
    except RejectedError as error:
        return JSONResponse({"error": str(error)}, status_code=error.status_code)
    budget: StreamBudget = request.app.state.stream_budget
    if not budget.try_open():
        return too_many_streams(budget)
    frames = _frames(request.app, record, after=None) if record is not None else _outcome_frames(joined)
    return BudgetedEventSourceResponse(frames, ping=PING_SECONDS, budget=budget)


ROUTES = [
    Route(PATH, run_agent, methods=["POST"]),
    Route(PATH + "/connect", connect_run, methods=["POST"]),
    Route(PATH + "/{thread_id}/runs/{run_id}", resume_run),
]


async def _checked_input(request: Request) -> RunAgentInput:
    """The body as a RunAgentInput with safe thread and run ids, or RejectedError naming the problem."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RejectedError("the body must be JSON: an AG-UI RunAgentInput") from None
    except RecursionError:  # json.loads of thousands of nested brackets
        raise RejectedError("the body's JSON is nested too deeply", 400) from None
    if not isinstance(body, dict):
        raise RejectedError("the body must be a JSON object: an AG-UI RunAgentInput")
    try:
        run_input = RunAgentInput.model_validate(body)
    except ValidationError as error:
        raise RejectedError(f"not a valid RunAgentInput: {_first_problems(error)}") from None
    _checked_thread_id(run_input.thread_id)
    _checked_run_id(run_input.run_id)
    return run_input


def _first_problems(error: ValidationError, limit: int = 3) -> str:
    problems = [f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()]
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def _last_user_message(run_input: RunAgentInput) -> str:
    """The text of the last user message: the server keeps the history, a client may resend it all."""
    if not run_input.messages:
        raise RejectedError("messages is empty: send the user's message as the last one")
    user_messages = [message for message in run_input.messages if isinstance(message, UserMessage)]
    if not user_messages:
        raise RejectedError("messages has no user message: the last one is what the agent answers")
    content = user_messages[-1].content
    text = content if isinstance(content, str) else "".join(p.text for p in content if isinstance(p, TextInputContent))
    if problem := message_problem(text):
        raise RejectedError(f"the last user message: {problem}")
    return text


def _checked_thread_id(thread_id: str) -> str:
    try:
        return validate_session_key(thread_id)
    except UsageError as error:
        raise RejectedError(f"threadId is the session key: {error}") from None


def _checked_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise RejectedError(f"runId must be 1-128 letters, digits, '_', '-', '.' or ':' (got {run_id!r})")
    return run_id


def _checked_event_id(event_id: str) -> tuple[int, int, int]:
    try:
        return event_id_order(event_id)
    except ValueError as error:
        raise RejectedError(str(error)) from None


async def _check_not_past_the_end(app: Starlette, thread_id: str, after: tuple[int, int, int]) -> None:
    """A Last-Event-ID after the thread's newest entry (another thread's, or made up) would skip every event."""
    handler: RedisStreamResponseHandler = app.state.handler
    newest = await handler.last_entry_id(thread_id)
    if newest != START_OF_STREAM and after[:2] > entry_id_order(newest):
        raise RejectedError(f"Last-Event-ID is past the end of this thread's stream (newest entry: {newest})")


def record_key(thread_id: str, run_id: str) -> str:
    return f"{RUN_KEY_PREFIX}{thread_id}/{run_id}"  # '/' is in neither id's alphabet: no two pairs collide


def thread_key(thread_id: str) -> str:
    return f"{THREAD_KEY_PREFIX}{thread_id}"


async def _start_run(app: Starlette, thread_id: str, run_id: str, message: str) -> RunRecord:
    handler: RedisStreamResponseHandler = app.state.handler
    key, ttl = record_key(thread_id, run_id), app.state.settings.stream_ttl_seconds + RUN_RECORD_EXTRA_SECONDS
    # NX: a retried POST must not run the agent twice. Claimed first, so two racing POSTs cannot both start.
    if not await handler.redis.set(key, json.dumps({}), nx=True, ex=ttl):
        resume = f"GET {PATH}/{thread_id}/runs/{run_id}"
        raise RejectedError(f"run {run_id} was already started on this thread; to follow it: {resume}", 409)
    try:
        run = await start_run(app.state.agent, handler, thread_id, message)  # fire and forget, as client.py does
    except Exception as error:
        await handler.redis.delete(key)  # nothing started: the run id is free again
        if not isinstance(error, grpc.RpcError):
            raise
        detail = f"{error.code().name} {error.details()}"  # type: ignore[attr-defined]
        raise RejectedError(f"the scheduler failed the request: {detail}", 502) from None
    fields = {"cursor": run.cursor, "correlation_id": run.correlation_id, "message": message}
    await handler.redis.set(key, json.dumps(fields), ex=ttl)
    await handler.redis.set(thread_key(thread_id), run_id, ex=ttl)  # what a client joining the thread follows
    return RunRecord(thread_id, run_id, run.cursor, run.correlation_id, message)


async def _load_record(app: Starlette, thread_id: str, run_id: str) -> RunRecord:
    handler: RedisStreamResponseHandler = app.state.handler
    stored = await handler.redis.get(record_key(thread_id, run_id))
    if stored is None:
        raise RejectedError(f"no run {run_id} on thread {thread_id}: never started here, or expired", 404)
    fields = json.loads(stored)
    if "cursor" not in fields:  # claimed by a POST whose run is starting this very moment
        raise RejectedError(f"run {run_id} on thread {thread_id} is starting; retry in a moment", 409)
    correlation_id, outcome = fields.get("correlation_id"), fields.get("outcome")
    expired = False
    if await handler.last_entry_id(thread_id) == START_OF_STREAM:  # no stream: gone, or the run not yet begun
        ended = outcome is not None or fields["cursor"] != START_OF_STREAM
        expired = ended or (correlation_id is not None and has_response(await _state(app, thread_id), correlation_id))
    return RunRecord(
        thread_id,
        run_id,
        fields["cursor"],
        correlation_id,
        fields.get("message"),
        outcome,
        expired,
    )


async def _note_outcome(app: Starlette, record: RunRecord, outcome: str) -> None:
    """Keep how the run ended in its record: after the stream expired, a resume answers with it."""
    if record.outcome == outcome:
        return
    handler: RedisStreamResponseHandler = app.state.handler
    key = record_key(record.thread_id, record.run_id)
    if (stored := await handler.redis.get(key)) is not None:
        await handler.redis.set(key, json.dumps({**json.loads(stored), "outcome": outcome}), xx=True, keepttl=True)


async def _run_in_progress(app: Starlette, thread_id: str) -> RunRecord | None:
    """The thread's newest AG-UI run while it is still going (its response not yet recorded), else None."""
    handler: RedisStreamResponseHandler = app.state.handler
    run_id = await handler.redis.get(thread_key(thread_id))
    if run_id is None:
        return None
    try:
        record = await _load_record(app, thread_id, str(run_id))
    except RejectedError:
        return None  # expired, or starting this very moment (its own POST streams it)
    if record.expired or record.outcome is not None or record.correlation_id is None:
        return None
    state = await _state(app, thread_id)
    return None if has_response(state, record.correlation_id) else record


async def _state(app: Starlette, thread_id: str) -> DurableAgentState | None:
    """The entity's state: one quick gRPC call, on the app's record threads."""
    client: DurableTaskSchedulerClient = app.state.client
    return await asyncio.get_running_loop().run_in_executor(app.state.record_threads, recorded_state, client, thread_id)


async def _state_with_response(app: Starlette, thread_id: str, correlation_id: str) -> DurableAgentState | None:
    """The state once it holds the run's response, waiting briefly; None if it never came.

    Workaround (agent-framework-durabletask 1.0.0b260922): the end marker is written a moment BEFORE
    the entity's operation returns and the scheduler commits its state (reliability/durable_record.py).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT_SECONDS
    while not has_response(state := await _state(app, thread_id), correlation_id):
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(RECORD_POLL_SECONDS)
    return state


async def _history_before(app: Starlette, record: RunRecord, correlation_id: str) -> list[Message]:
    """The thread's messages before this run, then the run's user message: the run's first snapshot."""
    state = await _state(app, record.thread_id)
    own = run_request_messages(state, correlation_id)
    if not own and record.message is not None:
        own = [UserMessage(id=MessageIds(correlation_id).user(0), content=record.message)]
    return [*thread_messages(state, without=correlation_id), *own]


async def _recorded_outcome(app: Starlette, record: RunRecord) -> list[BaseEvent]:
    """A run whose stream expired, as the durable record has it: its messages, then how it ended."""
    state = await _state(app, record.thread_id)
    if record.correlation_id is None or not has_response(state, record.correlation_id):
        raise RejectedError(f"run {record.run_id} on thread {record.thread_id} is gone: its stream expired", 404)
    started = RunStartedEvent(thread_id=record.thread_id, run_id=record.run_id)
    if record.outcome == ERROR:
        return [started, RunErrorEvent(message="the run failed", code="RUN_FAILED")]
    outcome = RunFinishedCancelledOutcome() if record.outcome == CANCELLED else None
    finished = RunFinishedEvent(thread_id=record.thread_id, run_id=record.run_id, outcome=outcome)
    return [started, MessagesSnapshotEvent(messages=thread_messages(state)), finished]


async def _ending_in_the_record(
    app: Starlette, record: RunRecord, chunk: StreamChunk
) -> tuple[StreamChunk, list[Message] | None]:
    """A run's error ending, or a DONE and the thread's messages when the durable record holds its answer.

    A worker that dies after the scheduler recorded its run, but before the done marker reached Redis,
    leaves its readers with silence (the idle timeout's error) though the answer exists: the run then
    finishes with the record's snapshot, as client.py ends with the record (reliability/durable_record.py).
    """
    if not chunk.correlation_id:  # no run started at all
        return chunk, None
    try:
        state = await _state(app, record.thread_id)
    except grpc.RpcError as error:  # the scheduler is unreachable too: the stream's own error stands
        logger.warning("cannot ask the durable record about run %s (%s)", chunk.correlation_id, error)
        return chunk, None
    if state is None or not is_answer_to_show(state.try_get_agent_response(chunk.correlation_id)):
        return chunk, None
    return replace(chunk, kind=DONE, error=None), thread_messages(state)


async def _outcome_frames(events: list[BaseEvent]) -> AsyncIterator[bytes]:
    """Events made from the durable record alone: no stream entry to number them by, so no `id:`."""
    for event in events:
        yield sse_frame(None, event)


async def _frames(
    app: Starlette, record: RunRecord, after: tuple[int, int, int] | None, *, retry: bool = False
) -> AsyncIterator[bytes]:
    """The run's SSE frames, skipping events up to `after`; ends after RUN_FINISHED or RUN_ERROR.

    When the client disconnects, sse-starlette cancels this generator while it waits in XREAD
    BLOCK; the run goes on in the worker, and a resume picks it up where this one stopped.
    """
    handler: EntrySource = app.state.readers  # the stream hub (webapp/stream_hub.py)
    events = RunEvents(thread_id=record.thread_id, run_id=record.run_id)
    app.state.active_streams += 1
    last_sent = None
    try:
        if retry:
            yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        async for chunk in read_run(handler, record.thread_id, record.cursor, record.correlation_id):
            if events.before is None:  # the first chunk: the snapshot that opens the run
                events.before = await _history_before(app, record, chunk.correlation_id)
            final = None
            if chunk.kind == ERROR:  # the done marker may have been lost while the record has the answer
                chunk, final = await _ending_in_the_record(app, record, chunk)
            if chunk.kind in (DONE, CANCELLED) and final is None:  # the snapshot that closes it: the record
                state = await _state_with_response(app, record.thread_id, chunk.correlation_id)
                final = thread_messages(state) if state is not None else None
            if chunk.kind in MARKERS_THAT_END_A_RUN:
                await _note_outcome(app, record, chunk.kind)
            for event_id, event in events.events_for(chunk, final):
                if after is None or event_id_order(event_id) > after:
                    last_sent = event_id
                    yield sse_frame(event_id, event)
    except (ReaderTooSlowError, ServerStoppingError) as error:
        # Not the run's failure: the client resumes (GET .../runs/{runId} with Last-Event-ID) and loses nothing.
        resume = f"resume with Last-Event-ID: {last_sent}" if last_sent else "resume from the start"
        yield sse_frame(None, RunErrorEvent(message=f"{error}; {resume}", code=type(error).__name__))
    finally:
        app.state.active_streams -= 1
