"""Two stop signals microseconds apart never hang a process, and never break off its clean-up (issue 23).

A stop signal often comes twice: `uv run` forwards a process group's SIGINT or SIGTERM to its
child, so Python gets two, a few microseconds apart; people press Ctrl+C twice. A handler that
takes a lock (`threading.Event.set()` does) deadlocks when the second lands while the first holds
it: 8 of 150 tries hung, one for 15 minutes. Each try here starts a small process, waits until it
is ready, sends two signals 0-300 µs apart, and waits for it to exit (the timeout only turns a
hang into a failure). Both ways of support/shutdown_signals.py are tried, a hundred times each:

- worker.py's and scheduler_server.py's: `wait_for_shutdown_signal()`, then a stop;
- every other entry point's: `run_async` (sample.py's client) interrupted, then a clean-up in
  Python code, during which the second signal lands. The clean-up must finish: in sample.py it
  stops the run before the Redis and scheduler the run writes to.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

TRIES = 100

_CLEAN_UP = """
import time

def clean_up():  # Python code running while the second signal arrives, like a worker's stop
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        pass
    print("stopped", flush=True)
"""

_WAITING_PROCESS = f"""{_CLEAN_UP}
from support.shutdown_signals import listen_for_shutdown_signals, wait_for_shutdown_signal
listen_for_shutdown_signals()
print("ready", flush=True)
wait_for_shutdown_signal()
clean_up()
"""

_INTERRUPTED_PROCESS = f"""{_CLEAN_UP}
import asyncio, signal
from support.shutdown_signals import first_stop_signal, run_async, stop_signals_interrupt

async def run_until_stopped():
    print("ready", flush=True)
    await asyncio.sleep(3600)

with stop_signals_interrupt():
    try:
        run_async(run_until_stopped())
    except KeyboardInterrupt:
        print("interrupted by", signal.Signals(first_stop_signal()).name, flush=True)
    finally:
        clean_up()
"""

_PAIRS = [
    (signal.SIGINT, signal.SIGTERM),
    (signal.SIGTERM, signal.SIGINT),
    (signal.SIGINT, signal.SIGINT),
    (signal.SIGTERM, signal.SIGTERM),
]


def _send_two(process: subprocess.Popen[str], first: int, second: int, gap_ns: int) -> None:
    process.send_signal(first)
    until = time.perf_counter_ns() + gap_ns  # a busy wait: a sleep this short is rounded up to ~50 µs or more
    while time.perf_counter_ns() < until:
        pass
    process.send_signal(second)


def _one_try(code: str, first: int, second: int, gap_ns: int) -> str:
    """Start `code`, send two signals `gap_ns` apart once it is ready, and return what it printed."""
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        _send_two(process, first, second, gap_ns)
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"hung after {signal.Signals(first).name} then {signal.Signals(second).name} {gap_ns} ns later")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stderr == "", stderr  # no KeyboardInterrupt traceback from the second signal
    return stdout


@pytest.mark.parametrize("code", [_WAITING_PROCESS, _INTERRUPTED_PROCESS], ids=["wait_for_signal", "run_async"])
def test_two_signals_microseconds_apart_never_hang_and_the_clean_up_finishes(code: str) -> None:
    chance = random.Random(23)  # the same tries every run
    for attempt in range(TRIES):
        first, second = _PAIRS[attempt % len(_PAIRS)]
        stdout = _one_try(code, first, second, gap_ns=chance.randrange(0, 300_000))
        assert stdout.endswith("stopped\n"), (attempt, stdout)
        if code is _INTERRUPTED_PROCESS:  # once only: pending together, Python handles SIGINT's first
            assert stdout.count("interrupted by SIG") == 1, (attempt, stdout)
