"""Stopping a worker on Ctrl+C or SIGTERM: stop taking work, let runs finish briefly, abandon the rest.

Workaround (durabletask 1.12.0): `worker.stop()` stops taking work at once, then waits for every
running work item to END, which for an agent run means the rest of the answer, however long
the model takes (it joins for 30 s, then without limit). `stop_worker` bounds that:

1. `worker.stop()` runs on a helper thread: no new work from now on;
2. runs that end within GRACE_SECONDS finish normally (their done markers are written);
3. the rest are abandoned: the callback's `aclose()` cancels each run's task, so the durable
   entity rolls that turn back (the conversation keeps only completed turns), and writes what
   was queued. When the scheduler stops with this process (sample.py, worker.py hosting it), no
   one will run them again: each unfinished stream ends with an error marker, and readers say
   so at once. A scheduler that outlives this worker (scheduler_server.py, the emulator, Azure)
   delivers them again to another worker, whose answer readers show as a restart: no marker;
4. the caller then stops the private services (Redis last: the markers are written by then).

The cancelled runs and the worker's own cancelled work-item stream are logged by durabletask as an
error and a warning ("Error in work item stream: <_MultiThreadedRendezvous ... CANCELLED>");
`quiet_worker_logger` drops exactly those records, so a normal shutdown prints nothing.

Seen at work: tests/reliability/test_shutdown.py; README.md, "Two terminals", says what Ctrl+C on a worker does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable
from typing import Protocol

from agent_framework_durabletask import run_agent_coroutine

from reliability.write_behind import ABANDONED
from support.services import Services

GRACE_SECONDS = 0.5  # how long running runs may take to finish before they are abandoned
# durabletask's work-item consumer notices the stop between 1 s polls of its queue.
_WORKER_POLL_SECONDS = 1.5


class StoppableWorker(Protocol):
    def stop(self) -> None: ...


class ClosableCallback(Protocol):
    def aclose(self, abandon_reason: str | None = ...) -> Awaitable[None]: ...


def stop_worker(
    worker: StoppableWorker, callback: ClosableCallback, services: Services, grace_seconds: float = GRACE_SECONDS
) -> None:
    """Stop `worker` in a second or two, whatever its runs are doing (see the module docstring)."""
    if services.scheduler_started_here:
        # This process's own scheduler stops right after: that it re-delivers this worker's runs
        # (to no one) is not news. A standalone scheduler still says so.
        logging.getLogger("support.redelivering_scheduler").addFilter(_not_redelivery)
    stopping = threading.Thread(target=worker.stop, name="worker-stop", daemon=True)
    stopping.start()
    stopping.join(grace_seconds)
    reason = ABANDONED if services.scheduler_started_here else None  # None: delivered again elsewhere
    run_agent_coroutine(_aclose(callback, reason))  # on the agent loop, where the runs and their writers live
    stopping.join(_WORKER_POLL_SECONDS)


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
