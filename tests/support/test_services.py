"""The private Redis server lives and dies with the process, or the demo, that started it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import redis

from support.ports import free_port, port_answers
from support.services import demo_redis

STARTER = """
import sys, time
from support.private_redis import PrivateRedisServer
from support.services import free_port
server = PrivateRedisServer(free_port()).__enter__()
print(server.port, flush=True)
time.sleep(60)
"""


def test_a_sigkilled_owner_does_not_leave_its_private_redis_holding_the_port() -> None:
    owner = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        assert port_answers("127.0.0.1", port), "the private Redis should answer while its owner runs"
        owner.send_signal(signal.SIGKILL)  # no cleanup code runs: only the kernel's death signal can stop Redis
        owner.wait(timeout=5)
        deadline = time.monotonic() + 5
        while port_answers("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not port_answers("127.0.0.1", port), f"Redis still answers on {port} after its owner was killed"
    finally:
        owner.kill()


def test_a_demo_with_no_redis_configured_or_listening_gets_a_private_one_that_stops_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REDIS_CONNECTION_STRING", "REDIS_TLS_CA_FILE", "REDIS_CLUSTER", "REDIS_AUTH"):
        monkeypatch.setenv(name, "")  # unset, and `.env` cannot fill it in
    monkeypatch.setenv("LOCAL_REDIS_PORT", str(free_port()))  # nothing listens there
    with demo_redis() as url:
        assert redis.Redis.from_url(url).ping()
    assert not port_answers("127.0.0.1", urlsplit(url).port or 6379)
