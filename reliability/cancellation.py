"""Stopping a run: a Stop that is not a disconnect.

Closing a reader (Ctrl+C, a closed browser tab, "Drop connection") only detaches it; the run goes
on, so another reader can pick it up. Stopping the run itself is a separate, explicit request:

    client.py --cancel / POST .../cancel/{session}
      └─ request_cancel: the session's current run, from the newest entry of its stream
           └─ SET agent-cancel:{session} {"correlation_id": ..., "reason": ...}  (expires after 5 min)
    worker: CancelWatcher (one per worker loop) GETs the keys of its running runs every 0.25 s
      └─ the run's CancelSignal: ReportingAgent stops pulling from the model (at once, even
         mid tool call or mid silence), the run ends with what it said so far, and the callback
         writes a `cancelled` marker that ends the run for every reader.

Why a Redis key: the durable entity runs one operation at a time, so a "cancel" operation sent
to it would wait behind the very run it should stop; pub/sub is lost when no worker listens at
that moment; a key is still there at the next poll. Its value names the run, so a late or
repeated request can never stop the session's next turn.

What the durable record holds for a cancelled run: the user's message, then a response under the
run's correlation id with the text streamed before the stop, the tool calls that returned and
their results, and the usage reported so far. A tool call still running at the stop is left out
(a call with no result makes providers reject the next turn). The session stays usable: the next
turn sees this partial answer as the history.

Try it: start `uv run worker.py`, `uv run client.py`, and from a third terminal
`uv run client.py --session <key> --cancel`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent_framework import AgentResponse, AgentResponseUpdate
from durabletask.client import TaskHubGrpcClient

from redis_stream_response_handler import (
    CANCELLED,
    MARKERS_THAT_END_A_RUN,
    RedisStreamResponseHandler,
    StreamChunk,
    StreamIdleTimeoutError,
    stream_key,
)
from reliability.durable_record import recorded_state
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.config import Settings
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce, fail
from support.errors import UsageError
from support.redis_connection import REDIS_FAILURES
from support.scheduler import connect_client
from support.services import Services
from support.validation import validate_session_key

logger = logging.getLogger(__name__)

CANCEL_KEY_PREFIX = "agent-cancel:"
CANCEL_KEY_TTL_SECONDS = 300  # long enough for a run re-delivered after a worker crash to see it too
POLL_SECONDS = 0.25  # how often a worker checks for a stop while its runs stream (or sit silent)
CONFIRM_SECONDS = 5.0  # how long a requester waits for the run's cancelled marker
CANCELLED_PROPERTY = "cancelled"  # on a stopped run's AgentResponse: the reason

U = TypeVar("U")


def cancel_key(session_key: str) -> str:
    return f"{CANCEL_KEY_PREFIX}{validate_session_key(session_key)}"


# ---- asking for a stop (client.py --cancel, the web app's Stop) -------------------------------


@dataclass(frozen=True)
class CancelOutcome:
    """What became of a stop request.

    `status`: cancelled | not_running | finished (before the stop reached it) | unconfirmed (no worker
    confirmed within CONFIRM_SECONDS) | no_stream | unknown (no stream, no recorded conversation).
    """

    status: str
    message: str
    correlation_id: str | None = None


async def request_cancel(
    handler: RedisStreamResponseHandler, session_key: str, reason: str, *, idle_timeout_seconds: float
) -> CancelOutcome:
    """Ask the worker to stop the session's current run, and wait (briefly) for its cancelled marker."""
    newest = await handler.redis.xrevrange(stream_key(session_key), count=1)
    if not newest:
        return CancelOutcome("no_stream", f"session {session_key} has no stream (unknown, or expired)")
    last = StreamChunk.from_entry(str(newest[0][0]), newest[0][1])
    run = last.correlation_id
    if last.kind in MARKERS_THAT_END_A_RUN:
        return CancelOutcome(
            "not_running", f"no run in progress in session {session_key}: its last run ended ({last.kind})", run
        )
    if time.time() - last.timestamp > idle_timeout_seconds:
        return CancelOutcome(
            "not_running",
            f"no run in progress in session {session_key}: its last run stopped without ending "
            f"(nothing for over {idle_timeout_seconds:g}s; its worker may have died)",
            run,
        )
    request = json.dumps({"correlation_id": run, "reason": reason})
    await handler.redis.set(cancel_key(session_key), request, ex=CANCEL_KEY_TTL_SECONDS)
    return await _wait_for_end(handler, session_key, last.entry_id, run)


