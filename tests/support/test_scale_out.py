"""Scale-out: one scheduler, two worker processes, many concurrent clients.

`scheduler_server.py` runs the in-memory scheduler on its own; two
`python worker.py` processes share its task hub and one Redis; eight
`python client.py --json` runs, each in its own session, run at once. Every
answer must arrive complete and in order, and each worker serves the runs it
was meant to: each run's start marker names its worker (host:pid).

Run it: `uv run pytest tests/support/test_scale_out.py`
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
import redis

from redis_stream_response_handler import stream_key
from support.ports import free_port
from support.providers import PROVIDER_VARIABLES
from support.sessions import new_session_key
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


def _worker_environment(endpoint: str, redis_url: str) -> dict[str, str]:
    return cli_environment(
        ENDPOINT=endpoint,
        REDIS_CONNECTION_STRING=redis_url,
        # A realistic pace keeps runs in flight together.
        DEMO_MODEL_TOKEN_DELAY_MS="10",
        **dict.fromkeys(PROVIDER_VARIABLES, ""),  # the offline model, whatever the developer's shell holds
    )


@pytest.fixture(scope="module")
def workers(
    scheduler: SchedulerProcess, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    logs = tmp_path_factory.mktemp("workers")
    env = _worker_environment(scheduler.endpoint, redis_url)
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


def test_concurrent_clients_all_complete_in_order_across_both_workers(redis_url: str, tmp_path: Path) -> None:
    """Eight clients at once, four runs served by each of two workers of one scheduler and one Redis.

    The in-memory scheduler hands each run to whichever worker's stream asks first, so a burst of
    runs may all land on one worker (it did, once): which worker serves which run is made certain
    here, the way a rolling deploy does it. The first four runs start while one worker is connected
    (a scheduler of this test's own); a second one joins, and the first drains (SIGTERM: it
    finishes its runs, takes no new ones) before the last four start, so they go to the second
    while the first's may still stream.
    """
    scheduler = SchedulerProcess(
        free_port(), tmp_path / "scheduler.log", cli_environment(REDIS_CONNECTION_STRING=redis_url)
    )
    env = _worker_environment(scheduler.endpoint, redis_url)
    places = ["Paris", "Rome", "Oslo", "Tokyo", "Lima", "Cairo", "Quito", "Seoul"][:CONCURRENT_CLIENTS]
    sessions = {place: new_session_key() for place in places}
    early, late = places[: CONCURRENT_CLIENTS // 2], places[CONCURRENT_CLIENTS // 2 :]
    started = [WorkerProcess(env, tmp_path / "first.log")]
    try:
        started[0].wait_until_ready()
        with ThreadPoolExecutor(max_workers=CONCURRENT_CLIENTS) as pool:
            runs = {place: pool.submit(_run_client, place, sessions[place], env) for place in early}
            for place in early:  # dispatched, to the only worker there is
                _wait_for_start(redis_url, sessions[place], runs[place])
            started.append(WorkerProcess(env, tmp_path / "second.log"))
            started[1].wait_until_ready()
            started[0].process.send_signal(signal.SIGTERM)
            _wait_until_draining(started[0])
            runs |= {place: pool.submit(_run_client, place, sessions[place], env) for place in late}
            results = {place: run.result() for place, run in runs.items()}
        first, second = started
        assert first.process.wait(timeout=60) == 0, first.log.read_text()
        assert second.stop() == 0, "worker.py must exit 0 on SIGTERM"
    finally:
        for worker in started:
            worker.process.kill()
        scheduler.stop()

    for place, result in results.items():
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        tokens = [record for record in records if record["text"]]
        numbered = [record for record in records if record["kind"] in ("token", "tool_call", "tool_result")]
        assert [record["sequence"] for record in numbered] == list(range(len(numbered))), place
        assert records[-1]["done"] is True and not any(record.get("done") for record in records[:-1]), place
        assert place in "".join(record["text"] for record in tokens)
    served_by = {place: _worker_that_ran(redis_url, sessions[place]).rsplit(":", 1)[1] for place in places}
    assert served_by == {place: str((first if place in early else second).process.pid) for place in places}


def _wait_for_start(redis_url: str, session: str, run: Future[subprocess.CompletedProcess[str]]) -> None:
    """Until a worker has started the session's run (its start entry is in the stream)."""
    deadline = time.monotonic() + 60
    while not _starts(redis_url, session):
        if run.done() or time.monotonic() > deadline:
            raise AssertionError(
                f"the run of session {session} never started: {run.result().stderr if run.done() else ''}"
            )
        time.sleep(0.05)


def _wait_until_draining(worker: WorkerProcess) -> None:
    """Until `worker` takes no new runs: it says so, or it had none left and exited."""
    deadline = time.monotonic() + 30
    while "taking no new runs" not in worker.log.read_text() and worker.process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"worker.py did not start draining:\n{worker.log.read_text()}")
        time.sleep(0.05)


def _run_client(place: str, session: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "client.py", "--session", session, "-m", f"Plan a 2-day trip to {place}", "--json", env=env, timeout=90
    )


def _starts(redis_url: str, session: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = cast(list[tuple[str, dict[str, str]]], client.xrange(stream_key(session)))
    finally:
        client.close()
    return [fields for _entry_id, fields in entries if fields.get("kind") == "start"]


def _worker_that_ran(redis_url: str, session: str) -> str:
    starts = _starts(redis_url, session)
    assert len(starts) == 1, starts
    return starts[0]["worker"]
