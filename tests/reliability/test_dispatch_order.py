"""The scheduler's order decides, not the workers' clocks: a stale delivery never wins, a stale `done` is never written.

reliability/dispatch.py gives each run its delivery number and the scheduler's verdict on its
completion. Two failures that "newest start wins" and "done when the answer ends" got wrong (the
chaos run, tests/chaos, found both):

- a run a worker was handed waits in its queue for a run slot; the worker freezes, the run goes to
  the other worker, and the frozen one wakes up and starts it: its claim is the newest, but its
  delivery is older, so it is refused before its agent starts. Staged with real processes (the
  embedded re-delivering scheduler in this test process, a real Redis, two `worker.py` processes,
  `client.py --json --verify`) and SIGSTOP, at the default idle timeout;
- a run's `done` is written only once the scheduler accepted its completion, and never when it
  refused it: the writer against a real Redis, the verdict given by hand (the scheduler's refusal
  of a stale completion: tests/support/test_redelivering_scheduler.py).

Every worker's demo model signs its words, so a token of the wrong attempt shows.
Run it: `uv run pytest tests/reliability/test_dispatch_order.py`
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from redis_stream_response_handler import DONE, QUEUED, START, TOKEN, RedisStreamResponseHandler, stream_key
from reliability.crash_demo import wait_for_tokens
from reliability.dispatch import Dispatch, delivered
from reliability.fencing import FencedBatch, write_fenced
from reliability.run_scope import RunScope
from reliability.stop_watch import CancelWatcher
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.sessions import new_session_key
from tests.conftest import ROOT, cli_environment
from tests.streams import all_entries, until_written
from tests.tutorial.test_cli import WorkerProcess

Entries = list[tuple[str, dict[str, str]]]


@pytest.fixture
def start_worker(scheduler_endpoint: str, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(signature: str, **settings: str) -> WorkerProcess:
        env = cli_environment(ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url, **settings)
        worker = WorkerProcess(env | {"DEMO_MODEL_SIGNATURE": signature}, tmp_path / f"worker-{signature}.log")
        worker.wait_until_ready()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        os.kill(worker.process.pid, signal.SIGCONT)
        worker.process.kill()


def start_client(scheduler_endpoint: str, redis_url: str, session: str) -> subprocess.Popen[str]:
    env = cli_environment(ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url)
    return subprocess.Popen(
        [sys.executable, "client.py", "--session", session, "-m", "Plan a 3-day trip to Rome", "--json", "--verify"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_one_answer_from(signature: str, client: subprocess.Popen[str], stream: redis.Redis, session: str) -> None:
    """The reader exited 0 with the recorded answer, all of it from `signature`'s attempt, which alone wrote a done."""
    stdout, stderr = client.communicate(timeout=120)
    entries = cast(Entries, stream.xrange(stream_key(session)))
    assert client.returncode == 0, stderr
    assert "verified: the answer matches the one the durable agent recorded" in stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    restart = max((i for i, record in enumerate(records) if record.get("restart")), default=0)
    shown = [record for record in records[restart:] if record["kind"] == TOKEN]
    assert shown and all(record["text"].startswith(signature) for record in shown), "a superseded token was printed"
    dones = [fields for _, fields in entries if fields["kind"] == DONE]
    final_start = [fields for _, fields in entries if fields["kind"] == START][-1]
    assert len(dones) == 1 and dones[0]["attempt"] == final_start["attempt"], dones


