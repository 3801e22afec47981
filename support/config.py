"""Configuration: the one place that reads the environment (and `.env`).

Every setting is read and validated here, so a bad value fails at start-up with one line that names
the variable and what it accepts, instead of a traceback half-way through a run. `.env.example` is
the full list of variables, with their defaults.

Try it:

    REDIS_STREAM_TTL_MINUTES=0 uv run sample.py
    # error: REDIS_STREAM_TTL_MINUTES must be a whole number of minutes >= 1 (got '0') ...
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dotenv import load_dotenv

from support.errors import UsageError
from support.redis_connection import ENTRA_ID, parse_target, with_options

DEFAULT_TASKHUB = "default"
# Runs one worker process serves at once (one thread each). Sized for models that spend most of a
# run waiting on the network; docs/benchmarks.md shows what one worker sustains.
DEFAULT_WORKER_MAX_CONCURRENT_RUNS = 128
MAX_WORKER_CONCURRENT_RUNS = 1024
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
# "scheme://user:password@host" -> keep "scheme://user:", hide the password.
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


@dataclass(frozen=True)
class Settings:
    """Everything the worker and the client need to know, validated."""

    endpoint: str | None
    taskhub: str
    redis_url: str | None
    stream_ttl_seconds: int
    stream_max_length: int
    idle_timeout_seconds: float
    heartbeat_seconds: float
    local_scheduler_port: int
    local_redis_port: int
    worker_max_concurrent_runs: int = DEFAULT_WORKER_MAX_CONCURRENT_RUNS


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration.

    With no argument, `.env` (if present) is loaded into the process environment
    first; values already set in the environment win over `.env`.
    """
    if environ is None:
        load_dotenv(override=False)
        environ = os.environ
    endpoint = _optional(environ, "ENDPOINT")
    if endpoint is not None:
        _check_endpoint(endpoint)
    redis_url = _optional(environ, "REDIS_CONNECTION_STRING")
    if redis_url is not None:
        _check_redis_url(redis_url)
    ca_file = _optional(environ, "REDIS_TLS_CA_FILE")
    if ca_file is not None:
        redis_url = _with_tls_ca_file(redis_url, ca_file)
    redis_url = _with_redis_options(environ, redis_url)
    return Settings(
        endpoint=endpoint,
        taskhub=_optional(environ, "TASKHUB") or DEFAULT_TASKHUB,
        redis_url=redis_url,
        stream_ttl_seconds=60 * _whole_number(environ, "REDIS_STREAM_TTL_MINUTES", 10, minimum=1, unit="minutes"),
        stream_max_length=_whole_number(environ, "REDIS_STREAM_MAX_LENGTH", 10_000, minimum=100, unit="entries"),
        idle_timeout_seconds=_seconds(environ, "STREAM_IDLE_TIMEOUT_SECONDS", 20.0),
        heartbeat_seconds=_seconds(environ, "STREAM_HEARTBEAT_SECONDS", 2.0),
        local_scheduler_port=_port(environ, "LOCAL_SCHEDULER_PORT", 8080),
        local_redis_port=_port(environ, "LOCAL_REDIS_PORT", 6379),
        worker_max_concurrent_runs=_run_slots(environ),
    )


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***`, safe to print or log."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _whole_number(environ: Mapping[str, str], name: str, default: int, *, minimum: int, unit: str) -> int:
    raw = _optional(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        # A TTL of 0 would make EXPIRE delete the stream at once (a silent loss of every answer).
        raise UsageError(f"{name} must be a whole number of {unit} >= {minimum} (got {raw!r}); fix it or unset it")
    return value


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = _optional(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < 86_400:
        raise UsageError(f"{name} must be a number of seconds > 0 (got {raw!r}); fix it or unset it")
    return value


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = _optional(environ, name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65_535:
        raise UsageError(f"{name} must be a TCP port from 1 to 65535 (got {raw!r}); fix it or unset it")
    return int(raw)


def _run_slots(environ: Mapping[str, str]) -> int:
    name = "WORKER_MAX_CONCURRENT_RUNS"
    value = _whole_number(environ, name, DEFAULT_WORKER_MAX_CONCURRENT_RUNS, minimum=1, unit="runs")
    if value > MAX_WORKER_CONCURRENT_RUNS:  # a thread each: past this, add worker processes instead
        raise UsageError(
            f"{name} must be at most {MAX_WORKER_CONCURRENT_RUNS} (got {value}); run more worker processes instead"
        )
    return value


def _with_redis_options(environ: Mapping[str, str], redis_url: str | None) -> str | None:
    """REDIS_CLUSTER and REDIS_AUTH, carried in the URL like the CA file (see support/redis_connection.py)."""
    cluster = _choice(environ, "REDIS_CLUSTER", ("false", "true"))
    auth = _choice(environ, "REDIS_AUTH", ("password", ENTRA_ID))
    if redis_url is None:
        if cluster == "true" or auth == ENTRA_ID:
            raise UsageError("REDIS_CLUSTER and REDIS_AUTH apply to your own Redis: set REDIS_CONNECTION_STRING too")
        return None
    target = parse_target(redis_url)  # also checks the URL's own cluster= and auth=
    wanted_cluster, wanted_entra_id = target.cluster or cluster == "true", target.entra_id or auth == ENTRA_ID
    if (wanted_cluster, wanted_entra_id) == (target.cluster, target.entra_id):
        return redis_url
    url = with_options(redis_url, cluster=wanted_cluster, entra_id=wanted_entra_id)
    parse_target(url)  # a password in the URL together with REDIS_AUTH=entra-id is refused here
    return url


def _choice(environ: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = (_optional(environ, name) or allowed[0]).lower()
    if value not in allowed:
        raise UsageError(f"{name} must be {' or '.join(allowed)} (got {value!r}); fix it or unset it")
    return value


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"ENDPOINT must be an http:// (local emulator) or https:// (Azure) URL (got {endpoint!r}); "
            "unset it to use the embedded scheduler"
        )


def _check_redis_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_URL_SCHEMES or (parts.scheme != "unix" and not parts.hostname):
        raise UsageError(
            f"REDIS_CONNECTION_STRING must be a redis://, rediss:// or unix:// URL (got {redact_url(url)!r}); "
            "unset it to use a local Redis"
        )
    try:
        _ = parts.port
    except ValueError:
        raise UsageError(f"REDIS_CONNECTION_STRING has an invalid port (got {redact_url(url)!r})") from None


def _with_tls_ca_file(redis_url: str | None, ca_file: str) -> str:
    """`redis_url` with `ssl_ca_certs=<ca_file>`, the query argument redis-py's `from_url` understands.

    Carrying the CA in the URL means every Redis client the sample creates
    (start-up check, worker, reader) verifies the server the same way.
    """
    if redis_url is None or urlsplit(redis_url).scheme != "rediss":
        raise UsageError(
            "REDIS_TLS_CA_FILE only applies to a rediss:// REDIS_CONNECTION_STRING "
            f"(got {redact_url(redis_url or 'none')!r}); use rediss:// or unset REDIS_TLS_CA_FILE"
        )
    path = Path(ca_file).expanduser()
    if not path.is_file():
        raise UsageError(
            f"REDIS_TLS_CA_FILE must be the PEM file of the CA that signed your Redis server's certificate "
            f"(no such file: {ca_file!r}); fix it or unset it"
        )
    parts = urlsplit(redis_url)
    query = [(name, value) for name, value in parse_qsl(parts.query) if name != "ssl_ca_certs"]
    query.append(("ssl_ca_certs", str(path.resolve())))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))
