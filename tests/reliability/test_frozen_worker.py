"""A worker frozen past its lease, then thawed: the reader still gets one answer, never a splice.

Real processes and signals, default idle timeout and heartbeat: the embedded scheduler (in this
test process, re-delivering a run whose worker stops answering its pings), a real Redis, two
`worker.py` processes and `client.py --json --verify`. The worker serving the answer is frozen
with SIGSTOP until the scheduler has delivered the run to the other worker and that one is
streaming, then thawed with SIGCONT: it wakes up mid-answer, still running the old attempt.
The workers' demo models sign every word differently, so a token of the old attempt shows.

Run it: `uv run pytest tests/reliability/test_frozen_worker.py`
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import redis

from redis_stream_response_handler import DONE, START, TOKEN, stream_key
from reliability.crash_demo import wait_for_tokens
from support.sessions import new_session_key
from tests.conftest import ROOT, cli_environment
from tests.tutorial.test_cli import WorkerProcess

Entries = list[tuple[str, dict[str, str]]]


def wait_for_second_attempt(stream: redis.Redis, session: str, tokens: int, timeout: float = 60) -> dict[str, str]:
    """The second attempt's start marker, once that attempt has written `tokens` tokens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = cast(Entries, stream.xrange(stream_key(session)))
        starts = [fields for _, fields in entries if fields["kind"] == START]
        if len(starts) == 2:
            second = starts[1]["attempt"]
            if sum(fields["kind"] == TOKEN and fields["attempt"] == second for _, fields in entries) >= tokens:
                return starts[1]
        time.sleep(0.1)
    raise AssertionError("the run was not delivered to the other worker")


def test_a_thawed_worker_neither_splices_nor_ends_the_answer(
    scheduler_endpoint: str, redis_url: str, tmp_path: Path
) -> None:
    env = cli_environment(
        ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url, DEMO_MODEL_TOKEN_DELAY_MS="60"
    )
    workers = {
        signature: WorkerProcess(env | {"DEMO_MODEL_SIGNATURE": signature}, tmp_path / f"worker-{signature}.log")
        for signature in ("one~", "two~")
    }
    for worker in workers.values():
        worker.wait_until_ready()
    session = new_session_key()
    client = subprocess.Popen(
        [sys.executable, "client.py", "--session", session, "-m", "Plan a 3-day trip to Rome", "--json", "--verify"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stream = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        correlation_id, pid = wait_for_tokens(redis_url, session, 10)
        frozen = next(signature for signature, worker in workers.items() if worker.process.pid == pid)
        serving = next(signature for signature in workers if signature != frozen)
        os.kill(pid, signal.SIGSTOP)  # past the scheduler's ping timeout: it delivers the run again
        second_start = wait_for_second_attempt(stream, session, tokens=5)
        os.kill(pid, signal.SIGCONT)  # the old attempt wakes up mid-answer
        stdout, stderr = client.communicate(timeout=120)
        entries = cast(Entries, stream.xrange(stream_key(session)))
    finally:
        client.kill()
        for worker in workers.values():
            os.kill(worker.process.pid, signal.SIGCONT)
            worker.process.kill()

    assert client.returncode == 0, stderr
    assert "verified: the answer matches the one the durable agent recorded" in stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    restart = next(index for index, record in enumerate(records) if record.get("restart"))
    shown = [record for record in records[restart:] if record["kind"] == "token"]
    assert shown and all(record["text"].startswith(serving) for record in shown), "a superseded token was printed"
    assert records[-1].get("done") and all(record["attempt"] == second_start["attempt"] for record in records[restart:])
    run = [fields for _, fields in entries if fields["correlation_id"] == correlation_id]
    assert [fields["kind"] for fields in run].count(DONE) == 1  # the thawed attempt never wrote its own done
    new_begins = next(index for index, fields in enumerate(run) if fields.get("attempt") == second_start["attempt"])
    assert all(fields.get("attempt") == second_start["attempt"] for fields in run[new_begins:])
    assert "superseded by a newer attempt" in workers[frozen].log.read_text()
