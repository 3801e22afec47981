"""Asking for a stop: a Stop that is not a disconnect (the requesting side).

Closing a reader (Ctrl+C, a closed browser tab, "Drop connection") only detaches it; the run goes
on, so another reader can pick it up. Stopping the run itself is a separate, explicit request:

    client.py --cancel / POST .../cancel/{session}
      └─ request_cancel: the session's current run, from the newest entry of its stream
           └─ SET agent-cancel:{session} {"correlation_id": ..., "reason": ...}  (expires after 5 min)
    the worker notices it within a poll and ends the run (reliability/stop_watch.py), whose
    `cancelled` marker ends the run for every reader.

A run still waiting for a run slot (its newest entry is a `queued` notice) cannot be confirmed until
it gets one: then the worker reads the request before the run asks its model, and the run ends
`cancelled` at once, with no model call and no tool run. Its request lives long enough to outlast the
wait (QUEUED_STOP_TTL_SECONDS), and the requester hears `will_not_start` unless the run ends sooner.

Why a Redis key: the durable entity runs one operation at a time, so a "cancel" operation sent
to it would wait behind the very run it should stop; pub/sub is lost when no worker listens at
that moment; a key is still there at the next poll. Its value names the run, so a late or
repeated request can never stop the session's next turn.

The command line's `--cancel` is cli/cancel.py; the web app's Stop is webapp/cancel.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from durabletask.client import TaskHubGrpcClient

from redis_stream_response_handler import (
    CANCELLED,
    MARKERS_THAT_END_A_RUN,
    QUEUED,
    RedisStreamResponseHandler,
    StreamChunk,
    StreamIdleTimeoutError,
    stream_key,
)
from reliability.durable_record import recorded_state
from support.validation import validate_session_key

CANCEL_KEY_PREFIX = "agent-cancel:"
CANCEL_KEY_TTL_SECONDS = 300  # long enough for a run re-delivered after a worker crash to see it too
QUEUED_STOP_TTL_SECONDS = 24 * 3600  # a queued run may wait long for its slot: the request must still be there
CONFIRM_SECONDS = 5.0  # how long a requester waits for the run's cancelled marker


def cancel_key(session_key: str) -> str:
    return f"{CANCEL_KEY_PREFIX}{validate_session_key(session_key)}"


@dataclass(frozen=True)
class CancelOutcome:
    """What became of a stop request.

    `status`: cancelled | will_not_start (it waits for a run slot; when it gets one it ends cancelled,
    without starting) | not_running | finished (before the stop reached it) | unconfirmed (no worker
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
    queued = last.kind == QUEUED  # waiting for a run slot: nothing of it has run yet
    ttl = QUEUED_STOP_TTL_SECONDS if queued else CANCEL_KEY_TTL_SECONDS
    await handler.redis.set(cancel_key(session_key), request, ex=ttl)
    return await _wait_for_end(handler, session_key, last.entry_id, run, queued=queued)


async def _wait_for_end(
    handler: RedisStreamResponseHandler, session_key: str, cursor: str, run: str, *, queued: bool
) -> CancelOutcome:
    try:
        async with asyncio.timeout(CONFIRM_SECONDS):
            async for chunk in handler.read_entries(session_key, cursor):
                if chunk.correlation_id != run:
                    continue
                queued = queued and chunk.kind == QUEUED  # anything else of the run: it got its slot
                if chunk.kind in MARKERS_THAT_END_A_RUN:
                    if chunk.kind == CANCELLED:
                        return CancelOutcome("cancelled", f"cancelled run {run} of session {session_key}", run)
                    return CancelOutcome("finished", f"run {run} ended ({chunk.kind}) before the stop reached it", run)
    except (TimeoutError, StreamIdleTimeoutError):
        pass
    if queued:
        return CancelOutcome(
            "will_not_start",
            f"stopped run {run} of session {session_key} before it started: it is waiting for a free worker, "
            "and when it gets one it ends (cancelled) without asking the model or running a tool",
            run,
        )
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


def parse_request(value: object) -> dict[str, object] | None:
    if not isinstance(value, str):
        return None
    try:
        request = json.loads(value)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None
