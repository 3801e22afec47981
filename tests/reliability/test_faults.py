"""Nothing lost, nothing hangs: the faults that really happen, injected into real parts.

Each test here backs one row of the README's "Failure modes" table.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from client import start_run
from redis_stream_response_handler import DONE, HEARTBEAT, RESTART, START, TOKEN, entry_fields, stream_key
from reliability.run_tracker import read_run
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from support.services import Services
from support.sessions import new_session_key
from tests.conftest import ROOT, cli_environment, run_cli
from tests.reliability.wire_faults import REFUSED, REPLY_LOST, Fault, WireFaults
from tests.tutorial.test_cli import WorkerProcess, start_worker
from tests.tutorial.test_end_to_end import ask, connect, text_of, worker_stack


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):
    running = start_worker(tmp_path_factory.mktemp("fault-worker"), DEMO_MODEL_TOKEN_DELAY_MS="5")
    yield running
    running.stop()


Entries = list[tuple[str, dict[str, str]]]  # a stream's entries as XRANGE returns them (decoded)


def worker_redis(worker: WorkerProcess) -> redis.Redis:
    return redis.Redis(port=int(worker.env["LOCAL_REDIS_PORT"]), decode_responses=True)


def json_run(worker: WorkerProcess, *args: str) -> tuple[list[dict[str, object]], subprocess.CompletedProcess[str]]:
    result = run_cli("client.py", *args, "--json", env=worker.env)
    return [json.loads(line) for line in result.stdout.splitlines()], result


# ---- the client -----------------------------------------------------------


def test_client_killed_at_random_points_resumes_byte_identical(worker: WorkerProcess) -> None:
    """SIGKILL the client at 20 random points (4 answers x 5 kills), resume each time from its last printed cursor."""
    rng = random.Random(20261125)
    for trial in range(4):
        session, cursor, received = new_session_key(), None, ""
        records: list[dict[str, object]] = []
        args = ["--session", session, "-m", f"Plan a 3-day trip to Kyoto, trial {trial}"]
        for _kill in range(5):
            lines = _run_and_kill(worker, [*args, "--json"], after_seconds=rng.uniform(0.05, 0.6))
            records = [json.loads(line) for line in lines]
            received += "".join(str(r["text"]) for r in records)
            cursor = str(records[-1]["entry_id"]) if records else cursor
            if records and records[-1].get("done"):
                break
            if cursor is not None:
                args = ["--session", session, "--cursor", cursor]
        if not (records and records[-1].get("done")):
            assert cursor is not None, "no token arrived at all before five kills"
            records, result = json_run(worker, "--session", session, "--cursor", cursor)
            assert result.returncode == 0, result.stderr
            received += "".join(str(r["text"]) for r in records)
        verified = run_cli("client.py", "--session", session, "--cursor", "0-0", "--verify", env=worker.env)
        assert verified.returncode == 0, verified.stderr
        assert received == verified.stdout.rstrip("\n")


def _run_and_kill(worker: WorkerProcess, args: list[str], after_seconds: float) -> list[str]:
    process = subprocess.Popen(
        [sys.executable, "client.py", *args], cwd=ROOT, env=worker.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    lines: list[str] = []
    # Wait for the first token, then kill at a random moment after it (or let it finish).
    while not lines and time.monotonic() < deadline and (line := process.stdout.readline()):
        lines.append(line)
    time.sleep(after_seconds)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    lines += process.stdout.read().splitlines(keepends=True)
    return [line for line in lines if line.endswith("\n")]  # a line cut by the kill was never printed whole


def test_verify_confirms_the_streamed_answer_equals_the_record(worker: WorkerProcess) -> None:
    result = run_cli("client.py", "-m", "Plan a 1-day trip to Porto", "--verify", env=worker.env)

    assert result.returncode == 0, result.stderr
    assert "[client] verified: the answer matches" in result.stderr


def test_a_gap_in_the_stream_is_filled_from_the_durable_record(worker: WorkerProcess) -> None:
    records, _ = json_run(worker, "-m", "Plan a 2-day trip to Bergen")
    session = str(records[0]["session"])
    worker_redis(worker).xdel(stream_key(session), str(records[5]["entry_id"]))  # one token lost

    result = run_cli("client.py", "--session", session, "--cursor", "0-0", env=worker.env)

    assert result.returncode == 0, result.stderr
    assert "1 tokens never reached the stream; the full answer, from the durable record" in result.stderr
    full_answer = "".join(str(r["text"]) for r in records)
    assert result.stdout.rstrip("\n").endswith(full_answer)


def test_a_recorded_run_whose_done_marker_never_arrived_ends_with_the_record(worker: WorkerProcess) -> None:
    """The worker died after the scheduler recorded the run, before its done marker's XADD: readers hear silence.

    Default settings: the reader waits out the default idle timeout (20 s), then asks the record, which has
    the answer: exit 0 and the answer, not "the worker may have died". The stream here keeps the run's
    first half only, so the record's text is printed in full.
    """
    records, _ = json_run(worker, "-m", "Plan a 2-day trip to Lyon")
    session, half = str(records[0]["session"]), len(records) // 2
    stream = worker_redis(worker)
    for record in records[half:]:  # the second half and the done marker never reached Redis
        stream.xdel(stream_key(session), str(record["entry_id"]))

    result = run_cli("client.py", "--session", session, "--cursor", "0-0", env=worker.env)

    assert result.returncode == 0, result.stderr
    assert "the stream ended before the answer did; the full answer, from the durable record" in result.stderr
    assert "error:" not in result.stderr
    assert result.stdout.rstrip("\n").endswith("".join(str(r["text"]) for r in records))


def test_an_expired_stream_is_recovered_from_the_durable_record(worker: WorkerProcess) -> None:
    records, _ = json_run(worker, "-m", "Plan a 2-day trip to Ghent")
    session = str(records[0]["session"])
    worker_redis(worker).delete(stream_key(session))  # TTL ran out, or Redis restarted empty

    result = run_cli("client.py", "--session", session, "--cursor", str(records[3]["entry_id"]), env=worker.env)

    assert result.returncode == 0, result.stderr
    assert "the stream is gone" in result.stderr
    assert result.stdout.rstrip("\n") == "".join(str(r["text"]) for r in records)


def test_restart_detection_shows_a_restart_not_a_splice(worker: WorkerProcess) -> None:
    """The same run delivered twice (its worker died): the second `start` means the answer starts over."""
    session = new_session_key()
    attempt = [entry_fields(START, "run-1", 0), *[entry_fields(TOKEN, "run-1", n, f"first{n} ") for n in range(3)]]
    again = [entry_fields(START, "run-1", 0), *[entry_fields(TOKEN, "run-1", n, f"second{n} ") for n in range(4)]]
    stream = worker_redis(worker)
    for fields in [*attempt, *again, entry_fields(DONE, "run-1", 4, chunks=4)]:
        stream.xadd(stream_key(session), fields)  # type: ignore[arg-type]

    records, result = json_run(worker, "--session", session, "--cursor", "0-0")

    assert result.returncode == 0, result.stderr
    assert "the answer restarted" in result.stderr
    restart_at = next(i for i, r in enumerate(records) if r.get("restart"))
    assert "".join(str(r["text"]) for r in records[restart_at:]) == "second0 second1 second2 second3 "


# ---- the model ------------------------------------------------------------


async def test_a_stream_that_fails_part_way_ends_with_the_recorded_answer(redis_url: str) -> None:
    """The host retries a failed stream without streaming: readers get a restart, then the recorded answer."""
    with worker_stack(redis_url, DEMO_MODEL_FAIL_AFTER_TOKENS="6", DEMO_MODEL_FAIL_STREAM_ONLY="1") as services:
        stack = await connect(services)
        session = new_session_key()
        correlation_id, chunks = await ask(stack, session, "Plan a 2-day trip to Prague")
        record = await asyncio.to_thread(stack.recorded, session, correlation_id or "")
        await stack.handler.aclose()

    kinds = [c.kind for c in chunks]
    assert kinds[-1] == DONE and RESTART in kinds
    assert len([c for c in chunks[: kinds.index(RESTART)] if c.text]) == 6  # the partial first attempt
    assert record is not None and text_of(chunks[kinds.index(RESTART) :]) == record.text


# ---- Redis ----------------------------------------------------------------


async def test_redis_restarted_mid_run_every_token_arrives_once_or_is_reported_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis restarts empty mid-answer, at a moment when the reader holds every entry the old server had.

    Then nothing can vanish unread with the old server, and what must hold is exact: the run ends
    with its done marker; the tokens the reader lacks are exactly those the worker itself reported
    it could not write (none, when Redis is back within the write retries, as it is here in about
    0.2 s); no token comes twice; the streamed text is the recorded answer exactly when none is missing.
    """
    port = free_port()
    server = PrivateRedisServer(port).__enter__()
    admin = redis.Redis(port=port, decode_responses=True)
    try:
        with worker_stack(server.url, DEMO_MODEL_TOKEN_DELAY_MS="20") as services:
            stack = await connect(services)
            session = new_session_key()
            correlation_id = (
                await start_run(stack.agent, stack.handler, session, "Plan a 3-day trip to Nice")
            ).correlation_id
            received, restart_at, after_restart = [], None, None
            async for chunk in read_run(stack.handler, session, "0-0", correlation_id=correlation_id):
                received.append(chunk)
                if len(received) == 15:  # mid-answer: hold the writes, then read up to the newest entry
                    admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
                    held: Entries = admin.xrevrange(stream_key(session))  # type: ignore[assignment]
                    restart_at = next(entry_id for entry_id, fields in held if fields["kind"] != HEARTBEAT)
                if chunk.entry_id == restart_at:  # the reader has it all: Redis restarts, empty (no persistence)
                    server.__exit__()
                    server = PrivateRedisServer(port).__enter__()
                    restart_at, after_restart = None, len(received)
            record = await asyncio.to_thread(stack.recorded, session, correlation_id or "")
            new_stream: Entries = admin.xrange(stream_key(session))  # type: ignore[assignment]
            await stack.handler.aclose()
    finally:
        server.__exit__()
        admin.close()

    final, tokens = received[-1], [c for c in received if c.kind == TOKEN]
    assert final.is_done, final
    assert final.missing == tokens_reported_lost(caplog)  # nothing lost silently
    assert [c.sequence for c in tokens] == sorted({c.sequence for c in tokens})  # nothing twice, in order
    assert record is not None and (text_of(received) == record.text) == (final.missing == 0)
    assert after_restart is not None and any(c.kind == TOKEN for c in received[after_restart:])  # restarted mid-answer
    assert START not in [fields["kind"] for _, fields in new_stream]  # ... and came back empty


