"""The whole pattern in one process: a durable worker and a streaming client, nothing to configure.

    uv run sample.py -m "Plan a 2-day trip to Paris"
    uv run sample.py --crash-demo     # a worker killed mid-answer, its run delivered to another

It takes client.py's flags. With nothing configured it starts the embedded scheduler, a private Redis
and the offline demo model, each announced (`.env.example` lists the alternatives); all stop on exit.

Read next: worker.py (the writing side), then client.py (the reading side).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

from cli.arguments import build_parser, resume_hint, validate_arguments
from client import Conversation, run_client
from reliability.crash_demo import run_crash_demo
from support.config import check_environment
from support.console import configure_telemetry, run_async, run_entry_point, setup_logging
from support.services import provide_services
from support.sessions import new_session_key
from worker import start_worker


def main(argv: list[str] | None = None) -> int:
    args = build_parser("sample.py", "A durable worker and a client, in one process.", crash_demo=True).parse_args(argv)
    if args.crash_demo:  # a worker killed mid-answer, its run delivered again to another one
        return run_entry_point(lambda: run_crash_demo(args))
    conversation = Conversation(args.session or new_session_key(), args.cursor, args.verify)

    def run() -> int:
        setup_logging()
        validate_arguments(args)  # bad usage: one line and exit 2, before anything starts
        settings = check_environment()
        configure_telemetry("sample")  # ENABLE_CONSOLE_EXPORTERS, OTEL_EXPORTER_OTLP_*...: support/telemetry.py
        with ExitStack() as stack:  # stops, in reverse order, everything started below
            # 1. Services: the scheduler and Redis you configured, or embedded ones (each announced).
            services = provide_services(settings, stack, role="sample", resuming=args.session is not None)
            # 2. The worker (worker.py): the TravelPlanner as a durable entity, streaming to Redis.
            start_worker(settings, services, stack)  # the stack stops it at exit, before the services
            # 3. The client (client.py): start the run without waiting, then tail its answer.
            return run_async(run_client(args, settings, services, conversation))  # asyncio.run; Ctrl+C stops

    return run_entry_point(run, resume_hint=lambda: resume_hint(conversation))


if __name__ == "__main__":
    sys.exit(main())