def test_a_run_a_frozen_worker_held_in_its_queue_cannot_be_taken_back(
    start_worker: Callable[..., WorkerProcess], scheduler_endpoint: str, redis_url: str
) -> None:
    # One run slot: the second conversation's run waits in the worker's queue, not yet started.
    frozen = start_worker("old~", WORKER_MAX_CONCURRENT_RUNS="1", DEMO_MODEL_TOKEN_DELAY_MS="100")
    busy, session = new_session_key(), new_session_key()
    stream = redis.Redis.from_url(redis_url, decode_responses=True)
    clients = [start_client(scheduler_endpoint, redis_url, busy)]
    try:
        wait_for_tokens(redis_url, busy, 5)
        clients.append(start_client(scheduler_endpoint, redis_url, session))
        wait_for(lambda: set(kinds(stream, session)) == {QUEUED}, "the second run to wait for the slot")
        os.kill(frozen.process.pid, signal.SIGSTOP)  # past its lease: the scheduler delivers both runs again
        start_worker("new~", DEMO_MODEL_TOKEN_DELAY_MS="40")
        wait_for(lambda: kinds(stream, session).count(TOKEN) >= 6, "the new worker's answer")
        # It wakes up: its first run is fenced out, which frees the slot, and the run that waited starts,
        # claiming the run last. Its delivery is the older one, so the claim is refused.
        os.kill(frozen.process.pid, signal.SIGCONT)
        check_one_answer_from("new~", clients[1], stream, session)
    finally:
        for client in clients:
            client.kill()
    starts = [fields for _, fields in cast(Entries, stream.xrange(stream_key(session))) if fields["kind"] == START]
    assert len(starts) == 1 and not starts[0]["worker"].endswith(f":{frozen.process.pid}"), starts
    wait_for(lambda: frozen.log.read_text().count("superseded by a newer attempt") >= 2, "both stale runs to stop")


def kinds(stream: redis.Redis, session: str) -> list[str]:
    return [fields["kind"] for _, fields in cast(Entries, stream.xrange(stream_key(session)))]


@pytest.mark.parametrize("recorded", [True, False])
async def test_a_runs_done_waits_for_the_schedulers_verdict_on_it(redis_url: str, recorded: bool) -> None:
    # The worker side of it: the verdict is what the scheduler answered to the run's completion.
    session = new_session_key()
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        flusher = StreamFlusher(handler)
        with delivered(Dispatch("7")) as dispatch:
            writer = RunStreamWriter(flusher, session, "run-1")
            writer.start()
            writer.append_token("hello ")
            await writer.finish()  # the answer ended: the entity completes the run next
            await until_written(handler, session, 2)
            await asyncio.sleep(0.3)  # the flusher had time to write a done, had it one to write
            assert [fields["kind"] for fields in await all_entries(handler, session)] == [START, TOKEN]
            dispatch.decide(recorded)  # accepted: the answer is recorded; refused: the run was delivered again
        await asyncio.wait_for(asyncio.wrap_future(writer.written), 5)
        kinds = [fields["kind"] for fields in await all_entries(handler, session)]
    assert kinds == ([START, TOKEN, DONE] if recorded else [START, TOKEN])
    assert writer.fence == "dispatch:7"


async def test_a_claim_from_an_older_delivery_than_the_owners_is_refused(redis_url: str) -> None:
    session = new_session_key()

    def claim(fence: str) -> FencedBatch:
        return FencedBatch(session, "run-1", fence, claim=True, entries=[{"kind": START, "fence": fence}])

    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        owned = [(await write_fenced(handler, [claim(fence)]))[0].owned for fence in ("dispatch:6", "dispatch:5")]
        assert owned == [True, False]  # a thawed worker's stale delivery, claiming last
        assert (await write_fenced(handler, [claim("dispatch:8")]))[0].owned  # delivered again: later wins
        assert (await write_fenced(handler, [claim("a1b2c3")]))[0].owned  # no delivery number: newest start wins
        fences = [fields["fence"] for fields in await all_entries(handler, session)]
    assert fences == ["dispatch:6", "dispatch:8", "a1b2c3"]


async def test_a_stale_delivery_never_asks_the_model(redis_url: str) -> None:
    # A later delivery of the run already owns its stream: this one's claim is refused before its agent starts.
    session = new_session_key()
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        later = FencedBatch(
            session, "run-1", "dispatch:9", claim=True, entries=[{"kind": START, "fence": "dispatch:9"}]
        )
        await write_fenced(handler, [later])
        watcher = CancelWatcher()

        async def the_stale_runs_first_update() -> RunStreamWriter:  # in a task of its own, which the refusal cancels
            with delivered(Dispatch("3")):
                return RunStreamWriter(StreamFlusher(handler), session, "run-1").start()

        writer = await asyncio.create_task(the_stale_runs_first_update())
        try:
            stopped = await RunScope(cancel=watcher.watch(writer)).stopped_before_start()
        finally:
            watcher.close()
        fences = [fields["fence"] for fields in await all_entries(handler, session)]
    assert stopped, "the stale delivery would have asked the model and run its tools"
    assert writer.superseded and fences == ["dispatch:9"]
