"""A worker's run slots, and the runs waiting for one: readers are told "queued" instead of silence.

Each agent run holds one worker thread from its first token to its last (the
entity blocks that thread while the agent streams on the shared agent loop),
so the number of threads is the number of runs one worker serves at once:
WORKER_MAX_CONCURRENT_RUNS (`run_slots`). Real models spend most of a run
waiting on the network, so the default is sized for I/O, not for cores.

When the scheduler hands the worker more runs than it has slots, the extra
runs wait inside the worker, where nothing of the agent runs yet and nothing
reaches their streams. Their readers would hear silence, hit the idle timeout
and blame a missing worker. `QueuedRunReporter` writes a `queued` entry for
each run that has waited longer than QUEUED_AFTER_SECONDS, then again every
heartbeat interval until the run gets a slot:

    scheduler ─▶ worker receives run B ─▶ [all slots busy] ────────────▶ slot free: B's agent starts
                                            └─ queued … queued …  (agent-stream:{B's session})

Readers show "waiting for a free worker" and keep waiting while these arrive.

With telemetry on (support/telemetry.py), `agent_stream.runs.queued` and `agent_stream.runs.running`
count them, per worker.

Seen at work: tests/reliability/test_worker_capacity.py, two conversations on a worker with one slot.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent_framework_durabletask import run_agent_coroutine
from durabletask.entities import EntityInstanceId
from durabletask.internal import helpers
from durabletask.internal import orchestrator_service_pb2 as pb
from durabletask.worker import ConcurrencyOptions, TaskHubGrpcWorker

from redis_stream_response_handler import QUEUED, RedisStreamResponseHandler, entry_fields
from reliability.write_behind import WORKER_NAME
from support import telemetry
from support.config import Settings
from support.redis_connection import REDIS_FAILURES
from support.validation import validate_session_key

logger = logging.getLogger(__name__)
W = TypeVar("W", bound=TaskHubGrpcWorker)

QUEUED_AFTER_SECONDS = 0.2  # a run that gets a slot at once is never reported
TICK_SECONDS = 0.1
_THIS_WORKER = {"agent_stream.worker": WORKER_NAME}  # the attribute of the per-worker run counts

Notices = list[tuple[str, list[dict[str, str]]]]  # (session key, entries) per stream


def run_slots(settings: Settings) -> ConcurrencyOptions:
    """Durable Task concurrency for WORKER_MAX_CONCURRENT_RUNS agent runs at once.

    One thread per run, and as many entity work items in progress as threads:
    runs beyond that wait in the worker's own queue, where `report_queued_runs`
    sees them, rather than unseen in the thread pool's.
    """
    slots = settings.worker_max_concurrent_runs
    return ConcurrencyOptions(maximum_concurrent_entity_work_items=slots, maximum_thread_pool_workers=slots)


@dataclass
class WaitingRun:
    session_key: str
    correlation_ids: list[str]
    received: float
    last_notice: float = float("-inf")


class QueuedRunReporter:
    """Tracks the runs a worker received but has not started; writes `queued` entries for them."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.heartbeat_seconds = settings.heartbeat_seconds
        self.slots = settings.worker_max_concurrent_runs
        self._ttl_seconds, self._max_length = settings.stream_ttl_seconds, settings.stream_max_length
        self._redis_url = redis_url
        self.notices_written = 0
        self._waiting: dict[int, WaitingRun] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def received(self, run: WaitingRun) -> Callable[[], None]:
        """Note a run that arrived; returns the function to call when it starts."""
        telemetry.runs_queued.add(len(run.correlation_ids), _THIS_WORKER)
        with self._lock:
            self._waiting[id(run)] = run
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._report_while_waiting, name="queued-runs", daemon=True)
                self._thread.start()
        return lambda: self._started(run)

    def _started(self, run: WaitingRun) -> None:
        with self._lock:
            if self._waiting.pop(id(run), None) is not None:
                telemetry.runs_queued.add(-len(run.correlation_ids), _THIS_WORKER)

    def _report_while_waiting(self) -> None:
        # A thread of its own, alive only while runs wait: the agent's loop may be busy, and the
        # Durable Task worker's loop is not ours to block. Redis is only opened if a run waits long.
        handler: RedisStreamResponseHandler | None = None
        try:
            while True:
                time.sleep(TICK_SECONDS)
                with self._lock:
                    if not self._waiting:
                        self._thread = None
                        return
                    notices = self._due_notices(time.monotonic())
                if notices:
                    handler = handler or run_agent_coroutine(self._open())
                    self._write(handler, notices)
        finally:
            if handler is not None:
                run_agent_coroutine(handler.aclose())

    async def _open(self) -> RedisStreamResponseHandler:
        # On the agent's event loop (run_agent_coroutine), like the callback's own client.
        return RedisStreamResponseHandler.from_url(
            self._redis_url, ttl_seconds=self._ttl_seconds, max_length=self._max_length
        )

    def _due_notices(self, now: float) -> Notices:
        due = [
            run
            for run in self._waiting.values()
            if now - run.received >= QUEUED_AFTER_SECONDS and now - run.last_notice >= self.heartbeat_seconds
        ]
        for run in due:
            run.last_notice = now
        extra = {"worker": WORKER_NAME, "slots": str(self.slots), "waiting": str(len(self._waiting))}
        return [
            (run.session_key, [entry_fields(QUEUED, run_id, 0, **extra) for run_id in run.correlation_ids])
            for run in due
        ]

    def _write(self, handler: RedisStreamResponseHandler, notices: Notices) -> None:
        try:  # the TTL too: a new session's stream may start with this notice
            run_agent_coroutine(handler.write_streams(notices, {key for key, _ in notices}))
            self.notices_written += sum(len(entries) for _, entries in notices)
        except REDIS_FAILURES as error:  # a missed notice is not worth failing a run for
            logger.warning("could not write queued notices (%s)", error)


