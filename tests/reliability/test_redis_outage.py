"""A Redis outage, as readers live through it: a real redis-server stopped, and started again on its port.

A reader rides out an outage for as long as the idle timeout (support/redis_reads.py), counted
from the last time Redis answered it; past that it ends with one error line and the command that
resumes it. Each test here would fail with a reader that gave up after a fixed few attempts (~3 s).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, entry_fields, stream_key
from reliability.durable_record import latest_recorded_answer
from reliability.run_tracker import read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from support.redis_reads import RedisUnreachableError
from support.scheduler import connect_client
from support.sessions import new_session_key
from tests.conftest import ROOT, cli_environment
from tests.tutorial.test_cli import WorkerProcess

OUTAGE_SECONDS = 6.0  # twice what the old reader survived (5 attempts, 0.2 + 0.4 + 0.8 + 1.6 s apart)
OUTAGE_BEGINS, READS_RESUMED = "reconnecting from cursor", "Redis reads resumed after"


class RestartableRedis:
    """A private redis-server that can be stopped and started again on the same port (empty: no persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: PrivateRedisServer | None = PrivateRedisServer(self.port).__enter__()
        self.url = self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.__exit__()
            self.server = None

    def start(self) -> None:
        self.server = PrivateRedisServer(self.port).__enter__()


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    restartable = RestartableRedis()
    yield restartable
    restartable.stop()


def client_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "client.py", *args, "--json"], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_records(client: subprocess.Popen[str], until: int) -> list[dict[str, object]]:
    """The client's first `until` JSON records (one per printed chunk), read as they arrive."""
    assert client.stdout is not None
    records: list[dict[str, object]] = []
    while len(records) < until and (line := client.stdout.readline()):
        records.append(json.loads(line))
    assert len(records) == until, "the client ended before printing what the test waits for"
    return records


def test_redis_down_for_6s_mid_answer_the_client_prints_the_full_answer_with_default_settings(
    tmp_path: Path, scheduler_endpoint: str, restartable_redis: RestartableRedis
) -> None:
    """Redis stops mid-answer and comes back empty 6 s later; the idle timeout and heartbeats are the defaults.

    The reader reconnects from its cursor and reads what the worker writes once Redis is back; the
    tokens written into the outage are counted missing, so the client prints the recorded answer.
    """
    env = cli_environment(
        ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=restartable_redis.url, DEMO_MODEL_TOKEN_DELAY_MS="60"
    )  # a ~20 s answer: it is still streaming when Redis is back
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_until_ready()
        client = client_process(env, "-m", "Plan a 3-day trip to Lisbon")
        first = read_records(client, until=10)  # the answer is streaming
        restartable_redis.stop()
        time.sleep(OUTAGE_SECONDS)
        restartable_redis.start()
        rest, stderr = client.communicate(timeout=120)  # generous: this bounds a hang, it measures nothing
    finally:
        worker.stop()
    session = str(first[0]["session"])
    record = latest_recorded_answer(connect_client(scheduler_endpoint, "default"), session)

    records = first + [json.loads(line) for line in rest.splitlines()]
    assert client.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count(OUTAGE_BEGINS) == 1 and stderr.count(READS_RESUMED) == 1, stderr  # once, not per attempt
    final = records[-1]
    shown = str(final["text"]) if final.get("recovered") else "".join(str(r["text"]) for r in records)
    assert record is not None and shown == record.text  # the full answer


