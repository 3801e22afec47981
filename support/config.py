"""Configuration: the one place that reads the environment (and `.env`).

Every setting is read and validated here, so a bad value fails at start-up with one line that names
the variable and what it accepts, instead of a traceback half-way through a run. `.env.example` is
the full list of variables, with their defaults.

Try it:

    REDIS_STREAM_TTL_MINUTES=0 uv run sample.py
    # error: REDIS_STREAM_TTL_MINUTES must be a whole number of minutes >= 1 and at most 525600 (got '0') ...
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from dotenv import load_dotenv

from support.errors import UsageError
from support.providers import check_model_settings
from support.redaction import redact_url
from support.redis_connection import ENTRA_ID, parse_target, with_options
from support.telemetry import check_telemetry_settings

DEFAULT_TASKHUB = "default"
# Runs one worker process serves at once (one thread each). Sized for models that spend most of a
# run waiting on the network; docs/benchmarks.md shows what one worker sustains.
DEFAULT_WORKER_MAX_CONCURRENT_RUNS = 128
MAX_WORKER_CONCURRENT_RUNS = 1024
# How long a stopping worker.py lets its running answers finish (reliability/drain.py): the usual
# container grace period (Kubernetes' terminationGracePeriodSeconds, `docker stop`'s is 10).
DEFAULT_WORKER_DRAIN_SECONDS = 30.0
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_WEB_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
# Readers share the stream hub's few Redis connections (webapp/stream_hub.py): what each costs is
# memory (docs/benchmarks.md, the fan-out section) and a socket, so the ceiling is file descriptors.
DEFAULT_WEB_STREAMS = 10_000
MAX_WEB_STREAMS = 50_000
_ASCII_WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")
_ASCII_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?|\.[0-9]{1,9}")
_TASKHUB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")  # a DNS name or an IPv4 address


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
    max_silence_seconds: float
    local_scheduler_port: int
    local_redis_port: int
    log_level: str = "WARNING"
    web_max_streams: int = DEFAULT_WEB_STREAMS
    web_allowed_hosts: tuple[str, ...] = DEFAULT_WEB_ALLOWED_HOSTS
    worker_max_concurrent_runs: int = DEFAULT_WORKER_MAX_CONCURRENT_RUNS
    worker_drain_seconds: float = DEFAULT_WORKER_DRAIN_SECONDS


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
    idle_timeout_seconds = _seconds(environ, "STREAM_IDLE_TIMEOUT_SECONDS", 20.0)
    if redis_url is not None:
        _check_read_timeout(redis_url, idle_timeout_seconds)
    return _consistent(
        Settings(
            endpoint=endpoint,
            taskhub=_taskhub(environ),
            redis_url=redis_url,
            # Upper bounds: a year of TTL, ten million entries; a larger value fails every write at run time.
            stream_ttl_seconds=60 * _whole_number(environ, "REDIS_STREAM_TTL_MINUTES", 10, 1, 525_600, "minutes"),
            stream_max_length=_whole_number(environ, "REDIS_STREAM_MAX_LENGTH", 10_000, 100, 10_000_000, "entries"),
            idle_timeout_seconds=idle_timeout_seconds,
            heartbeat_seconds=_seconds(environ, "STREAM_HEARTBEAT_SECONDS", 2.0),
            max_silence_seconds=_seconds(environ, "STREAM_MAX_SILENCE_SECONDS", 300.0),
            local_scheduler_port=_port(environ, "LOCAL_SCHEDULER_PORT", 8080),
            local_redis_port=_port(environ, "LOCAL_REDIS_PORT", 6379),
            log_level=_log_level(environ),
            web_max_streams=_whole_number(
                environ, "WEB_MAX_STREAMS", DEFAULT_WEB_STREAMS, 1, MAX_WEB_STREAMS, "streams"
            ),
            web_allowed_hosts=_allowed_hosts(environ),
            # A thread each: past the maximum, run more worker processes instead.
            worker_max_concurrent_runs=_whole_number(
                environ,
                "WORKER_MAX_CONCURRENT_RUNS",
                DEFAULT_WORKER_MAX_CONCURRENT_RUNS,
                1,
                MAX_WORKER_CONCURRENT_RUNS,
                "runs",
            ),
            worker_drain_seconds=_seconds(environ, "WORKER_DRAIN_SECONDS", DEFAULT_WORKER_DRAIN_SECONDS, maximum=3_600),
        )
    )


def _consistent(settings: Settings) -> Settings:
    """Reject timings that contradict each other: each is valid alone, but together a live run looks dead."""
    idle, heartbeat, silence = settings.idle_timeout_seconds, settings.heartbeat_seconds, settings.max_silence_seconds
    if heartbeat * 2 > idle:  # the flusher checks every heartbeat/2: a reader must hear one well within its timeout
        raise UsageError(
            f"STREAM_HEARTBEAT_SECONDS ({heartbeat:g}) must be at most half of STREAM_IDLE_TIMEOUT_SECONDS ({idle:g}), "
            "or readers time out while the worker is alive; lower the heartbeat or raise the idle timeout"
        )
    if silence < idle:
        raise UsageError(
            f"STREAM_MAX_SILENCE_SECONDS ({silence:g}) must be at least STREAM_IDLE_TIMEOUT_SECONDS ({idle:g}): "
            "a run is ended as stuck sooner than a reader would wait for it; raise it"
        )
    return settings


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _in_range(raw: str, minimum: int, maximum: int) -> int | None:
    """`raw` as an int within [minimum, maximum], or None: ASCII digits only ('²' and '١' are digits to Python)."""
    if not _ASCII_WHOLE_NUMBER.fullmatch(raw):
        return None
    value = int(raw)
    return value if minimum <= value <= maximum else None


def _whole_number(environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int, unit: str) -> int:
    raw = _optional(environ, name)
    if raw is None:
        return default
    value = _in_range(raw, minimum, maximum)
    if value is None:
        # A TTL of 0 would make EXPIRE delete the stream at once (a silent loss of every answer).
        raise UsageError(
            f"{name} must be a whole number of {unit} >= {minimum} and at most {maximum} (got {raw!r}); "
            "fix it or unset it"
        )
    return value


def _seconds(environ: Mapping[str, str], name: str, default: float, maximum: float = 86_400) -> float:
    raw = _optional(environ, name)
    if raw is None:
        return default
    value = float(raw) if _ASCII_DECIMAL.fullmatch(raw) else 0.0
    if not 0 < value <= maximum:
        raise UsageError(
            f"{name} must be a number of seconds > 0 and at most {maximum:g} (got {raw!r}); fix it or unset it"
        )
    return value


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = _optional(environ, name)
    if raw is None:
        return default
    value = _in_range(raw, 1, 65_535)
    if value is None:
        raise UsageError(f"{name} must be a TCP port from 1 to 65535 (got {raw!r}); fix it or unset it")
    return value


def _taskhub(environ: Mapping[str, str]) -> str:
    raw = _optional(environ, "TASKHUB")
    if raw is None:
        return DEFAULT_TASKHUB
    if not _TASKHUB.fullmatch(raw):  # it travels as gRPC metadata: printable ASCII only
        raise UsageError(
            f"TASKHUB must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (got {raw!r})"
        )
    return raw


def _log_level(environ: Mapping[str, str]) -> str:
    raw = _optional(environ, "LOG_LEVEL")
    if raw is None:
        return "WARNING"
    if raw.upper() not in LOG_LEVELS:
        raise UsageError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {raw!r}); fix it or unset it")
    return raw.upper()


def _allowed_hosts(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = _optional(environ, "WEB_ALLOWED_HOSTS")
    if raw is None:
        return DEFAULT_WEB_ALLOWED_HOSTS
    hosts = tuple(host.strip().lower().strip("[]") for host in raw.split(",") if host.strip())
    if not hosts or not all(_HOST_NAME.fullmatch(host) or _is_ip_address(host) for host in hosts):
        raise UsageError(
            "WEB_ALLOWED_HOSTS must be a comma-separated list of host names or IP addresses, without ports "
            f"(got {raw!r}); fix it or unset it to allow only localhost"
        )
    return hosts


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _url_parts(url: str, name: str, accepted: str) -> SplitResult:
    """`url` split, or a UsageError naming `name` for what urllib cannot even parse (`http://[::1`, a bad port)."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise UsageError(
            f"{name} has an invalid port or host (got {redact_url(url)!r}); it must be {accepted}, and special "
            "characters in a password (/ @ : ? #) must be percent-encoded"
        ) from None
    return parts


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
    accepted = "an http:// (local emulator) or https:// (Azure) URL"
    parts = _url_parts(endpoint, "ENDPOINT", accepted)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"ENDPOINT must be {accepted} (got {redact_url(endpoint)!r}); unset it to use the embedded scheduler"
        )