async def _wait_for_end(handler: RedisStreamResponseHandler, session_key: str, cursor: str, run: str) -> CancelOutcome:
    try:
        async with asyncio.timeout(CONFIRM_SECONDS):
            async for chunk in handler.read_entries(session_key, cursor):
                if chunk.correlation_id == run and chunk.kind in MARKERS_THAT_END_A_RUN:
                    if chunk.kind == CANCELLED:
                        return CancelOutcome("cancelled", f"cancelled run {run} of session {session_key}", run)
                    return CancelOutcome("finished", f"run {run} ended ({chunk.kind}) before the stop reached it", run)
    except (TimeoutError, StreamIdleTimeoutError):
        pass
    return CancelOutcome(
        "unconfirmed",
        f"asked to stop run {run}, but no worker confirmed it within {CONFIRM_SECONDS:g}s "
        "(it stops when a worker sees the request)",
        run,
    )


async def stop_current_run(
    handler: RedisStreamResponseHandler,
    scheduler: TaskHubGrpcClient,
    session_key: str,
    reason: str,
    *,
    idle_timeout_seconds: float,
) -> CancelOutcome:
    """`request_cancel`, telling an unknown session (status `unknown`) from one whose stream expired."""
    outcome = await request_cancel(handler, session_key, reason, idle_timeout_seconds=idle_timeout_seconds)
    if outcome.status != "no_stream":
        return outcome
    if await asyncio.to_thread(recorded_state, scheduler, session_key) is None:
        return CancelOutcome("unknown", f"unknown session {session_key}: no stream and no conversation recorded")
    return CancelOutcome("not_running", f"no run in progress in session {session_key} (its stream has expired)")


async def cancel_command(settings: Settings, services: Services, session_key: str) -> int:
    """`client.py --session KEY --cancel`: 0 when the run stopped, 1 when nothing stopped, 2 unknown session."""
    async with RedisStreamResponseHandler.from_url(services.redis_url) as handler:
        scheduler = connect_client(services.scheduler_endpoint, settings.taskhub)
        outcome = await stop_current_run(
            handler, scheduler, session_key, "cancelled with client.py --cancel",
            idle_timeout_seconds=settings.idle_timeout_seconds,
        )  # fmt: skip
    if outcome.status == "unknown":
        raise UsageError(f"{outcome.message}; check the key (printed as `[client] session ...`)")
    if outcome.status != "cancelled":
        return fail(outcome.message, EXIT_RUN_FAILED)
    announce("client", outcome.message)
    return EXIT_OK


# ---- noticing a stop, in the worker ------------------------------------------------------------


class _StopRequestedError(Exception):
    """The awaited step was interrupted by a stop request."""


