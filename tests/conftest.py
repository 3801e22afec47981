"""Shared test fixtures: real services only.

Every test talks to a real `redis-server` (a private one per test session, on
a free port, so tests never touch a Redis you care about) and, where a
scheduler is needed, the Durable Task SDK's real in-memory gRPC backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ports import free_port
from support.private_redis import PrivateRedisServer
from support.providers import PROVIDER_VARIABLES
from support.services import embedded_scheduler
from support.telemetry import TELEMETRY_VARIABLES

ROOT = Path(__file__).resolve().parent.parent

# Variables a developer's .env or shell may set; tests pin them explicitly.
_CONFIG_VARIABLES = (
    "ENDPOINT",
    "TASKHUB",
    "REDIS_CONNECTION_STRING",
    "REDIS_TLS_CA_FILE",
    "REDIS_CLUSTER",
    "REDIS_AUTH",
    "WORKER_MAX_CONCURRENT_RUNS",
    "WORKER_DRAIN_SECONDS",
    "REDIS_STREAM_TTL_MINUTES",
    "REDIS_STREAM_MAX_LENGTH",
    "STREAM_IDLE_TIMEOUT_SECONDS",
    "STREAM_HEARTBEAT_SECONDS",
    "STREAM_MAX_SILENCE_SECONDS",
    "DEMO_MODEL_TOKEN_DELAY_MS",
    "DEMO_MODEL_FAIL_AFTER_TOKENS",
    "DEMO_MODEL_FIRST_TOKEN_DELAY_MS",
    "DEMO_MODEL_THINK_MS",
    "DEMO_MODEL_FAIL_STREAM_ONLY",
    "DEMO_MODEL_SIGNATURE",
    "LOG_LEVEL",
    "WEB_MAX_STREAMS",
    "WEB_ALLOWED_HOSTS",
    *(name for name in TELEMETRY_VARIABLES if not name.startswith("ENABLE_")),
    *PROVIDER_VARIABLES,
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedisServer]:
    with PrivateRedisServer(free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: PrivateRedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def scheduler_endpoint() -> Iterator[str]:
    port = free_port()
    with embedded_scheduler(port):
        yield f"http://localhost:{port}"


def cli_environment(**overrides: str) -> dict[str, str]:
    """The environment for running a CLI as a user would: nothing configured unless given."""
    env = {name: value for name, value in os.environ.items() if name not in _CONFIG_VARIABLES}
    env.update({name: "" for name in _CONFIG_VARIABLES})  # empty = unset, and .env cannot fill it in
    # Agent Framework reads its switches when it is imported and refuses an empty one: pinned off, or unset.
    env.update({"ENABLE_CONSOLE_EXPORTERS": "false", "ENABLE_SENSITIVE_DATA": "false"})
    env.pop("ENABLE_INSTRUMENTATION", None)
    env["DEMO_MODEL_TOKEN_DELAY_MS"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def run_cli(script: str, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python <script> <args>` from the project folder, the way the README runs it."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
