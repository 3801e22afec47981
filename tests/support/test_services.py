"""The private Redis server lives and dies with the process that started it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from support.ports import port_answers

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