def report_queued_runs(worker: W, settings: Settings, redis_url: str) -> W:
    """Workaround, durabletask 1.12.0: runs waiting for a worker thread are invisible to the application.

    The worker parks entity work items beyond its concurrency limit in a
    private asyncio queue, with no hook to see them. This wraps the private
    `_async_worker_manager.submit_entity_batch` so each run is noted when it
    arrives and when its thread picks it up. See docs/workarounds.md.
    """
    reporter = QueuedRunReporter(settings, redis_url)
    manager = worker._async_worker_manager  # pyright: ignore[reportPrivateUsage]
    submit = manager.submit_entity_batch

    def submit_noting_arrival(
        func: Callable[..., Any], cancellation_func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        run = waiting_run(args[0]) if args else None
        if run is None:
            return submit(func, cancellation_func, *args, **kwargs)
        started = reporter.received(run)

        def run_when_started(*run_args: Any, **run_kwargs: Any) -> Any:
            started()
            with telemetry.counted(telemetry.runs_running, _THIS_WORKER, len(run.correlation_ids)):
                return func(*run_args, **run_kwargs)

        def cancel_when_abandoned(*cancel_args: Any, **cancel_kwargs: Any) -> Any:
            started()
            return cancellation_func(*cancel_args, **cancel_kwargs)

        return submit(run_when_started, cancel_when_abandoned, *args, **kwargs)

    manager.submit_entity_batch = submit_noting_arrival
    return worker


def waiting_run(request: pb.EntityBatchRequest | pb.EntityRequest) -> WaitingRun | None:
    """The session key and correlation ids of the agent runs in one entity work item (None: not agent runs)."""
    batch = helpers.convert_to_entity_batch_request(request)[0] if isinstance(request, pb.EntityRequest) else request
    try:
        key = validate_session_key(EntityInstanceId.parse(batch.instanceId).key)
        correlation_ids = [
            str(json.loads(op.input.value)["correlationId"]) for op in batch.operations if op.operation == "run"
        ]
    except (ValueError, KeyError, TypeError):
        return None
    return WaitingRun(key, correlation_ids, time.monotonic()) if correlation_ids else None
