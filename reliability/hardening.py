"""Production hardening for a worker, in one call: nothing here is needed to stream an answer.

worker.py's `RedisStreamCallback` streams answers on a bare `DurableAIAgentWorker` (the tutorial
test copies it alone). A worker that serves many runs for a long time also wants:

- `queued` notices (reliability/worker_capacity.py): a run waiting for a free run slot is
  reported on its stream, so its readers say "waiting for a free worker" instead of timing out;
- shorter garbage-collector pauses (support/gc_pauses.py), for a process that lives for hours;
- fences and final markers that follow the scheduler (reliability/dispatch.py): a run delivered
  again outranks its earlier delivery, and its `done` is written once the scheduler recorded it;
- a drain (reliability/drain.py): how long `stop_worker` (reliability/shutdown.py) lets running
  answers finish. worker.py, whose scheduler outlives it, drains for WORKER_DRAIN_SECONDS; a
  process whose scheduler stops with it (sample.py, web.py), or a test, gives runs a moment only.
"""

from __future__ import annotations

from typing import TypeVar

from durabletask.worker import TaskHubGrpcWorker

from reliability.dispatch import track_dispatches
from reliability.drain import track_work
from reliability.shutdown import GRACE_SECONDS
from reliability.worker_capacity import report_queued_runs
from support.config import Settings
from support.gc_pauses import freeze_startup_objects
from support.services import Services

W = TypeVar("W", bound=TaskHubGrpcWorker)


def harden_worker(worker: W, settings: Settings, services: Services, *, long_lived: bool = False) -> W:
    """Apply the hardening above to a worker that has not started yet; returns the same worker."""
    report_queued_runs(worker, settings, services.redis_url)  # patches a private durabletask queue: see its docstring
    # A scheduler that outlives this process delivers what it abandons to another worker; worker.py
    # (long_lived) lets its runs finish first. Anywhere else, a stop is a stop (e.g. sample.py's Ctrl+C).
    track_dispatches(worker)  # fences by delivery order; a done waits for the scheduler to accept the run
    drains = long_lived and not services.scheduler_started_here
    track_work(worker, settings.worker_drain_seconds if drains else GRACE_SECONDS)  # outermost: after queued
    if long_lived:  # not in a test or a one-shot process: the freeze lasts as long as the process
        freeze_startup_objects()
    return worker
