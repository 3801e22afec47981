"""Scale-out: one scheduler, two worker processes, many concurrent clients.

`scheduler_server.py` runs the in-memory scheduler on its own; two
`python worker.py` processes share its task hub and one Redis; eight
`python client.py --json` runs, each in its own session, run at once. Every
answer must arrive complete and in order, and both workers must have served
runs: each run's start marker names its worker (host:pid).

Run it: `uv run pytest tests/support/test_scale_out.py`
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
import redis

from redis_stream_response_handler import stream_key
from support.ports import free_port
from support.providers import PROVIDER_VARIABLES
from tests.conftest import ROOT, cli_environment, run_cli
from tests.tutorial.test_cli import WorkerProcess

CONCURRENT_CLIENTS = 8


class SchedulerProcess:
    """`python scheduler_server.py --port P [args]`, waited on until it says it is ready."""

    def __init__(self, port: int, log: Path, env: dict[str, str], *args: str) -> None:
        self.endpoint = f"http://localhost:{port}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "scheduler_server.py", "--port", str(port), *args], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log.open("w"),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "scheduler ready" not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"scheduler_server.py did not start:\n{log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def scheduler(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    env = cli_environment(REDIS_CONNECTION_STRING=redis_url)  # else it starts a Redis on 6379 for the workers
    running = SchedulerProcess(free_port(), tmp_path_factory.mktemp("scheduler") / "scheduler.log", env)
    yield running
    assert running.stop() == 0, "scheduler_server.py must exit 0 on SIGTERM"


@pytest.fixture(scope="module")
def workers(
    scheduler: SchedulerProcess, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    logs = tmp_path_factory.mktemp("workers")
    env = cli_environment(
        ENDPOINT=scheduler.endpoint,
        REDIS_CONNECTION_STRING=redis_url,
        # A realistic pace keeps runs in flight together, so both workers are asked for work.
        DEMO_MODEL_TOKEN_DELAY_MS="10",
        **dict.fromkeys(PROVIDER_VARIABLES, ""),  # the offline model, whatever the developer's shell holds
    )
    running = [WorkerProcess(env, logs / f"worker-{index}.log") for index in range(2)]
    for worker in running:
        worker.wait_until_ready()
    yield running
    for worker in running:
        assert worker.stop() == 0, "worker.py must exit 0 on SIGTERM"


def test_the_scheduler_server_announces_one_ready_line(scheduler: SchedulerProcess) -> None:
    lines = scheduler.log.read_text().splitlines()
    assert lines == [line for line in lines if line.startswith("[scheduler]")]
    assert sum("ready" in line for line in lines) == 1
    assert f"ENDPOINT={scheduler.endpoint}" in lines[0]


def test_workers_use_the_shared_scheduler_and_redis(workers: list[WorkerProcess], scheduler: SchedulerProcess) -> None:
    for worker in workers:
        log = worker.log.read_text()
        assert f"[scheduler] using the Durable Task Scheduler at {scheduler.endpoint}" in log
        assert "[redis] using Redis at" in log and "started" not in log


def test_concurrent_clients_all_complete_in_order_across_both_workers(
    workers: list[WorkerProcess], redis_url: str
) -> None:
    destinations = ["Paris", "Rome", "Oslo", "Tokyo", "Lima", "Cairo", "Quito", "Seoul"][:CONCURRENT_CLIENTS]
    with ThreadPoolExecutor(max_workers=CONCURRENT_CLIENTS) as pool:
        results = list(pool.map(lambda place: _run_client(place, workers[0].env), destinations))

    served_by: set[str] = set()
    for place, result in zip(destinations, results, strict=True):
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        tokens = [record for record in records if record["text"]]
        numbered = [record for record in records if record["kind"] in ("token", "tool_call", "tool_result")]
        assert [record["sequence"] for record in numbered] == list(range(len(numbered))), place
        assert records[-1]["done"] is True and not any(record.get("done") for record in records[:-1]), place
        assert place in "".join(record["text"] for record in tokens)
        served_by.add(_worker_that_ran(redis_url, records[0]["session"]))

    pids = {str(worker.process.pid) for worker in workers}
    assert {name.rsplit(":", 1)[1] for name in served_by} == pids, f"runs were served by {served_by} only"


def _run_client(place: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("client.py", "-m", f"Plan a 2-day trip to {place}", "--json", env=env, timeout=60)


def _worker_that_ran(redis_url: str, session: str) -> str:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = cast(list[tuple[str, dict[str, str]]], client.xrange(stream_key(session)))
    finally:
        client.close()
    starts = [fields for _entry_id, fields in entries if fields.get("kind") == "start"]
    assert len(starts) == 1, entries[:3]
    return starts[0]["worker"]
