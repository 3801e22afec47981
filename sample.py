"""The whole pattern in one process: a worker and a client, nothing to configure.

    uv run sample.py
    uv run sample.py -m "Plan a 2-day trip to Paris"
    uv run sample.py -m "Plan a 2-day trip to Paris" --json

It takes the same flags as client.py. With nothing configured it starts the
embedded scheduler, a private Redis and the offline demo model, says so in
one line each, then starts a durable worker (worker.py's `setup_worker`) and
runs the client (client.py's `run_client`) against it. Everything it started
stops when it exits.

Read next: worker.py (the writing side), then client.py (the reading side).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

from agent_framework_durabletask import run_agent_coroutine

from client import run_cli
from config import Settings
from local_services import Services
from worker import get_worker, setup_worker


def start_worker_in_process(settings: Settings, services: Services, stack: ExitStack) -> None:
    """Start a durable worker on a background thread; `stack` stops it on exit."""
    worker = get_worker(settings, services)
    callback = setup_worker(worker, settings, services)
    worker.start()
    stack.callback(lambda: run_agent_coroutine(callback.aclose()))
    stack.callback(worker.stop)


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        "sample.py",
        "Run a durable TravelPlanner worker and stream its answer from Redis, in one process.",
        "sample",
        extra_setup=start_worker_in_process,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