def test_redis_down_longer_than_the_idle_timeout_ends_with_one_error_line_and_the_resume_command(
    scheduler_endpoint: str, restartable_redis: RestartableRedis
) -> None:
    """A reader waits out the idle timeout (6 s here) from Redis's last answer, then stops: exit 1, no traceback."""
    session, idle_timeout = new_session_key(), 6.0
    stream = redis.Redis.from_url(restartable_redis.url, decode_responses=True)
    for fields in [entry_fields(START, "run-1", 0), *[entry_fields(TOKEN, "run-1", n, f"t{n} ") for n in range(3)]]:
        stream.xadd(stream_key(session), fields)  # type: ignore[arg-type]
    stream.close()
    env = cli_environment(
        ENDPOINT=scheduler_endpoint,
        REDIS_CONNECTION_STRING=restartable_redis.url,
        STREAM_IDLE_TIMEOUT_SECONDS=f"{idle_timeout:g}",
    )
    client = client_process(env, "--session", session, "--cursor", "0-0")
    printed = read_records(client, until=4)  # the start and three tokens: the reader now waits in XREAD BLOCK
    restartable_redis.stop()
    stopped = time.monotonic()
    _, stderr = client.communicate(timeout=60)
    waited = time.monotonic() - stopped

    assert client.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert idle_timeout - 1.5 <= waited <= idle_timeout + 5, waited  # the whole idle timeout, then promptly
    lines = stderr.strip().splitlines()[2:]  # after `[redis] using ...` and `[scheduler] using ...`
    assert len(lines) == 2 and OUTAGE_BEGINS in lines[0], stderr  # one warning, then one error line
    assert lines[1].startswith(f"error: Redis failed while streaming (no answer from Redis for {idle_timeout:g}s")
    assert lines[1].endswith(f"resume with: uv run client.py --session {session} --cursor {printed[-1]['entry_id']}")


async def test_a_reader_waiting_out_an_outage_holds_no_connection_and_stops_at_once_when_cancelled(
    restartable_redis: RestartableRedis,
) -> None:
    """What a web reader (SSE, AG-UI) does while Redis is down: no pooled connection held, cancellable at once."""
    session = new_session_key()
    handler = RedisStreamResponseHandler.from_url(restartable_redis.url, idle_timeout_seconds=20)
    await handler.write_streams([(session, [entry_fields(START, "run-1", 0)])])
    entries = handler.read_entries(session, "0-0")
    assert (await anext(entries)).kind == START
    reading = asyncio.ensure_future(anext(entries))  # now blocked in XREAD
    await asyncio.sleep(0.2)
    restartable_redis.stop()
    await asyncio.sleep(OUTAGE_SECONDS - 2)  # past the old reader's budget, well within the idle timeout

    assert not reading.done(), reading  # still waiting for Redis
    assert isinstance(handler.redis, aioredis.Redis)
    assert not handler.redis.connection_pool._in_use_connections  # the failed connection went back to the pool
    cancelled = time.monotonic()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert time.monotonic() - cancelled < 1.0  # at once (not after the next reconnect): the wait is a plain sleep
    await handler.aclose()


async def test_the_outage_is_counted_from_redis_last_answer_not_from_when_the_read_failed(
    restartable_redis: RestartableRedis,
) -> None:
    """Silent for 2 s of a 3 s idle timeout, then Redis goes: the reader has 1 s of patience left, not 3."""
    handler = RedisStreamResponseHandler.from_url(restartable_redis.url, idle_timeout_seconds=3)
    reading = asyncio.ensure_future(anext(handler.read_entries(new_session_key(), "0-0")))
    await asyncio.sleep(2)  # blocked in XREAD, nothing arriving
    restartable_redis.stop()
    stopped = time.monotonic()

    with pytest.raises(RedisUnreachableError, match="no answer from Redis for 3s, the idle timeout"):
        await reading
    assert time.monotonic() - stopped < 2.0  # about 1 s: the idle timeout since Redis last answered
    await handler.aclose()


async def test_an_answer_that_ends_while_redis_is_down_is_written_whole_when_it_returns(
    restartable_redis: RestartableRedis,
) -> None:
    # The writer's side of the same outage, at the default idle timeout (20 s): the last tokens and
    # the done marker are queued while Redis is down, and written once it is back, none lost.
    session = new_session_key()
    async with RedisStreamResponseHandler.from_url(restartable_redis.url) as handler:
        writer = RunStreamWriter(StreamFlusher(handler), session, "run-1")
        writer.start()
        writer.append_token("before ")
        await asyncio.sleep(0.2)  # written
        restartable_redis.stop()
        writer.append_token("during ")
        finishing = asyncio.ensure_future(writer.finish())
        await asyncio.sleep(OUTAGE_SECONDS)
        assert not finishing.done()  # still retrying, not given up
        restartable_redis.start()
        await asyncio.wait_for(finishing, 10)
        chunks = [chunk async for chunk in read_run(handler, session, correlation_id="run-1")]

    assert writer.tokens_lost == 0
    assert [chunk.text for chunk in chunks if chunk.kind == TOKEN] == ["during "]  # Redis came back empty
    assert chunks[-1].kind == DONE and chunks[-1].chunks == 2
