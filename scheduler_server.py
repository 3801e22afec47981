"""The embedded scheduler (and Redis) as their own process: workers come and go, runs survive them.

`worker.py` alone hosts the scheduler and Redis inside itself: if that worker dies, its runs die
with it. Run them here instead, and a worker killed mid-answer has its run delivered again to
the next worker (`support/redelivering_scheduler.py`), as the Durable Task Scheduler does:

    uv run scheduler_server.py                     # terminal 1: scheduler on 8080, Redis on 6379
    uv run worker.py                               # terminals 2 and 3: they find both
    uv run client.py -m "Plan a 2-day trip to Rome"

It starts a private Redis on LOCAL_REDIS_PORT unless REDIS_CONNECTION_STRING is set or something
answers there already. The scheduler listens on loopback only and has no authentication:
`--host 0.0.0.0` exposes it to the network, only do that on a network you trust. It prints its
ready line on stderr and runs until Ctrl+C or SIGTERM (exit 0). State lives in memory and is lost
on exit; the Durable Task Scheduler emulator (`docker compose up`) or Azure is the durable one.
"""

from __future__ import annotations

import argparse
import socket
import sys
from contextlib import ExitStack

from support.config import Settings, check_environment
from support.console import EXIT_OK, EXIT_USAGE, announce, fail, run_entry_point, setup_logging
from support.ports import port_answers
from support.redelivering_scheduler import LOOPBACK
from support.services import (
    embedded_scheduler,
    listen_for_shutdown_signals,
    start_shared_redis,
    wait_for_shutdown_signal,
)
from support.telemetry import configure_telemetry


def parse_arguments(argv: list[str] | None, default_port: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the in-memory Durable Task scheduler (and Redis) on their own.")
    parser.add_argument("--port", type=int, default=default_port, help=f"gRPC port (default: {default_port})")
    parser.add_argument(
        "--host", default=LOOPBACK, help="address to listen on (default: loopback only; 0.0.0.0 exposes it)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65_535:
        parser.error(f"--port must be from 1 to 65535 (got {args.port})")
    try:
        socket.getaddrinfo(args.host, args.port)
    except (OSError, UnicodeError):
        parser.error(f"--host must be an address of this machine, such as 127.0.0.1 or 0.0.0.0 (got {args.host!r})")
    return args


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        setup_logging()  # re-deliveries are logged as warnings
        settings = check_environment()  # every variable, before anything starts
        configure_telemetry("scheduler")  # when asked for (durabletask's own spans): support/telemetry.py
        return serve(parse_arguments(argv, settings.local_scheduler_port), settings)

    return run_entry_point(run)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    port, host = args.port, args.host
    if port_answers("localhost", port) or (host != LOOPBACK and port_answers(host, port)):
        return fail(f"something already listens on port {port}; choose another --port", EXIT_USAGE)
    with ExitStack() as stack:
        start_shared_redis(settings, stack)
        stack.enter_context(embedded_scheduler(port, host))
        where = "loopback only" if host == LOOPBACK else f"{host}, WITHOUT authentication"
        listen_for_shutdown_signals()  # from now on a signal is counted, not raised: one that follows "ready" too
        announce(
            "scheduler",
            f"in-memory Durable Task scheduler ready on port {port} ({where}); it re-delivers the runs of a "
            f"worker that dies; workers and clients: ENDPOINT=http://localhost:{port} (Ctrl+C to stop)",
        )
        wait_for_shutdown_signal()
        announce("scheduler", "stopping")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