def tokens_reported_lost(caplog: pytest.LogCaptureFixture) -> int:
    """The tokens the worker's writer gave up on, as it logged them."""
    return sum(getattr(record, "tokens_lost", 0) for record in caplog.records)


async def test_redis_writes_failing_twice_then_recovering_lose_and_repeat_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real write failures at the wire (tests/reliability/wire_faults.py), each retried by the worker's writer.

    Write 5 is applied but its reply is lost: the retry writes it again, and readers must skip
    the repeat. Writes 10 and 11 (a batch and its first retry) are refused by the server itself
    (-OOM); the second retry goes through. The writer's retries are the defaults (WRITE_ATTEMPTS and its backoff).
    """
    faults: dict[int, Fault] = {5: REPLY_LOST, 10: REFUSED, 11: REFUSED}
    with (
        PrivateRedisServer(free_port()) as server,
        WireFaults(server.port, faults) as wire,
        worker_stack(wire.url, DEMO_MODEL_TOKEN_DELAY_MS="10") as services,  # the worker writes through the proxy
    ):
        stack = await connect(Services(services.scheduler_endpoint, server.url))  # the reader reads Redis itself
        session = new_session_key()
        correlation_id = (
            await start_run(stack.agent, stack.handler, session, "Plan a 2-day trip to Turin")
        ).correlation_id
        chunks = [c async for c in read_run(stack.handler, session, "0-0", correlation_id=correlation_id)]
        record = await asyncio.to_thread(stack.recorded, session, correlation_id or "")
        written: Entries = await stack.handler.redis.xrange(stream_key(session))  # type: ignore[assignment]
        await stack.handler.aclose()

    final = chunks[-1]
    assert final.is_done and final.missing == 0, final
    assert record is not None and text_of(chunks) == record.text
    assert tokens_reported_lost(caplog) == 0
    assert wire.injected == {REPLY_LOST: 1, REFUSED: 2}  # the faults did happen ...
    sequences = [int(fields["sequence"]) for _, fields in written if fields["kind"] == TOKEN]
    assert len(sequences) > len(set(sequences))  # ... and the write whose reply was lost is in Redis twice


async def test_redis_refusing_writes_for_a_moment_loses_no_token(redis_url: str) -> None:
    with worker_stack(redis_url, DEMO_MODEL_TOKEN_DELAY_MS="10") as services:
        stack = await connect(services)
        admin = redis.Redis.from_url(redis_url)
        session = new_session_key()
        correlation_id = (
            await start_run(stack.agent, stack.handler, session, "Plan a 2-day trip to Turin")
        ).correlation_id
        chunks = []
        async for chunk in read_run(stack.handler, session, "0-0", correlation_id=correlation_id):
            chunks.append(chunk)
            if len(chunks) == 10:
                admin.execute_command("CLIENT", "PAUSE", "400", "WRITE")  # writes stall, reads go on
        record = await asyncio.to_thread(stack.recorded, session, correlation_id or "")
        await stack.handler.aclose()

    assert chunks[-1].is_done and chunks[-1].missing == 0
    assert record is not None and text_of(chunks) == record.text


# ---- the worker -----------------------------------------------------------


def test_a_killed_worker_is_reported_within_a_few_heartbeats(
    tmp_path: Path, redis_url: str, scheduler_endpoint: str
) -> None:
    env = cli_environment(
        ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url, DEMO_MODEL_TOKEN_DELAY_MS="50",
        STREAM_HEARTBEAT_SECONDS="0.3", STREAM_IDLE_TIMEOUT_SECONDS="2",
    )  # fmt: skip
    doomed = WorkerProcess(env, tmp_path / "doomed-worker.log")
    doomed.wait_until_ready()
    client = subprocess.Popen(
        [sys.executable, "client.py", "-m", "Plan a 3-day trip to Seville"], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None
    client.stdout.read(30)  # the answer is streaming
    doomed.process.send_signal(signal.SIGKILL)
    _, stderr = client.communicate(timeout=60)  # generous: this bounds a hang, it measures nothing

    assert client.returncode == 1
    assert "the answer stopped: nothing arrived for 2s (the worker may have died)" in stderr


def test_a_slow_first_token_with_heartbeats_does_not_time_out(tmp_path: Path) -> None:
    slow = start_worker(
        tmp_path,
        DEMO_MODEL_FIRST_TOKEN_DELAY_MS="3000",
        STREAM_HEARTBEAT_SECONDS="0.3",
        STREAM_IDLE_TIMEOUT_SECONDS="1.5",
    )
    try:
        result = run_cli("client.py", "-m", "Plan a 1-day trip to Bruges", env=slow.env)
    finally:
        slow.stop()

    assert result.returncode == 0, result.stderr
    assert "Bruges" in result.stdout
