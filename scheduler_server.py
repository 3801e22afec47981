"""A standalone in-memory Durable Task scheduler, for running several workers side by side.

`worker.py` hosts the embedded scheduler inside itself, which is fine for one
worker. To see scale-out (many workers sharing one task hub) the scheduler
must outlive any single worker, so this script runs the same in-memory backend
(`support.services.embedded_scheduler`) on its own:

    uv run scheduler_server.py --port 8080                 # terminal 1
    ENDPOINT=http://localhost:8080 uv run worker.py        # terminals 2 and 3
    ENDPOINT=http://localhost:8080 uv run client.py -m "Plan a 2-day trip to Rome"

Point every worker at the same Redis too (REDIS_CONNECTION_STRING, or the one
the first worker started on localhost:6379). It prints one ready line on
stderr and runs until Ctrl+C or SIGTERM (exit 0). State lives in memory and is
lost on exit; the Durable Task Scheduler emulator (`docker compose up`) or
Azure is the durable equivalent.
"""

from __future__ import annotations

import argparse
import sys

from support.console import EXIT_OK, EXIT_USAGE, announce, fail, run_entry_point
from support.environment import check_environment
from support.ports import port_answers
from support.services import embedded_scheduler, wait_for_shutdown_signal

DEFAULT_PORT = 8080


def parse_port(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the in-memory Durable Task scheduler on its own.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC port (default: {DEFAULT_PORT})")
    port: int = parser.parse_args(argv).port
    if not 1 <= port <= 65_535:
        parser.error(f"--port must be from 1 to 65535 (got {port})")
    return port


def main(argv: list[str] | None = None) -> int:
    return run_entry_point(lambda: serve(parse_port(argv)))


def serve(port: int) -> int:
    check_environment()  # workers and clients share this .env: a bad value fails here too, before the port opens
    if port_answers("localhost", port):
        # gRPC servers on Linux bind with SO_REUSEPORT, so a second one would share the port silently.
        return fail(f"something already listens on localhost:{port}; choose another --port", EXIT_USAGE)
    with embedded_scheduler(port):
        announce(
            "scheduler",
            f"in-memory Durable Task scheduler ready on localhost:{port}; workers and clients: "
            f"ENDPOINT=http://localhost:{port} (Ctrl+C to stop)",
        )
        wait_for_shutdown_signal()
        announce("scheduler", "stopping")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
