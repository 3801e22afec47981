"""The processes of a chaos run, each its own, on loopback: Redis, the scheduler, the workers.

- Redis: a real `redis-server` on 127.0.0.1 with `appendonly yes` and `appendfsync always` in a
  temporary folder, so that a restart (SIGKILL, then a new server on the same port and folder)
  keeps every stream: each write was on disk before Redis acknowledged it. (The private Redis that
  `worker.py` starts keeps nothing; a restart of that one loses the streams, and readers then take
  the answer from the durable record: tests/reliability/test_faults.py covers that case.)
- `scheduler_server.py`: the embedded scheduler that re-delivers the runs of a worker that dies or
  stops answering its pings (support/redelivering_scheduler.py), in a process that outlives the workers.
- `worker.py` processes, each with its own DEMO_MODEL_SIGNATURE (`w1~`, `w2~`, ...), so every token
  says which worker process wrote it; a worker that was killed or stopped is replaced by a new one.

Every process is started so that Linux stops it when the chaos process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from support.ports import free_port
from support.private_redis import dying_with_this_process, find_redis_server
from tests.conftest import ROOT, cli_environment

logger = logging.getLogger("chaos")

TOKEN_DELAY_MS = "40"  # a realistic model pace: faults land mid-answer


def _start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        dying_with_this_process(command), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip


def _wait_for_line(process: subprocess.Popen[bytes], log: Path, line: str, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


class PersistentRedis:
    """`redis-server` with an append-only file fsynced on every write; restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def spawn(self) -> None:
        """Start the server (on this thread: PR_SET_PDEATHSIG follows the thread that started it)."""
        binary, _ = find_redis_server()
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)]
        command += ["--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(
            dying_with_this_process(command), stdin=subprocess.DEVNULL, start_new_session=True
        )

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            return False
        finally:
            client.close()

    def drop_connections(self) -> int:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)
        try:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal"))  # type: ignore[arg-type]
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass(eq=False)
class Worker:
    """One `worker.py` process and what was done to it."""

    signature: str
    process: subprocess.Popen[bytes]
    log: Path
    faults: list[tuple[float, str]] = field(default_factory=list[tuple[float, str]])  # (time.time(), kind)
    frozen: bool = False
    retired: bool = False  # killed or told to stop: no longer counted among the three

    @property
    def pid(self) -> int:
        return self.process.pid


class Stack:
    """Redis, the scheduler and WORKERS workers, started in `folder`; `close()` stops every one of them."""

    WORKERS = 3

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.redis = PersistentRedis(folder)
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[Worker] = []
        self.env: dict[str, str] = {}
        self._next_signature = 1

    def start(self) -> None:
        self.redis.start()
        port = free_port()
        # REDIS_CONNECTION_STRING set: scheduler_server.py starts no Redis of its own.
        self.env = cli_environment(
            ENDPOINT=f"http://localhost:{port}",
            REDIS_CONNECTION_STRING=self.redis.url,
            DEMO_MODEL_TOKEN_DELAY_MS=TOKEN_DELAY_MS,
        )
        log = self.folder / "scheduler.log"
        self.scheduler = _start([sys.executable, "scheduler_server.py", "--port", str(port)], log, self.env)
        _wait_for_line(self.scheduler, log, "scheduler ready", "scheduler_server.py")
        for _ in range(self.WORKERS):
            self.add_worker()
        self.wait_for_workers()

    @property
    def live(self) -> list[Worker]:
        return [worker for worker in self.workers if not worker.retired]

    def add_worker(self) -> Worker:
        signature = f"w{self._next_signature}~"
        self._next_signature += 1
        log = self.folder / f"worker-{signature[:-1]}.log"
        process = _start([sys.executable, "worker.py"], log, self.env | {"DEMO_MODEL_SIGNATURE": signature})
        worker = Worker(signature, process, log)
        self.workers.append(worker)
        logger.warning("worker %s started: pid %d", signature, process.pid)
        return worker

    def wait_for_workers(self) -> None:
        for worker in self.live:
            _wait_for_line(worker.process, worker.log, "TravelPlanner is ready", f"worker {worker.signature}")

    def by_pid(self, pid: int) -> Worker | None:
        return next((worker for worker in self.workers if worker.pid == pid), None)

    def signal(self, worker: Worker, kind: str, signum: signal.Signals) -> None:
        worker.faults.append((time.time(), kind))
        logger.warning("%s: worker %s (pid %d)", kind, worker.signature, worker.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGCONT)
                worker.process.kill()
            worker.process.wait(timeout=10)
        if self.scheduler is not None:
            self.scheduler.terminate()
            try:
                self.scheduler.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.scheduler.kill()
        self.redis.kill()


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="chaos-")
