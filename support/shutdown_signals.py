"""SIGINT and SIGTERM for every entry point, without locks.

A stop signal often comes twice. `uv run` forwards SIGINT and SIGTERM to its child when stdin is
not a terminal, so a signal sent to the process group (`timeout`, a process supervisor, a terminal
without a tty) reaches Python twice; and people press Ctrl+C twice. A Python signal handler runs
between two bytecodes of the main thread, so one that takes a lock (`threading.Event.set()` does)
deadlocks when the second signal lands while the first handler holds it.

Two ways, one for each kind of process:

1. Processes that run until stopped (worker.py, scheduler_server.py): the handler does nothing at
   all. `signal.set_wakeup_fd` makes Python's C-level handler write each signal's number to a
   socket, and the main thread counts them by reading it.
   - `wait_for_shutdown_signal()` blocks until the first one (`listen_for_shutdown_signals()`
     starts counting before that);
   - `second_shutdown_signal(timeout)` tells a stop in progress (worker.py's drain) that another
     one came: stop now. Where no one waits for signals this way (sample.py, web.py, tests), it
     just waits.
2. Processes that run a task and stop when it is interrupted (sample.py, client.py; every entry
   point until it installs its own): `stop_signals_interrupt()` installs a handler that only
   reads and writes two module variables. The first signal interrupts: it cancels the coroutine
   `run_async` runs (as `asyncio.run` does on Ctrl+C), or raises KeyboardInterrupt. A repeat does
   nothing, so it cannot break off the clean-up the first one started half-way: sample.py must
   stop its run before the Redis and scheduler it writes to, and that stop takes a second or two.

Seen at work: tests/reliability/test_drain.py (a second SIGTERM or SIGINT ends a drain at once),
tests/support/test_shutdown_signals.py (two signals microseconds apart, a hundred times) and
tests/tutorial/test_first_run.py (a SIGINT to `uv run sample.py`'s process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import signal
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

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


def listen_for_shutdown_signals() -> None:
    """From now on, count SIGINT and SIGTERM instead of letting them interrupt (main thread only)."""
    global _counter  # one wakeup fd per process, so one counter
    if _counter is None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signals can only be awaited on the main thread")
        _counter = _SignalCounter()


def wait_for_shutdown_signal() -> None:
    """Block until SIGINT (Ctrl+C) or SIGTERM: how worker.py and scheduler_server.py run until stopped."""
    listen_for_shutdown_signals()
    assert _counter is not None
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


# 2. Interrupting a task. Module state, because a signal handler can take nothing else without a lock.
_first_signal: int | None = None  # the first stop signal since `stop_signals_interrupt` began
_interruptible: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None  # what `run_async` runs


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While inside: the first SIGINT or SIGTERM interrupts (see `_interrupt`), repeats do nothing.

    On the main thread only (Python delivers signals there); elsewhere it changes nothing.
    """
    global _first_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _first_signal = None
    previous = {signum: signal.signal(signum, _interrupt) for signum in _SHUTDOWN_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def first_stop_signal() -> int | None:
    """The signal that interrupted this entry point (SIGINT or SIGTERM), or None."""
    return _first_signal


def _interrupt(signum: int, frame: object) -> None:
    """The first stop signal cancels `run_async`'s coroutine, or raises KeyboardInterrupt; a repeat is ignored.

    Plain reads and writes of module variables only: no lock, so a second signal landing in the
    middle of this handler (they come microseconds apart) cannot wait on the first for ever.
    """
    global _first_signal
    if _first_signal is not None:
        return  # a repeat: the stop under way finishes, and it is bounded (see the module docstring)
    _first_signal = signum
    running = _interruptible
    if running is None or running[1].done():
        raise KeyboardInterrupt
    loop, task = running
    task.cancel()  # what asyncio.run does on Ctrl+C: the coroutine's own clean-up runs
    loop.call_soon_threadsafe(_nothing)  # wakes the loop if it sleeps in select()


def _nothing() -> None:
    """A callback that only wakes the event loop up."""


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, interrupted by the first stop signal alone (see `_interrupt`).

    `asyncio.run` handles Ctrl+C itself, but its handler raises KeyboardInterrupt on the second
    one, wherever the program is, and puts back the default handler on return, so a second Ctrl+C
    breaks off whatever clean-up follows. Here, a cancelled `main` becomes KeyboardInterrupt once.
    """
    global _interruptible
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)
        if threading.current_thread() is threading.main_thread():  # where signal handlers run
            _interruptible = (loop, task)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if _first_signal is None:
                raise
            raise KeyboardInterrupt from None
        finally:
            _interruptible = None
