"""Console plumbing shared by every entry point: status lines, logging, telemetry and exit codes.

stdout carries the answer only; everything else is one line on stderr. `run_entry_point` is the
single place that maps an outcome to an exit status:

    0  success                 1  the run failed (Redis, the scheduler, a bug)
    2  bad usage or config     130  interrupted (Ctrl+C), 143 (SIGTERM)
                               141  stdout closed early (`| head`): quietly, like coreutils
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from redis.exceptions import RedisError

from support.errors import UsageError
from support.shutdown_signals import first_stop_signal, stop_signals_interrupt
from support.shutdown_signals import run_async as run_async  # for the entry points, with the rest
from support.telemetry import configure_telemetry as configure_telemetry  # for every entry point, with the rest

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect of a program stopped by Ctrl+C
EXIT_TERMINATED = 143  # 128 + SIGTERM
# 128 + SIGPIPE: what a shell reports for `seq 1000000 | head -1`, where the reader stopped reading.
# Quiet, as every such tool is, and not 0: the answer was not delivered in full (`set -o pipefail`).
EXIT_STDOUT_CLOSED = 141


class NothingSent(KeyboardInterrupt):
    """Ctrl+C at a prompt: the program stops at once, and no message went to the agent."""


def announce(component: str, message: str, *, after_a_partial_line: bool = False) -> None:
    """One status line on stderr: `[component] message`, in one write.

    `print` writes the text and its line break separately, and another process sharing the
    terminal (a client streaming an answer) can write in between. `after_a_partial_line` starts
    the line with a break, in the same write, for a line written while someone is mid-line.
    """
    _write_line(f"[{component}] {message}", after_a_partial_line)


@functools.cache
def announce_once(component: str, message: str) -> None:
    """`announce`, but each distinct line at most once per process (e.g. the model choice)."""
    announce(component, message)


def fail(message: str, exit_code: int = EXIT_USAGE) -> int:
    """Print one `error:` line on stderr and return the exit code to use."""
    _write_line(f"error: {message}")
    return exit_code


def _write_line(line: str, after_a_partial_line: bool = False) -> None:
    line_break = "\n" if after_a_partial_line else ""
    sys.stderr.write(f"{line_break}{line}\n")  # short, and stderr is line-buffered: one write(2)
    sys.stderr.flush()


def run_entry_point(body: Callable[[], int], *, resume_hint: Callable[[], str] | None = None) -> int:
    """Run an entry point's body; every way it can end becomes one line and an exit status.

    `resume_hint` says how a reader picks up where it stopped, after Ctrl+C or a Redis failure.
    SIGTERM stops the body like Ctrl+C does (Python's default would end the process on the spot,
    skipping every clean-up), unless the body installs its own handler, as worker.py does. Only the
    first of them interrupts: a repeat (`uv run` forwards a process group's signal, so Python gets
    it twice) must not break off the clean-up half-way (support/shutdown_signals.py).
    """
    with stop_signals_interrupt():
        return _run(body, resume_hint)


def _run(body: Callable[[], int], resume_hint: Callable[[], str] | None) -> int:
    try:
        return body()
    except UsageError as error:
        return fail(str(error), EXIT_USAGE)
    except NothingSent:
        announce("client", "stopped at the prompt; nothing was sent", after_a_partial_line=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if resume_hint is not None:
            announce("client", resume_hint(), after_a_partial_line=True)
        return EXIT_TERMINATED if first_stop_signal() == signal.SIGTERM else EXIT_INTERRUPTED
    except grpc.RpcError as error:
        return fail(f"the scheduler failed the request: {error.code().name} {error.details()}", EXIT_RUN_FAILED)  # type: ignore[attr-defined]
    except RedisError as error:
        hint = f"; {resume_hint()}" if resume_hint is not None else ""
        return fail(f"Redis failed while streaming ({error}){hint}", EXIT_RUN_FAILED)
    except BrokenPipeError:  # stdout's reader went away (`| head -2`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_STDOUT_CLOSED
    except Exception as error:  # a bug or an unforeseen failure: still one line, details on request
        if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
            raise
        return fail(f"{type(error).__name__}: {error} (run with LOG_LEVEL=DEBUG for details)", EXIT_RUN_FAILED)


class _OneLineFormatter(logging.Formatter):
    """Log records as single lines: an exception shows as its type and message, not a traceback."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's own method name
        return f"  ({ei[0].__name__}: {ei[1]})" if ei and ei[0] else ""

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return ""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " ")


def setup_logging(environ: Mapping[str, str] | None = None) -> None:
    """Warnings and errors on stderr, one line each; LOG_LEVEL=DEBUG shows everything with tracebacks."""
    level = (environ or os.environ).get("LOG_LEVEL", "WARNING").upper()
    handler = logging.StreamHandler(sys.stderr)
    if level != "DEBUG":
        handler.setFormatter(_OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "WARNING", handlers=[handler])
    if level != "DEBUG":
        # The gRPC worker logs every reconnect and its own shutdown as warnings: noise in a demo.
        logging.getLogger("durabletask").setLevel(logging.ERROR)
        # Its failures reach the user as one error line (support/redis_connection.py); its own warnings repeat them.
        logging.getLogger("azure.identity").setLevel(logging.ERROR)