def _check_redis_url(url: str) -> None:
    accepted = "a redis://, rediss:// or unix:// URL"
    parts = _url_parts(url, "REDIS_CONNECTION_STRING", accepted)
    if parts.scheme not in REDIS_URL_SCHEMES or (parts.scheme != "unix" and not parts.hostname):
        raise UsageError(
            f"REDIS_CONNECTION_STRING must be {accepted} (got {redact_url(url)!r}); unset it to use a local Redis"
        )


def _check_read_timeout(redis_url: str, idle_timeout_seconds: float) -> None:
    """A `socket_timeout` in the URL wins over the reader's own; shorter than a read's block, every idle read fails."""
    for name, value in parse_qsl(urlsplit(redis_url).query):
        if name == "socket_timeout" and not (_ASCII_DECIMAL.fullmatch(value) and float(value) > idle_timeout_seconds):
            raise UsageError(
                f"REDIS_CONNECTION_STRING sets socket_timeout={value}, which must be a number of seconds above "
                f"STREAM_IDLE_TIMEOUT_SECONDS ({idle_timeout_seconds:g}): readers block that long; remove it"
            )


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


def check_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Every variable of `.env.example` checked at once, before an entry point starts anything.

    `load_settings` reads what the services need; the model's variables (providers, DEMO_MODEL_*)
    are read where the model is built, after Redis and the scheduler have started, so they are
    checked here first too: a bad value of any variable is one `error:` line naming it (exit 2),
    with nothing started. Raises `UsageError` for the first bad variable.
    """
    settings = load_settings(environ)  # with no argument, this also loads `.env` into os.environ
    check_model_settings(environ if environ is not None else os.environ)
    check_telemetry_settings(environ if environ is not None else os.environ)  # support/telemetry.py
    return settings