class CancelSignal:
    """One run's stop request, as the worker sees it; `interruptible` lets it cut short a wait."""

    def __init__(self, session_key: str, correlation_id: str, watcher: CancelWatcher | None = None) -> None:
        self.session_key, self.correlation_id = session_key, correlation_id
        self.reason: str | None = None
        self._scope: asyncio.Timeout | None = None
        self._watcher = watcher

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Stop the run: at its next update, or at once if it is waiting for one."""
        if self.requested:
            return
        self.reason = reason or "cancelled"
        if self._scope is not None:
            self._scope.reschedule(asyncio.get_running_loop().time())  # expire the wait now

    def close(self) -> None:
        """The run ended: stop watching for it."""
        if self._watcher is not None:
            self._watcher.forget(self)

    async def interruptible(self, step: Awaitable[U]) -> U:
        # A timeout scope with no deadline, expired on request: the cancellation it delivers lands
        # only inside this await (never in the host's code), and asyncio.timeout tells it apart
        # from a real cancellation of the task (worker shutdown), which still propagates.
        if self.requested:
            raise _StopRequestedError
        try:
            async with asyncio.timeout(None) as self._scope:
                return await step
        except TimeoutError:
            if self.requested:
                raise _StopRequestedError from None
            raise
        finally:
            self._scope = None


async def until_cancelled(
    stream: AsyncIterator[AgentResponseUpdate], signal: CancelSignal
) -> AsyncIterator[AgentResponseUpdate]:
    """The updates of `stream` until a stop is requested; then the stream is closed and this ends."""
    try:
        while True:
            try:
                update = await signal.interruptible(anext(stream))
            except StopAsyncIteration:
                return
            except _StopRequestedError:
                break
            if signal.requested:
                break  # it arrived after the stop: not shown, not recorded
            yield update
        await _close(stream)
    finally:
        signal.close()


async def _close(stream: AsyncIterator[AgentResponseUpdate]) -> None:
    # Releases the model's connection (idempotent on a ResponseStream). The run is stopping
    # anyway: a cleanup that fails is logged, it does not turn the stop into a failed run.
    close = getattr(stream, "close", None) or getattr(stream, "aclose", None)
    try:
        if close is not None:
            await close()
    except Exception as error:
        logger.warning("closing the stopped run's stream failed (%s)", error)


def cancelled_response(updates: Sequence[AgentResponseUpdate], reason: str) -> AgentResponse:
    """What the durable record keeps of a stopped run: what it said and did before the stop.

    A tool call with no result is dropped: replayed as history, a dangling call makes
    OpenAI-style providers reject the session's next turn.
    """
    answered = {c.call_id for u in updates for c in u.contents if c.type == "function_result"}
    kept: list[AgentResponseUpdate] = []
    for update in updates:
        contents = [c for c in update.contents if c.type != "function_call" or c.call_id in answered]
        if contents:
            trimmed = copy.copy(update)
            trimmed.contents = contents
            kept.append(trimmed)
    response = AgentResponse.from_updates(kept)
    response.additional_properties = {**(response.additional_properties or {}), CANCELLED_PROPERTY: reason}
    return response


def cancel_reason(response: AgentResponse) -> str | None:
    """The reason a run was stopped, if `response` is the answer of a stopped run."""
    return (response.additional_properties or {}).get(CANCELLED_PROPERTY)


class CancelWatcher:
    """Watches the cancel keys of a worker's running runs: one pipeline of GETs every POLL_SECONDS.

    One per worker event loop. It polls only while runs are in progress, and a Redis error just
    delays a stop (it is logged, and the next poll tries again): it never fails a run.
    """

    def __init__(self, poll_seconds: float = POLL_SECONDS) -> None:
        self.poll_seconds = poll_seconds
        self._signals: list[CancelSignal] = []
        self._flusher: StreamFlusher | None = None  # its Redis client, on its loop (see `_read_requests`)
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # a Redis error is logged once, not at every poll

    def watch(self, writer: RunStreamWriter) -> CancelSignal:
        """Start watching the writer's run, with the writer's Redis client; `signal.close()` stops it.

        Called on the worker's event loop, when the run starts.
        """
        signal = CancelSignal(writer.session_key, writer.correlation_id, self)
        self._flusher = writer.flusher
        self._signals.append(signal)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return signal

    def forget(self, signal: CancelSignal) -> None:
        if signal in self._signals:
            self._signals.remove(signal)

    def close(self) -> None:
        """Stop polling, before the flusher whose Redis client the polls use is closed."""
        self._signals.clear()
        if self._task is not None:
            self._task.cancel()

    async def _poll(self) -> None:
        while self._signals:
            await asyncio.sleep(self.poll_seconds)
            signals = list(self._signals)
            try:
                requests = await self._read_requests(signals)
            except REDIS_FAILURES as error:
                if not self._failing:
                    logger.warning("cannot check for stop requests (%s); retrying every %gs", error, self.poll_seconds)
                self._failing = True
                continue
            self._failing = False
            for signal, request in zip(signals, requests, strict=True):
                if request is not None and request.get("correlation_id") == signal.correlation_id:
                    signal.request(str(request.get("reason") or "cancelled"))

    async def _read_requests(self, signals: Sequence[CancelSignal]) -> list[dict[str, object] | None]:
        assert self._flusher is not None
        keys = [cancel_key(signal.session_key) for signal in signals]
        # The flusher's client lives on the flusher's loop (a thread of its own in the worker): read there.
        values = await self._flusher.run(_get_all(self._flusher.handler, keys))
        return [_parse_request(value) for value in values]


async def _get_all(handler: RedisStreamResponseHandler, keys: Sequence[str]) -> list[object]:
    # A pipeline, not MGET: the keys may live on different cluster nodes.
    async with handler.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        return await pipe.execute()


def _parse_request(value: object) -> dict[str, object] | None:
    if not isinstance(value, str):
        return None
    try:
        request = json.loads(value)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None
