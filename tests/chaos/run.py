"""A chaos run: waves of concurrent runs, the plan's faults injected while they stream, every run checked.

Per wave: start each run (`start_run`, fire and forget), give it its readers (one in-process reader
that follows it to the end, one that is cut and resumes, and for some runs a `client.py` reader,
started once the run streams), wait until every run of the wave streams, then strike with the
wave's faults at their planned moments. When every reader has ended (or the run's time limit has
passed: a stuck run), thaw what is frozen, wait for the replacement workers, and check each run
against its stream and its durable record (check.py) before the stream can expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

from agent_framework import AgentResponse
from agent_framework_durabletask import DurableAIAgent, DurableAIAgentClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from redis.exceptions import RedisError

from agents import AGENT_NAME
from client import start_run
from redis_stream_response_handler import START, RedisStreamResponseHandler, stream_key
from reliability.durable_record import recorded_state, wait_for_recorded_answer
from support.scheduler import connect_client
from support.sessions import new_session_key
from tests.chaos.check import Entries, Report, RunResult, check_run
from tests.chaos.plan import (
    READER_CUT,
    REDIS_CLIENT_KILL,
    REDIS_RESTART,
    THAWED,
    WORKER_FREEZE,
    WORKER_KILL,
    WORKER_TERM,
    Fault,
    Plan,
    RunPlan,
)
from tests.chaos.readers import ReaderLog, read_in_process, read_with_client
from tests.chaos.stack import Stack, Worker

logger = logging.getLogger("chaos")
T = TypeVar("T")

RUN_TIME_LIMIT_SECONDS = (
    150.0  # a reader not ended by then is stuck (a freeze, a re-delivery and a re-run fit well within)
)
STREAMING_WITHIN_SECONDS = 60.0  # every run of a wave streams by then, or the faults strike anyway
TERM_EXIT_SECONDS = 30.0  # a worker told to stop (SIGTERM) exits by then, or it is reported and killed
IDLE_TIMEOUT_SECONDS = 20.0  # the readers' default STREAM_IDLE_TIMEOUT_SECONDS


class ChaosRun:
    def __init__(self, plan: Plan, stack: Stack, logs: Path) -> None:
        self.plan, self.stack, self.logs = plan, stack, logs
        self.faults: Counter[str] = Counter()
        self.notes: list[str] = []
        self._background: list[asyncio.Task[None]] = []
        self._scheduler: DurableTaskSchedulerClient | None = None

    async def execute(self) -> Report:
        began = time.monotonic()
        self._scheduler = connect_client(self.stack.env["ENDPOINT"], "default")
        agent = cast(DurableAIAgent[AgentResponse], DurableAIAgentClient(self._scheduler).get_agent(AGENT_NAME))
        handler = RedisStreamResponseHandler.from_url(self.stack.redis.url, idle_timeout_seconds=IDLE_TIMEOUT_SECONDS)
        results: list[RunResult] = []
        try:
            for wave in range(self.plan.waves):
                results += await self._wave(wave, agent, handler)
                done = len(results)
                print(
                    f"[chaos] wave {wave + 1}/{self.plan.waves}: {done} runs, {time.monotonic() - began:.0f} s",
                    flush=True,
                )
        finally:
            await handler.aclose()
        return Report(self.plan.seed, results, self.faults, self.plan.waves, time.monotonic() - began, self.notes)

    async def _wave(
        self, wave: int, agent: DurableAIAgent[AgentResponse], handler: RedisStreamResponseHandler
    ) -> list[RunResult]:
        runs = self.plan.runs_in(wave)
        sessions = [new_session_key() for _ in runs]
        started = await asyncio.gather(
            *(
                _redis_retried(lambda s=s, r=r: start_run(agent, handler, s, r.message))
                for s, r in zip(sessions, runs, strict=True)
            )
        )
        streaming = [asyncio.Event() for _ in runs]
        readers = [
            asyncio.create_task(self._readers(run, session, str(start.correlation_id), handler, event))
            for run, session, start, event in zip(runs, sessions, started, streaming, strict=True)
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STREAMING_WITHIN_SECONDS):
                await asyncio.gather(*(event.wait() for event in streaming))
        ended = asyncio.Event()
        strikes = asyncio.create_task(self._strike(self.plan.faults_in(wave), sessions, handler, ended))
        logs = await asyncio.gather(*readers)
        ended.set()
        await strikes
        await self._settle()
        results = []
        for run, session, start, readers_of_run in zip(runs, sessions, started, logs, strict=True):
            result = RunResult(run, session, str(start.correlation_id), readers_of_run)
            await self._check(result, handler)
            results.append(result)
        self.faults[READER_CUT] += sum(reader.resumes for reader in (r for rs in logs for r in rs))
        return results

    async def _readers(
        self,
        run: RunPlan,
        session: str,
        correlation_id: str,
        handler: RedisStreamResponseHandler,
        streaming: asyncio.Event,
    ) -> list[ReaderLog]:
        async def client_reader() -> ReaderLog:
            await streaming.wait()  # the stream exists: client.py --cursor 0-0 reattaches to it
            return await read_with_client(self.stack.env, session, run.client_cuts or (), self.logs)

        readers = [
            read_in_process(handler, session, correlation_id, (), "follower", streaming),
            read_in_process(handler, session, None, run.cuts, "resumer"),
            *([client_reader()] if run.client_cuts is not None else []),
        ]
        tasks = [asyncio.create_task(reader) for reader in readers]
        await asyncio.wait(tasks, timeout=RUN_TIME_LIMIT_SECONDS)
        logs = []
        for task, name in zip(tasks, ("follower", "resumer", "client.py"), strict=False):
            if task.done():
                logs.append(task.result())
            else:
                task.cancel()
                logs.append(ReaderLog(name))  # ended None: stuck
        await asyncio.gather(*tasks, return_exceptions=True)
        return logs

    async def _strike(
        self, faults: list[Fault], sessions: list[str], handler: RedisStreamResponseHandler, ended: asyncio.Event
    ) -> None:
        began, struck = time.monotonic(), set[Worker]()
        freezes: list[asyncio.Task[None]] = []
        for fault in faults:
            await asyncio.sleep(max(0.0, began + fault.after - time.monotonic()))
            if fault.kind == REDIS_CLIENT_KILL:
                dropped = await asyncio.to_thread(self.stack.redis.drop_connections)
                logger.warning("%s: dropped %d connections", fault.kind, dropped)
            elif fault.kind == REDIS_RESTART:
                down = await self._restart_redis()
                logger.warning("%s: Redis was down %.2f s", fault.kind, down)
            else:
                worker = await self._busy_worker(fault, sessions, handler, struck)
                if worker is None:
                    self.notes.append(f"wave {fault.wave}: no worker to hit with {fault.kind}")
                    continue
                struck.add(worker)
                if fault.kind == WORKER_FREEZE:
                    freezes.append(asyncio.create_task(self._freeze(worker, fault.seconds)))
                else:
                    self._retire(worker, fault.kind)
            self.faults[fault.kind] += 1
        await asyncio.gather(*freezes)

    async def _busy_worker(
        self, fault: Fault, sessions: list[str], handler: RedisStreamResponseHandler, struck: set[Worker]
    ) -> Worker | None:
        """A live, unfrozen worker serving a run of this wave (the newest start marker names it), else any."""
        candidates = [w for w in self.stack.live if not w.frozen and w not in struck and w.process.poll() is None]
        busy: set[Worker] = set()
        for session in sessions:
            with contextlib.suppress(Exception):
                entries = cast(Entries, await handler.redis.xrevrange(stream_key(session), count=400))
                newest = next((fields for _, fields in entries if fields["kind"] == START), None)
                if newest is not None and (worker := self.stack.by_pid(int(newest["worker"].rsplit(":", 1)[1]))):
                    busy.add(worker)
        pool = sorted((w for w in candidates if w in busy), key=lambda w: w.pid) or sorted(
            candidates, key=lambda w: w.pid
        )
        return pool[fault.pick % len(pool)] if pool else None

    async def _freeze(self, worker: Worker, seconds: float) -> None:
        worker.frozen = True
        self.stack.signal(worker, WORKER_FREEZE, signal.SIGSTOP)
        await asyncio.sleep(seconds)
        self.stack.signal(worker, THAWED, signal.SIGCONT)
        worker.frozen = False

    def _retire(self, worker: Worker, kind: str) -> None:
        worker.retired = True
        self.stack.signal(worker, kind, signal.SIGKILL if kind == WORKER_KILL else signal.SIGTERM)
        self.stack.add_worker()  # the replacement: three workers again, once it is ready
        if kind == WORKER_TERM:
            self._background.append(asyncio.create_task(self._reap(worker)))

    async def _reap(self, worker: Worker) -> None:
        deadline = time.monotonic() + TERM_EXIT_SECONDS
        while worker.process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a child process
            await asyncio.sleep(0.2)
        if worker.process.poll() is None:
            self.notes.append(
                f"worker {worker.signature} (pid {worker.pid}) did not exit within {TERM_EXIT_SECONDS:g} s of SIGTERM"
            )
            worker.process.kill()
        elif worker.process.returncode != 0:
            self.notes.append(
                f"worker {worker.signature} (pid {worker.pid}) exited {worker.process.returncode} on SIGTERM"
            )

    async def _restart_redis(self) -> float:
        began = time.monotonic()
        self.stack.redis.kill()
        self.stack.redis.spawn()
        while not await asyncio.to_thread(self.stack.redis.answers):  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    async def _settle(self) -> None:
        """Before the next wave: stopped workers gone, replacements ready."""
        await asyncio.gather(*self._background)
        self._background.clear()
        deadline = time.monotonic() + 120
        for worker in self.stack.live:
            while "TravelPlanner is ready" not in worker.log.read_text(errors="replace"):
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {worker.signature} did not start:\n{worker.log.read_text()[-2000:]}")
                await asyncio.sleep(0.2)

    async def _check(self, result: RunResult, handler: RedisStreamResponseHandler) -> None:
        assert self._scheduler is not None
        scheduler, session, correlation_id = self._scheduler, result.session, result.correlation_id
        record = await asyncio.to_thread(wait_for_recorded_answer, scheduler, session, correlation_id)
        state = await asyncio.to_thread(recorded_state, scheduler, session)
        entries = cast(Entries, await _redis_retried(lambda: handler.redis.xrange(stream_key(session))))
        check_run(result, entries, state, record.text if record is not None else None, self.stack)


async def _redis_retried(call: Callable[[], Awaitable[T]]) -> T:
    """The harness's own Redis calls, again after a dropped connection (its pooled ones are dropped too).

    Only Redis is retried: `start_run` reads the stream's newest id before it asks the scheduler for a run.
    """
    for attempt in range(1, 6):
        try:
            return await call()
        except RedisError:
            if attempt == 5:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")
