"""SIGINT and SIGTERM for the processes that run until stopped (worker.py, scheduler_server.py), without locks.

A stop signal often comes twice. `uv run` forwards SIGINT and SIGTERM to its child when stdin is
not a terminal, so a signal sent to the process group (`timeout`, a process supervisor, a terminal
without a tty) reaches Python twice; and people press Ctrl+C twice. A Python signal handler runs
between two bytecodes of the main thread, so one that takes a lock (`threading.Event.set()` does)
deadlocks when the second signal lands while the first handler holds it.

Here the handler does nothing at all: `signal.set_wakeup_fd` makes Python's C-level handler write
each signal's number to a socket, and the main thread counts them by reading it.

- `wait_for_shutdown_signal()` blocks until the first one;
- `second_shutdown_signal(timeout)` tells a stop in progress (worker.py's drain) that another one
  came: stop now. Where no one waits for signals this way (sample.py, web.py, tests), it just waits.

Seen at work: tests/reliability/test_drain.py (a second SIGTERM or SIGINT ends a drain at once).
"""

from __future__ import annotations

import select
import signal
import socket
import threading
import time

_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _SignalCounter:
    """The stop signals received so far, read from the wakeup socket (main thread only)."""

    def __init__(self) -> None:
        self._reader, writer = socket.socketpair()
        self._writer = writer  # kept open for the life of the process: the C handler writes to it
        self._reader.setblocking(False)
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in _SHUTDOWN_SIGNALS:
            signal.signal(signum, _do_nothing)  # Python-level: no KeyboardInterrupt, no lock
        self.received = 0

    def wait_for(self, count: int, timeout: float | None) -> bool:
        """True once `count` stop signals have arrived in all, waiting up to `timeout` seconds (None: for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.received < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            readable, _, _ = select.select([self._reader], [], [], remaining)
            if readable:
                try:
                    numbers = self._reader.recv(512)
                except BlockingIOError:
                    continue
                self.received += sum(number in _SHUTDOWN_SIGNALS for number in numbers)
        return True


def _do_nothing(signum: int, frame: object) -> None:
    """The Python-level handler: the wakeup socket already carries the signal."""


_counter: _SignalCounter | None = None


def wait_for_shutdown_signal() -> None:
    """Block until SIGINT (Ctrl+C) or SIGTERM: how worker.py and scheduler_server.py run until stopped."""
    global _counter  # one wakeup fd per process, so one counter
    if _counter is None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signals can only be awaited on the main thread")
        _counter = _SignalCounter()
    _counter.wait_for(1, None)


def second_shutdown_signal(timeout: float) -> bool:
    """True when a second stop signal has come, or comes within `timeout` seconds: stop now, not gracefully.

    Without `wait_for_shutdown_signal` (a process that handles its signals otherwise), it waits
    `timeout` and says False.
    """
    if _counter is None:
        time.sleep(timeout)
        return False
    return _counter.wait_for(2, timeout)
