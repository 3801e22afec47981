"""Workaround (durabletask 1.12.0): a run cannot see which delivery of its work item it is, nor whether it counted.

The scheduler hands an entity's work item to a worker with a completion token, and takes the result
back with it. Two things about a run are known only there, and the streaming layer needs both:

- WHICH DELIVERY this is. The local scheduler (support/redelivering_scheduler.py, on durabletask's
  in-memory backend) numbers its deliveries 1, 2, 3, ...: a larger token is a later delivery. An
  attempt's fence (reliability/fencing.py) carries it, so a worker that was handed the run, froze,
  and woke up after the run was delivered again can no longer claim it: "later delivery wins", not
  "later start wins". A token that is not a plain integer (another scheduler's) orders nothing, and
  the fence falls back to the attempt id (newest start wins).
- WHETHER IT COUNTED. The run's answer is recorded only when the scheduler accepts the completion;
  a stale one (the run was delivered again meanwhile) is refused, and a run a draining worker hands
  back is abandoned. A `done` written before that answer would tell readers "this is the answer"
  about one that may never be recorded. So a run's final marker waits for the verdict
  (write_behind.py): written once the completion is accepted, dropped if it is refused or abandoned.

`track_dispatches(worker)` wraps the worker's private `_async_worker_manager.submit_entity_batch`:
each entity work item runs with its `Dispatch` in a context variable (which Agent Framework's
`run_agent_coroutine` carries to the agent's task: `run_coroutine_threadsafe` copies the context),
and its gRPC stub reports the verdict. Install it before reliability/drain.py, so a drain's
"complete becomes abandon" goes through it. Check again when upgrading durabletask.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from durabletask.worker import TaskHubGrpcWorker

logger = logging.getLogger(__name__)

Verdict = Callable[[bool], None]  # called once: True when the scheduler accepted the run's completion


class Dispatch:
    """One delivery of an entity work item: its token, and who waits for the scheduler's verdict."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._waiting: list[Verdict] = []
        self._verdict: bool | None = None

    @property
    def fence(self) -> str | None:
        """This delivery's place in the scheduler's order, for the fence; None when the token orders nothing."""
        return f"dispatch:{self.token}" if self.token.isdecimal() else None

    def on_verdict(self, waiter: Verdict) -> None:
        """Call `waiter` with the verdict once the scheduler gives it (at once if it has)."""
        with self._lock:
            if self._verdict is None:
                self._waiting.append(waiter)
                return
        waiter(self._verdict)

    def decide(self, accepted: bool) -> None:
        with self._lock:
            if self._verdict is not None:
                return
            self._verdict, waiting, self._waiting = accepted, self._waiting, []
        for waiter in waiting:
            waiter(accepted)


_current: contextvars.ContextVar[Dispatch | None] = contextvars.ContextVar("dispatch", default=None)


@contextlib.contextmanager
def delivered(dispatch: Dispatch) -> Iterator[Dispatch]:
    """Run the block as `dispatch` (a work item's thread does); a verdict not given by its end is a refusal."""
    token = _current.set(dispatch)
    try:
        yield dispatch
    finally:
        _current.reset(token)
        dispatch.decide(False)  # no completion was sent (it failed before): nothing counted


def current_dispatch() -> Dispatch | None:
    """The delivery the calling run belongs to; None on a worker without `track_dispatches`."""
    return _current.get()


class _StubReportingVerdict:
    """The stub a work item completes through: its completion's outcome decides the dispatch."""

    def __init__(self, stub: Any, dispatch: Dispatch) -> None:
        self._stub, self._dispatch = stub, dispatch

    def CompleteEntityTask(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the gRPC method's name
        try:
            response = self._stub.CompleteEntityTask(*args, **kwargs)
        except grpc.RpcError as error:
            self._dispatch.decide(False)  # not recorded: the run will be delivered again
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # e.g. UNAVAILABLE: durabletask logs it
                raise
            # Refused as stale: the run was delivered again meanwhile. Expected after a freeze, so a warning.
            logger.warning(
                "the scheduler refused a stale completion (delivery %s): %s", self._dispatch.token, error.details()
            )
            return None
        except BaseException:
            self._dispatch.decide(False)
            raise
        self._dispatch.decide(True)
        return response

    def AbandonTaskEntityWorkItem(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the gRPC method's name
        self._dispatch.decide(False)  # handed back: delivered again, its answer is not this run's
        return self._stub.AbandonTaskEntityWorkItem(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)


def track_dispatches(worker: TaskHubGrpcWorker) -> None:
    """Run each entity work item of `worker` (not started yet) with its `Dispatch` (see the module docstring)."""
    manager = worker._async_worker_manager  # pyright: ignore[reportPrivateUsage]
    submit = manager.submit_entity_batch

    def submit_tracked(func: Callable[..., Any], cancellation_func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        def run(request: Any, stub: Any, completion_token: Any, *rest: Any) -> Any:
            with delivered(Dispatch(str(completion_token))) as dispatch:
                return func(request, _StubReportingVerdict(stub, dispatch), completion_token, *rest)

        submit(run, cancellation_func, *args, **kw)

    manager.submit_entity_batch = submit_tracked
