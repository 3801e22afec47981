"""Stopping a worker on Ctrl+C or SIGTERM: stop taking work, let running answers finish, abandon the rest.

Workaround (durabletask 1.12.0): `worker.stop()` ends the work-item stream at once (a scheduler then
delivers the worker's runs to another worker, while this one still runs them) and then waits for
every running work item to END, however long the model takes (30 s, then without limit).
`stop_worker` does it in this order instead, with the worker's `WorkDrain` (reliability/drain.py):

1. no new work from now on: a work item that arrives is handed straight back to the scheduler,
   and the stream stays open, so the scheduler still counts this worker's runs as its own;
2. running answers finish, for up to the drain's time: WORKER_DRAIN_SECONDS (30) for worker.py
   when its scheduler outlives it (scheduler_server.py, the emulator, Azure): a rolling deploy
   loses nothing and runs nothing twice. Anywhere else (sample.py and web.py host their scheduler),
   GRACE_SECONDS. A second Ctrl+C or SIGTERM ends the drain at once;
3. the rest are abandoned: the callback's `aclose()` cancels each run's task, so the durable
   entity rolls that turn back (the conversation keeps only completed turns), and writes what
   was queued; each run's completion goes to the scheduler as an abandon. When the scheduler
   stops with this process, no one will run them again: each unfinished stream ends with an error
   marker, and readers say so at once. A scheduler that outlives this worker delivers them again
   to another worker, whose answer readers show as a restart: no marker;
4. `worker.stop()` ends the stream; the caller then stops the private services (Redis last: the
   markers are written by then).

The cancelled runs and the worker's own cancelled work-item stream are logged by durabletask as an
error and a warning ("Error in work item stream: <_MultiThreadedRendezvous ... CANCELLED>");
`quiet_worker_logger` drops exactly those records, so a normal shutdown prints nothing.

Seen at work: tests/reliability/test_shutdown.py (Ctrl+C) and tests/reliability/test_drain.py (SIGTERM drains a
standalone worker); README.md, "Two terminals", says what Ctrl+C on a worker does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable
from typing import Protocol

from agent_framework_durabletask import run_agent_coroutine

from reliability.drain import WorkDrain, drain_of
from reliability.write_behind import ABANDONED
from support.console import announce
from support.services import Services
from support.shutdown_signals import second_shutdown_signal

GRACE_SECONDS = 0.5  # how long running runs may take to finish when the scheduler stops with this process
# durabletask's work-item consumer notices the stop between 1 s polls of its queue.
_WORKER_POLL_SECONDS = 1.5
_HANDBACK_SECONDS = 1.0  # for cancelled runs to end and be handed back (one gRPC call each)
_ANNOUNCE_DRAINS_LONGER_THAN = 5.0  # a moment's grace is not news; a drain a person may wait on is


class StoppableWorker(Protocol):
    def stop(self) -> None: ...


class ClosableCallback(Protocol):
    def aclose(self, abandon_reason: str | None = ...) -> Awaitable[None]: ...


def stop_worker(
    worker: StoppableWorker, callback: ClosableCallback, services: Services, grace_seconds: float = GRACE_SECONDS
) -> None:
    """Stop `worker`: drain its runs if it has a `WorkDrain`, else give them `grace_seconds` (see above)."""
    if services.scheduler_started_here:
        # This process's own scheduler stops right after: that it re-delivers this worker's runs
        # (to no one) is not news. A standalone scheduler still says so.
        logging.getLogger("support.redelivering_scheduler").addFilter(_not_redelivery)
    drain = drain_of(worker)
    reason = ABANDONED if services.scheduler_started_here else None  # None: delivered again elsewhere
    if drain is None:  # a worker without one: durabletask's own stop, bounded
        stopping = threading.Thread(target=worker.stop, name="worker-stop", daemon=True)
        stopping.start()
        stopping.join(grace_seconds)
        run_agent_coroutine(_aclose(callback, reason))  # on the agent loop, where the runs and their writers live
        stopping.join(_WORKER_POLL_SECONDS)
        return
    _drain(drain)
    run_agent_coroutine(_aclose(callback, reason))  # cancels what is left; their completions become abandons
    if not services.scheduler_started_here:  # handed back while the stream is open, for another worker
        drain.wait_until_idle(_HANDBACK_SECONDS, _pause)
    stopping = threading.Thread(target=worker.stop, name="worker-stop", daemon=True)
    stopping.start()
    stopping.join(_WORKER_POLL_SECONDS)


def _drain(drain: WorkDrain) -> None:
    drain.stop_taking_work()
    running = drain.running
    told = running > 0 and drain.seconds > _ANNOUNCE_DRAINS_LONGER_THAN
    if told:
        announce(
            "worker",
            f"taking no new runs; letting {_runs(running)} finish (up to {drain.seconds:g} s; "
            "Ctrl+C or SIGTERM again to stop now)",
        )
    drain.wait_until_idle(drain.seconds, second_shutdown_signal)
    abandoned = drain.abandon_running()
    if told and abandoned:
        announce("worker", f"abandoning {_runs(abandoned)}: the scheduler delivers them to another worker")
    elif told:
        announce("worker", "every running answer finished")


def _pause(seconds: float) -> bool:
    time.sleep(seconds)
    return False  # signals no longer shorten anything: this wait is bounded and brief


def _runs(count: int) -> str:
    return f"{count} running answer{'s' if count != 1 else ''}"


async def _aclose(callback: ClosableCallback, abandon_reason: str | None) -> None:
    await callback.aclose(abandon_reason)


def _not_redelivery(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("re-delivering")


class _ShutdownNoise(logging.Filter):
    """Drops durabletask's reports of the cancellations a stop causes on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Error in work item stream") and "StatusCode.CANCELLED" in message:
            return False  # the gRPC stream that worker.stop() cancelled
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (concurrent.futures.CancelledError, asyncio.CancelledError))


def quiet_worker_logger(name: str = "durabletask.worker") -> logging.Logger:
    """The logger to give a Durable Task worker: everything but the noise of a deliberate stop."""
    logger = logging.getLogger(name)
    if not any(isinstance(existing, _ShutdownNoise) for existing in logger.filters):
        logger.addFilter(_ShutdownNoise())
    return logger
