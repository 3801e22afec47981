"""A pseudo-terminal for CLI tests: a program runs as if typed into a shell, and Ctrl+C is a real one.

The program's stdin, stdout and stderr are the terminal, and the terminal is its controlling
terminal, so Ctrl+C (`press_ctrl_c`) is the line discipline's SIGINT to the whole foreground
process group, children included, exactly as in a shell. (Sending SIGINT to the one process
would miss the bug where a child, such as the private redis-server, dies of the same Ctrl+C.)
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs after exec in the child, never between fork and exec (fork-unsafe beside gRPC threads).
# The child is a new session's leader (start_new_session), so TIOCSCTTY makes the pty its controlling
# terminal and its process group the foreground one. SIGINT is reset: a test runner started in the
# background may pass it on ignored or blocked, and a terminal's Ctrl+C is neither.
_IN_A_TERMINAL = (
    "import fcntl, os, signal, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "signal.signal(signal.SIGINT, signal.SIG_DFL); signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """`python <script> <args>` (or `<program> <args>`) from the project folder, on a terminal of its own."""

    def __init__(self, *arguments: str, env: dict[str, str], program: str = sys.executable) -> None:
        self._leader, follower = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _IN_A_TERMINAL, program, *arguments],
            cwd=ROOT, env=env, stdin=follower, stdout=follower, stderr=follower, start_new_session=True,
        )  # fmt: skip
        os.close(follower)
        self._output = b""

    @property
    def output(self) -> str:
        """Everything shown so far (the terminal's own echo of typed text included)."""
        return self._output.decode(errors="replace").replace("\r\n", "\n")

    def read_until(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"{text!r} never appeared on the terminal:\n{self.output}")

    def type(self, text: str) -> None:
        os.write(self._leader, text.encode())

    def press_ctrl_c(self) -> None:
        os.write(self._leader, b"\x03")

    def wait(self, timeout: float = 30) -> int:
        """Read until the program and everything it started in its session close the terminal; its exit code."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        return self.process.wait(timeout=max(deadline - time.monotonic(), 1))

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self._leader)

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to `timeout`); False at end of output or timeout."""
        if timeout <= 0 or not select.select([self._leader], [], [], timeout)[0]:
            return False
        try:
            data = os.read(self._leader, 65536)
        except OSError:  # EIO: every process holding the terminal has exited
            return False
        self._output += data
        return bool(data)
