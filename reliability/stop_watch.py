"""Noticing a stop, in the worker: a run's CancelSignal, and the watcher that polls for requests.

    CancelWatcher (one per worker loop) GETs a run's cancel key once as it starts, before the model
    is asked (a run stopped while it waited for a run slot ends there: no model, no tool; so does a
    stale delivery, whose claim on the stream was refused: reliability/fencing.py), then the
    cancel keys of its running runs every 0.25 s
      └─ the run's CancelSignal, in its run scope (reliability/run_scope.py): ReportingAgent stops
         pulling from the model (at once, even mid tool call or mid silence), the run ends with what
         it said so far, and the callback writes a `cancelled` marker that ends the run for every reader.

The requesting side is reliability/stop_requests.py.

What the durable record holds for a cancelled run: the user's message, then a response under the
run's correlation id with the text streamed before the stop, the tool calls that returned and
their results, the usage reported so far, and an empty message that says it was stopped and why
(`cancelled_note`: the record keeps no other trace of a stop; see reliability/durable_record.py).
A tool call still running at the stop is left out (a call with no result makes providers reject
the next turn). The session stays usable: the next turn sees this partial answer as the history.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TypeVar

from agent_framework import AgentResponse, AgentResponseUpdate

from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.durable_record import cancelled_note, recorded_cancel_reason
from reliability.stop_requests import cancel_key, parse_request
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.redis_connection import REDIS_FAILURES

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often a worker checks for a stop while its runs stream (or sit silent)
CLAIM_WAIT_SECONDS = 5.0  # how long a starting run waits for its first write (its claim) before it goes on anyway
CANCELLED_PROPERTY = "cancelled"  # on a stopped run's AgentResponse: the reason

U = TypeVar("U")


class _StopRequestedError(Exception):
    """The awaited step was interrupted by a stop request."""


class CancelSignal:
    """One run's stop request, as the worker sees it; `interruptible` lets it cut short a wait."""

    def __init__(
        self,
        session_key: str,
        correlation_id: str,
        watcher: CancelWatcher | None = None,
        claimed: Future[bool] | None = None,
    ) -> None:
        self.session_key, self.correlation_id = session_key, correlation_id
        self._claimed = claimed  # the run's claim on its stream (RunStreamWriter.claimed), if watched with a writer
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

    @property
    def superseded(self) -> bool:
        """The run's claim on its stream was refused: a later delivery owns it (reliability/fencing.py)."""
        return self._claimed is not None and self._claimed.done() and not self._claimed.result()

    async def check_now(self) -> None:
        """Called before the model is asked: read the run's stop request at once, not at the next poll, and
        wait for the run's claim on its stream, so that a stale delivery never asks the model or runs a tool."""
        if self._watcher is not None:
            await self._watcher.check_now(self)
        if self._claimed is not None:  # the first write, normally a millisecond; Redis trouble must not hold the run
            await asyncio.wait([asyncio.wrap_future(self._claimed)], timeout=CLAIM_WAIT_SECONDS)

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
    response.messages.append(cancelled_note(reason))  # what the durable record keeps of the stop
    response.created_at = response.created_at or datetime.now(UTC).isoformat()  # none if the model never spoke
    return response


def cancel_reason(response: AgentResponse) -> str | None:
    """The reason a run was stopped, if `response` is the answer of a stopped run (live or recorded)."""
    return (response.additional_properties or {}).get(CANCELLED_PROPERTY) or recorded_cancel_reason(response)


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
        signal = CancelSignal(writer.session_key, writer.correlation_id, self, writer.claimed)
        self._flusher = writer.flusher
        self._signals.append(signal)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return signal

    def forget(self, signal: CancelSignal) -> None:
        if signal in self._signals:
            self._signals.remove(signal)

    async def check_now(self, signal: CancelSignal) -> None:
        """One GET of `signal`'s cancel key now; a Redis error is logged and the run goes on (polls retry)."""
        try:
            [request] = await self._read_requests([signal])
        except REDIS_FAILURES as error:
            logger.warning("cannot check for a stop request as the run starts (%s); polls will retry", error)
            return
        self._apply(signal, request)

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
                self._apply(signal, request)

    @staticmethod
    def _apply(signal: CancelSignal, request: dict[str, object] | None) -> None:
        if request is not None and request.get("correlation_id") == signal.correlation_id:
            signal.request(str(request.get("reason") or "cancelled"))

    async def _read_requests(self, signals: Sequence[CancelSignal]) -> list[dict[str, object] | None]:
        assert self._flusher is not None
        keys = [cancel_key(signal.session_key) for signal in signals]
        # The flusher's client lives on the flusher's loop (a thread of its own in the worker): read there.
        values = await self._flusher.run(_get_all(self._flusher.handler, keys))
        return [parse_request(value) for value in values]


async def _get_all(handler: RedisStreamResponseHandler, keys: Sequence[str]) -> list[object]:
    # A pipeline, not MGET: the keys may live on different cluster nodes.
    async with handler.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        return await pipe.execute()
