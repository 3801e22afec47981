"""The DEFAULT idle timeout (20 s) really fires: with no worker, a reader ends with "no answer started".

redis-py 8.1 gives its clients a 5 s socket timeout, so before the fix every XREAD BLOCK of 20 s
failed on the client after 5 s: client.py retried for ~28 s and exited 1 with "Redis failed while
streaming (Timeout reading ...)", and the web page's SSE stream aborted without an `error` event.
Both readers run here at once, with nothing configured but where the scheduler and Redis are.

    uv run pytest tests/tutorial/test_default_idle_timeout.py -q     # about 25 s
"""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import ExitStack

import httpx

from support.config import Settings
from support.ports import free_port
from support.services import Services, embedded_scheduler
from tests.conftest import ROOT, cli_environment
from tests.webapp.test_web import RUN, STREAM, events_of, serve

DEFAULT_IDLE_TIMEOUT = 20  # what STREAM_IDLE_TIMEOUT_SECONDS is when unset
NO_ANSWER = f"no answer started within {DEFAULT_IDLE_TIMEOUT}s"


class BackgroundClient:
    """`client.py` as a user runs it, in the background while the test reads the web stream."""

    def __init__(self, env: dict[str, str]) -> None:
        command = [sys.executable, "client.py", "-m", "Plan a 2-day trip to Rome"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.stderr = ""
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        _, self.stderr = self.process.communicate()

    def result(self, timeout: float) -> tuple[int | None, str]:
        self._waiter.join(timeout)
        self.process.kill()
        return self.process.returncode, self.stderr


def no_worker(settings: Settings, services: Services, stack: ExitStack) -> None:
    """The web app's worker setup, minus the worker: runs are queued and never start."""


async def test_with_no_worker_both_readers_end_with_no_answer_started_in_the_default_timeout(redis_url: str) -> None:
    port = free_port()
    with embedded_scheduler(port):
        client = BackgroundClient(
            cli_environment(ENDPOINT=f"http://localhost:{port}", REDIS_CONNECTION_STRING=redis_url)
        )
        with serve(redis_url, no_worker) as web:
            async with httpx.AsyncClient(base_url=web.url, timeout=DEFAULT_IDLE_TIMEOUT + 30) as http:
                run = (await http.post(RUN, json={"message": "Plan a 2-day trip to Oslo"})).json()
                params = {"cursor": run["cursor"], "correlation_id": run["correlation_id"]}
                async with http.stream("GET", f"{STREAM}/{run['session']}", params=params) as response:
                    events = await events_of(response)
        # Before the fix the client gave up after ~28 s with "Redis failed"; the message says which ended it.
        exit_code, stderr = client.result(timeout=DEFAULT_IDLE_TIMEOUT + 30)

    assert exit_code == 1, stderr
    assert f"error: {NO_ANSWER}" in stderr and "Redis failed" not in stderr, stderr
    assert [event.event for event in events] == ["error"], events
    assert events[0].data.startswith(NO_ANSWER), events
