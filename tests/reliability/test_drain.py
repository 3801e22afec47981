"""A rolling deploy: SIGTERM to the worker serving an answer. It finishes that answer, once, then exits.

Real processes and signals throughout: `scheduler_server.py` (a scheduler that outlives the workers),
a real Redis, two `worker.py` and a `client.py --verify`, with the DEFAULT WORKER_DRAIN_SECONDS
(30; the answer finishes well within it, so it costs nothing). The worker serving the answer gets
SIGTERM a few tokens in. It must stop taking work (a run that arrives meanwhile goes to the other
worker) yet finish the answer: the client prints exactly
the recorded answer and exits 0; the stream holds one `start` for that run and no `restart`; the
tools ran once; the scheduler accepted the drained worker's completion (it re-delivered nothing);
the worker exits 0 with no ERROR line. A second signal while draining ends the drain at once: the
run is handed back and completed by the other worker, and the stopped worker exits 0 at once.

Run it: `uv run pytest tests/reliability/test_drain.py -n 0`
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from redis_stream_response_handler import DONE, RESTART, START, TOOL_CALL, stream_key
from reliability.crash_demo import wait_for_tokens
from reliability.durable_record import recorded_state
from support.ports import free_port
from support.scheduler import connect_client
from support.sessions import new_session_key
from tests.conftest import ROOT, cli_environment, run_cli
from tests.support.test_bad_input import assert_one_line, nothing_running
from tests.support.test_scale_out import SchedulerProcess
from tests.tutorial.test_cli import WorkerProcess

TRIP = "Plan a 5-day trip to Rome"  # long enough to still be running when a second run arrives


@dataclass
class Deployment:
    scheduler: SchedulerProcess
    workers: list[WorkerProcess]
    env: dict[str, str]
    redis_url: str


@pytest.fixture
def deployment(redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    scheduler = SchedulerProcess(
        free_port(), tmp_path / "scheduler.log", cli_environment(REDIS_CONNECTION_STRING=redis_url)
    )
    # Default WORKER_DRAIN_SECONDS (cli_environment leaves it unset); a realistic pace, so that
    # the signal lands mid-answer.
    env = cli_environment(
        ENDPOINT=scheduler.endpoint, REDIS_CONNECTION_STRING=redis_url, DEMO_MODEL_TOKEN_DELAY_MS="20"
    )
    workers = [WorkerProcess(env, tmp_path / f"worker-{index}.log") for index in range(2)]
    try:
        for worker in workers:
            worker.wait_until_ready()
        yield Deployment(scheduler, workers, env, redis_url)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                assert worker.stop() == 0
        assert scheduler.stop() == 0


def _start_client(deployment: Deployment, session: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "client.py", "--session", session, "-m", TRIP, "--verify", "--json"],
        cwd=ROOT, env=deployment.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _serving(deployment: Deployment, session: str) -> tuple[str, WorkerProcess]:
    """Once the answer is a few tokens in: its correlation id, and the worker writing it."""
    correlation_id, pid = wait_for_tokens(deployment.redis_url, session, 10)
    return correlation_id, next(worker for worker in deployment.workers if worker.process.pid == pid)


def _wait_for_line(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log.read_text():
        assert time.monotonic() < deadline and worker.process.poll() is None, worker.log.read_text()
        time.sleep(0.05)


def _all_entries(redis_url: str, session: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = client.xrange(stream_key(session))  # type: ignore[assignment]
    finally:
        client.close()
    return [fields for _, fields in entries]


def _entries(redis_url: str, session: str, correlation_id: str) -> list[dict[str, str]]:
    return [fields for fields in _all_entries(redis_url, session) if fields.get("correlation_id") == correlation_id]


def _recorded_answer(deployment: Deployment, session: str, correlation_id: str) -> str:
    state = recorded_state(connect_client(deployment.scheduler.endpoint, "default"), session)
    assert state is not None
    turns = [entry for entry in state.data.conversation_history if entry.correlation_id == correlation_id]
    assert [type(entry).__name__ for entry in turns] == ["DurableAgentStateRequest", "DurableAgentStateResponse"]
    recorded = state.try_get_agent_response(correlation_id)
    assert recorded is not None
    return recorded.text


def test_sigterm_lets_the_running_answer_finish_once_and_the_worker_exits_0(deployment: Deployment) -> None:
    session = new_session_key()
    client = _start_client(deployment, session)
    try:
        correlation_id, serving = _serving(deployment, session)
        serving.process.send_signal(signal.SIGTERM)  # a rolling deploy: this worker is being replaced
        _wait_for_line(serving, "taking no new runs")
        newcomer_session = new_session_key()  # a run that arrives during the drain goes elsewhere
        newcomer = subprocess.run(
            [sys.executable, "client.py", "--session", newcomer_session, "-m", "Plan a 1-day trip to Oslo"],
            cwd=ROOT, env=deployment.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        stdout, stderr = client.communicate(timeout=90)
        assert serving.process.wait(timeout=45) == 0  # within the 30 s drain, then out
    finally:
        client.kill()

    assert newcomer.returncode == 0, newcomer.stderr
    other = next(worker for worker in deployment.workers if worker is not serving)
    newcomer_start = next(e for e in _all_entries(deployment.redis_url, newcomer_session) if e["kind"] == START)
    assert newcomer_start["worker"].endswith(f":{other.process.pid}")

    assert client.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    assert not any(record.get("restart") for record in records), stderr
    answer = "".join(record.get("text", "") for record in records)
    assert answer == _recorded_answer(deployment, session, correlation_id)  # --verify checked it too
    assert answer.startswith("# Your 5-day trip to Rome") and "Day 5" in answer

    entries = _entries(deployment.redis_url, session, correlation_id)
    kinds = [entry["kind"] for entry in entries]
    assert kinds.count(START) == 1 and RESTART not in kinds and kinds.count(DONE) == 1
    assert entries[0]["worker"].endswith(f":{serving.process.pid}")  # the drained worker wrote all of it
    tool_calls = [entry for entry in entries if entry["kind"] == TOOL_CALL]
    assert len(tool_calls) == 2, tool_calls  # the weather and the events, once each: the tools ran once

    log = serving.log.read_text()
    assert "ERROR" not in log and "Traceback" not in log, log
    assert "every running answer finished" in log, log
    assert "re-delivering" not in deployment.scheduler.log.read_text()  # its completion was accepted


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_ends_the_drain_at_once_and_another_worker_answers(
    deployment: Deployment, second_signal: signal.Signals
) -> None:
    session = new_session_key()
    client = _start_client(deployment, session)
    try:
        correlation_id, serving = _serving(deployment, session)
        # A second signal while it drains: a person pressing Ctrl+C again, or `uv run` forwarding
        # a signal sent to its process group (a supervisor, `timeout`), which Python then gets twice.
        # (Sent back to back, two SIGTERMs may merge into one pending signal in the kernel.)
        serving.process.send_signal(signal.SIGTERM)
        _wait_for_line(serving, "taking no new runs")
        serving.process.send_signal(second_signal)
        stopped = time.monotonic()
        assert serving.process.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 10  # promptly: the 30 s drain was cut short
        stdout, stderr = client.communicate(timeout=90)
    finally:
        client.kill()

    assert client.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    restarts = [index for index, record in enumerate(records) if record.get("restart")]
    assert len(restarts) == 1, stderr  # the other worker ran it again, from the start
    answer = "".join(record.get("text", "") for record in records[restarts[0] :])
    assert answer == _recorded_answer(deployment, session, correlation_id)

    log = serving.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log
    other = next(worker for worker in deployment.workers if worker is not serving)
    starts = [entry for entry in _entries(deployment.redis_url, session, correlation_id) if entry["kind"] == START]
    assert [start["worker"].rsplit(":", 1)[1] for start in starts] == [str(serving.process.pid), str(other.process.pid)]


def test_a_bad_drain_time_is_one_error_line_and_exit_2() -> None:
    env = nothing_running()
    env["WORKER_DRAIN_SECONDS"] = "soon"
    result = run_cli("worker.py", env=env, timeout=60)
    assert_one_line(result, 2, "WORKER_DRAIN_SECONDS must be a number of seconds > 0")


def test_a_worker_hosting_its_scheduler_still_stops_at_once(tmp_path: Path) -> None:
    # Its scheduler stops with it: no one could finish a drained run's turn, so there is no drain.
    env = cli_environment(
        LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()), DEMO_MODEL_TOKEN_DELAY_MS="50"
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.wait_until_ready()
    session = new_session_key()
    client = subprocess.Popen(
        [sys.executable, "client.py", "--session", session, "-m", TRIP],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        redis_url = f"redis://localhost:{env['LOCAL_REDIS_PORT']}"
        wait_for_tokens(redis_url, session, 5)
        os.kill(worker.process.pid, signal.SIGTERM)
        stopped = time.monotonic()
        assert worker.process.wait(timeout=30) == 0
        assert time.monotonic() - stopped < 5
        _, stderr = client.communicate(timeout=30)
    finally:
        client.kill()
    assert client.returncode != 0 and "stopped" in stderr, stderr
