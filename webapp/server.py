"""Serving the web app: `uv run web.py [--port 8000]`, then open the printed URL.

The app itself (routes, SSE, the worker in its lifespan) is webapp/app.py; the page is
webapp/static/index.html. This module parses the flags, checks the configuration before anything
starts, runs uvicorn on 127.0.0.1, and turns a start-up failure into one `error:` line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette

from support.config import check_environment
from support.console import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, fail, run_entry_point, setup_logging
from support.telemetry import configure_telemetry
from webapp.app import create_app


class _HideReportedStartupFailure(logging.Filter):
    """Drop uvicorn's traceback of a startup failure that main() reports as one `error:` line."""

    def __init__(self, app: Starlette) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return self.app.state.startup_error is None


def main(argv: list[str] | None = None) -> int:
    return run_entry_point(lambda: serve(argv))


def serve(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="web.py", description="Serve the TravelPlanner over HTTP and SSE.")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default: 8000)")
    args = parser.parse_args(argv)
    setup_logging()
    if not 1 <= args.port <= 65_535:
        return fail(f"--port must be a TCP port from 1 to 65535 (got {args.port})", EXIT_USAGE)
    check_environment()  # a bad variable fails here, before anything starts (the lifespan reads them again)
    configure_telemetry("web")  # when asked for: support/telemetry.py
    app = create_app()
    logging.getLogger("uvicorn.error").addFilter(_HideReportedStartupFailure(app))
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)
    config.timeout_graceful_shutdown = 1  # open event streams must not hold Ctrl+C up
    server = _Server(config)
    with contextlib.suppress(SystemExit):  # uvicorn exits this way when the lifespan (or binding the port) fails
        server.run()
    if app.state.startup_error is not None:
        return fail(app.state.startup_error, EXIT_USAGE)
    return EXIT_OK if server.started else EXIT_RUN_FAILED


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Workaround (uvicorn 0.54): after a clean shutdown on Ctrl+C or SIGTERM, uvicorn raises the
        # signal again, which ends this program with a KeyboardInterrupt traceback. It stopped as
        # asked: exit 0 with one line, like worker.py.
        with super().capture_signals():
            yield
            if self._captured_signals:
                print("[web] stopped", file=sys.stderr, flush=True)
            self._captured_signals.clear()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        # uvicorn's own "running on" line is an INFO log, hidden at the sample's WARNING level.
        if self.started:
            url = f"http://{self.config.host}:{self.config.port}"
            print(f"[web] open {url} (Ctrl+C to stop)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
