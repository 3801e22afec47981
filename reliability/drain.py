"""Workaround (durabletask 1.12.0): a worker cannot stop taking work and still complete the work it runs.

`TaskHubGrpcWorker.stop()` is the only way to stop taking work items, and it ends the worker's
`GetWorkItems` stream at once. To a scheduler, a stream that ends is a worker that is gone: it
delivers that worker's unfinished work again right away (the emulator and Azure do, and so does
support/redelivering_scheduler.py). So a rolling deploy, SIGTERM to a worker mid-answer, ran the
answer twice (the tools too), and readers saw two attempts spliced together.

`WorkDrain` keeps the stream open and turns new work away instead. It wraps the worker's private
`_async_worker_manager.submit_*` methods, which receive every work item:

- `stop_taking_work()`: from then on a new work item is abandoned at once, with durabletask's own
  cancellation handler (`AbandonTaskEntityWorkItem` and its twins), so the scheduler gives it to
  another worker;
- `wait_until_idle(seconds, ...)`: the work items already taken run on; each one's completion goes
  over the same connection, still open, and is accepted as it would be any day;
- `abandon_running()`: what is still running when the drain ends is handed back. Its completion
  (a cancelled run's) is sent as an abandon instead, so the scheduler delivers it again rather than
  recording a cancelled run as the answer; one that has not started yet is abandoned unstarted.

Only then does `worker.stop()` end the stream (reliability/shutdown.py `stop_worker`). Check again
when upgrading durabletask: a worker with a drain of its own makes this module code to delete.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import durabletask.internal.orchestrator_service_pb2 as pb
import grpc
from durabletask.worker import TaskHubGrpcWorker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Kind:
    """One kind of work item: the stub method that completes it, and the one (and request) that abandons it."""

    complete: str
    abandon: str
    abandon_request: Callable[..., Any]


_KINDS = {
    "submit_entity_batch": _Kind("CompleteEntityTask", "AbandonTaskEntityWorkItem", pb.AbandonEntityTaskRequest),
    "submit_orchestration": _Kind(
        "CompleteOrchestratorTask", "AbandonTaskOrchestratorWorkItem", pb.AbandonOrchestrationTaskRequest
    ),
    "submit_activity": _Kind("CompleteActivityTask", "AbandonTaskActivityWorkItem", pb.AbandonActivityTaskRequest),
}


@dataclass(eq=False)
class _Taken:
    """A work item this worker took: queued for a thread, or running."""

    abandoned: bool = False


class _StubUnlessAbandoned:
    """The gRPC stub a work item completes through: once its item is abandoned, completing it abandons it."""

    def __init__(self, stub: Any, taken: _Taken, kind: _Kind) -> None:
        self._stub, self._taken, self._kind = stub, taken, kind

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if name != self._kind.complete:
            return method

        def complete_unless_abandoned(result: Any, *args: Any, **kwargs: Any) -> Any:
            if self._taken.abandoned:
                abandon = getattr(self._stub, self._kind.abandon)
                return abandon(self._kind.abandon_request(completionToken=result.completionToken))
            return method(result, *args, **kwargs)

        return complete_unless_abandoned


class WorkDrain:
    """Tracks a worker's work items, so a stop can let them finish first (see the module docstring)."""

    def __init__(self, worker: TaskHubGrpcWorker, seconds: float) -> None:
        self.seconds = seconds  # how long a stop lets the running work finish
        self._lock = threading.Lock()
        self._taken: set[_Taken] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._draining = False
        manager = worker._async_worker_manager  # pyright: ignore[reportPrivateUsage]
        for name, kind in _KINDS.items():
            setattr(manager, name, self._submitting(getattr(manager, name), kind))

    @property
    def running(self) -> int:
        """Work items taken and not finished (queued for a thread, or running)."""
        with self._lock:
            return len(self._taken)

    def stop_taking_work(self) -> None:
        self._draining = True

    def wait_until_idle(self, seconds: float, interrupted: Callable[[float], bool]) -> bool:
        """True once every work item taken has finished, within `seconds`; False if not, or `interrupted`.

        `interrupted(timeout)` waits up to `timeout` and says whether to stop waiting at once (a
        second Ctrl+C); it is called on the calling thread, so it may wait for signals.
        """
        deadline = time.monotonic() + seconds
        while not self._idle.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or interrupted(min(remaining, 0.1)):
                return self._idle.is_set()
        return True

    def abandon_running(self) -> int:
        """Hand back every work item still taken (see the module docstring); returns how many."""
        self._draining = True
        with self._lock:
            for taken in self._taken:
                taken.abandoned = True
            return len(self._taken)

    def _submitting(self, submit: Callable[..., None], kind: _Kind) -> Callable[..., None]:
        def submit_unless_draining(
            func: Callable[..., Any], cancellation_func: Callable[..., Any], *args: Any, **kwargs: Any
        ) -> None:
            if self._draining:  # a new work item for a stopping worker: straight back to the scheduler
                _abandon(cancellation_func, args, kwargs)
                return
            taken = self._take()

            def run(request: Any, stub: Any, *rest: Any, **run_kwargs: Any) -> Any:
                try:
                    if taken.abandoned:  # the drain ended before a thread was free for it
                        return cancellation_func(request, stub, *rest, **run_kwargs)
                    return func(request, _StubUnlessAbandoned(stub, taken, kind), *rest, **run_kwargs)
                finally:
                    self._finished(taken)

            def cancel(*cancel_args: Any, **cancel_kwargs: Any) -> Any:  # durabletask abandons it itself
                try:
                    return cancellation_func(*cancel_args, **cancel_kwargs)
                finally:
                    self._finished(taken)

            try:
                submit(run, cancel, *args, **kwargs)
            except BaseException:
                self._finished(taken)
                raise

        return submit_unless_draining

    def _take(self) -> _Taken:
        taken = _Taken()
        with self._lock:
            self._taken.add(taken)
            self._idle.clear()
        return taken

    def _finished(self, taken: _Taken) -> None:
        with self._lock:
            self._taken.discard(taken)
            if not self._taken:
                self._idle.set()


def _abandon(cancellation_func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        cancellation_func(*args, **kwargs)
    except grpc.RpcError as error:  # the scheduler will deliver it again when this worker's stream ends
        logger.warning("could not hand a new work item back to the scheduler: %s", error)


_drains: weakref.WeakKeyDictionary[TaskHubGrpcWorker, WorkDrain] = weakref.WeakKeyDictionary()


def track_work(worker: TaskHubGrpcWorker, seconds: float) -> WorkDrain:
    """Install a `WorkDrain` on `worker` (not started yet); `stop_worker` finds it with `drain_of`."""
    drain = _drains[worker] = WorkDrain(worker, seconds)
    return drain


def drain_of(worker: object) -> WorkDrain | None:
    """The `WorkDrain` of `worker`, if `track_work` installed one."""
    return _drains.get(worker) if isinstance(worker, TaskHubGrpcWorker) else None
