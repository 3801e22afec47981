"""Serving the web app: `uv run web.py [--port 8000]`, then open the printed URL.

The app itself (routes, SSE, the worker in its lifespan) is webapp/app.py; the page is
webapp/static/index.html. This module parses the flags, checks the configuration before anything
starts, runs uvicorn on 127.0.0.1, and turns a start-up failure into one `error:` line.

Slow and half-open clients (uvicorn's settings, and one it lacks):
- a request head (request line and headers) must arrive whole within REQUEST_HEAD_SECONDS of the
  connection opening, or of the previous response on a kept-alive connection: uvicorn 0.54 has no
  such timeout, and 300 half-sent heads (slowloris) were held open for good (`_H11WithHeadDeadline`);
- an idle kept-alive connection is closed after `timeout_keep_alive` (5 s, uvicorn's default);
- a request head larger than h11's 16 KiB limit is refused (`h11_max_incomplete_event_size`), a
  body larger than MAX_BODY_BYTES with 413 (webapp/guards.py);
- an open stream is not timed out (a reader may rightly wait minutes); it is capped by
  WEB_MAX_STREAMS, and a client too slow to take its events is cut off (webapp/stream_hub.py).

Ctrl+C or SIGTERM with streams open: every reader first gets an `error` event saying the server is
stopping, with the id to resume from; then uvicorn closes the connections and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from support.config import check_environment
from support.console import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, fail, run_entry_point, setup_logging
from support.gc_pauses import collect_fully_less_often, freeze_startup_objects
from support.telemetry import configure_telemetry
from webapp.app import create_app
from webapp.stream_hub import ServerStoppingError

REQUEST_HEAD_SECONDS = 10.0


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
    server = _Server(uvicorn_config(app, args.port, log_config=None, access_log=False), app)
    with contextlib.suppress(SystemExit):  # uvicorn exits this way when the lifespan (or binding the port) fails
        server.run()
    if app.state.startup_error is not None:
        return fail(app.state.startup_error, EXIT_USAGE)
    return EXIT_OK if server.started else EXIT_RUN_FAILED


def uvicorn_config(app: Starlette, port: int, **options: Any) -> uvicorn.Config:
    """How web.py (and the tests' servers) run the app in uvicorn: loopback, the slow-client timeouts above."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=_H11WithHeadDeadline, **options)
    config.timeout_graceful_shutdown = 1  # open event streams must not hold Ctrl+C up
    return config


class _H11WithHeadDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request head is not whole in REQUEST_HEAD_SECONDS."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_a_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._expect_a_head()  # the next request on a kept-alive connection

    def _expect_a_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(REQUEST_HEAD_SECONDS, self._close_if_no_head)

    def _close_if_no_head(self) -> None:
        # h11 leaves IDLE once the whole head arrived; bytes trickling in (slowloris) do not count.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Before uvicorn (and sse-starlette) start closing connections: tell every reader why, with its resume id.
        hub = getattr(self.app.state, "hub", None)
        if hub is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(hub.stop, ServerStoppingError("the server is stopping"))
        super().handle_exit(sig, frame)

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
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        _collect_for_long_lived_streams()
        # uvicorn's own "running on" line is an INFO log, hidden at the sample's WARNING level.
        if self.started:
            url = f"http://{self.config.host}:{self.config.port}"
            print(f"[web] open {url} (Ctrl+C to stop)", file=sys.stderr, flush=True)


def _collect_for_long_lived_streams() -> None:
    """Garbage collection for a process that holds thousands of open streams (support/gc_pauses.py).

    A full collection walks every object the collector tracks, and pauses every stream meanwhile:
    ~100 objects per open stream, so ~0.6 s at 10,000 readers (docs/benchmarks.md, the fan-out section).
    What start-up made (frameworks, agent, worker, scheduler) is frozen out of it (~150 ms of each pause
    at 1,000 readers), and full collections come 10x less often.
    """
    freeze_startup_objects()
    collect_fully_less_often()


if __name__ == "__main__":
    sys.exit(main())
