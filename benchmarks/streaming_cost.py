"""The streaming layer's cost per token: a worker's CPU with and without streaming its tokens (issues 19, 25).

The deployment shape of section 6 (process_scaling.py), twice over: for each variant its own
`scheduler_server.py` and ONE worker process, both variants started before the first wave; the readers
are in this process. Then waves of K concurrent sessions (one turn each, the demo model's ~112-word answer
at 20 ms per word), alternating between the variants in ABBA order (a b, b a, a b, ...) so that a load that
drifts while they run weighs on both alike, after one small warm-up wave each. Per wave:

- worker CPU µs/token: the worker's CPU time (/proc/<pid>/stat), from before the first `start_run` until the
  worker is idle again after the last done marker (so a run's wrap-up counts), divided by the tokens the
  MODEL produced: the done markers' `usage` output tokens (a variant that streams no tokens still reports them);
- Redis CPU µs/token: Redis's own CPU time (INFO cpu) over the wave, readers' XREADs included, per token.

Two comparisons, each of a worker.py and a variant of it (benchmarks/variant_worker.py):

- streaming layer (`--only streaming-cost`, and in --full and --quick): worker.py against the same worker that
  writes each run's start and done markers but none of its tokens; `streaming_layer_us_per_token` is the median,
  over the wave pairs, of the difference: what streaming the tokens (writer, flusher, redis-py, Redis round trips
  on the worker's side) costs the worker per token;
- fencing (`--only fencing-cost`, a one-off): worker.py, whose batches go through the fenced Lua script
  (reliability/fencing.py), against the same worker writing them with a plain pipelined XADD.

Each variant is checked before it counts: every run done, with its usage; worker.py's tokens complete and in
order; the markers-only worker's streams without a token; the fence's attempts hash present only where it
should be. A variant that does not do what it says fails the run (CI runs the --quick version): no thresholds.

    uv run python -m benchmarks --full --only streaming-cost    # about a minute on an idle 2-core machine
    uv run python -m benchmarks --full --only fencing-cost
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from agent_framework_durabletask import DurableAIAgentClient

from agents import AGENT_NAME
from benchmarks.common import Row, new_key
from benchmarks.process_scaling import Deployment, deployment
from benchmarks.scaling import MESSAGE, SessionRead, read_session
from benchmarks.variant_worker import MARKERS_ONLY, PLAIN_XADD, VARIANT_VARIABLE
from client import start_run
from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.fencing import attempts_key
from support.config import load_settings
from support.redis_connection import async_client
from support.scheduler import connect_client

SETTLE_POLL_SECONDS = 0.1
SETTLE_MAX_SECONDS = 3.0


@dataclass(frozen=True)
class Variant:
    """A worker to measure: worker.py itself (`worker_variant` empty) or benchmarks/variant_worker.py."""

    label: str
    worker_variant: str
    streams_tokens: bool
    fenced: bool

    def command(self) -> tuple[str, ...]:
        return ("-m", "benchmarks.variant_worker") if self.worker_variant else ("worker.py",)


WORKER = Variant("worker.py: tokens streamed, fenced write", "", streams_tokens=True, fenced=True)
MARKERS = Variant("markers only: start and done, no tokens", MARKERS_ONLY, streams_tokens=False, fenced=True)
PLAIN = Variant("plain pipelined XADD: tokens streamed, no fence", PLAIN_XADD, streams_tokens=True, fenced=False)
STREAMING_LAYER = (WORKER, MARKERS)  # the difference: streaming_layer_us_per_token
FENCING = (WORKER, PLAIN)  # the difference: fencing_us_per_token


@dataclass(frozen=True)
class WaveCost:
    """One wave of one variant."""

    worker_cpu_s: float
    redis_cpu_s: float
    model_tokens: int  # the done markers' usage output tokens, summed
    tokens_read: int  # token entries the readers got
    sessions: int
    wall_s: float
    load_1min: float  # the machine's load average as the wave ended: how busy the other tenants were
    script_calls: int  # the fenced write's script calls (EVAL) over the wave: the worker's write round trips

    @property
    def worker_us_per_token(self) -> float:
        return self.worker_cpu_s / self.model_tokens * 1e6

    @property
    def redis_us_per_token(self) -> float:
        return self.redis_cpu_s / self.model_tokens * 1e6


class Target:
    """One variant's deployment and the clients that start and read its runs."""

    def __init__(self, variant: Variant, deployed: Deployment, max_sessions: int) -> None:
        self.variant, self.deployed = variant, deployed
        scheduler = connect_client(deployed.scheduler_endpoint, load_settings({}).taskhub)
        self.agent = DurableAIAgentClient(scheduler).get_agent(AGENT_NAME)
        # One reader per session, each holding a connection while it blocks: a pool big enough for all of them.
        redis = async_client(
            deployed.redis_url, decode_responses=True, socket_timeout=None, max_connections=max_sessions + 8
        )
        self.handler = RedisStreamResponseHandler(redis, idle_timeout_seconds=120)

    async def wave(self, sessions: int) -> WaveCost:
        async def turn(key: str) -> SessionRead:
            run = await start_run(self.agent, self.handler, key, MESSAGE)
            return await read_session(self.handler, key, run.correlation_id, run.cursor)

        keys = [new_key("cost") for _ in range(sessions)]
        worker_before, redis_before = self.deployed.worker_cpu_seconds(), await self._redis_cpu_seconds()
        calls_before = await self._script_calls()
        started = time.time()
        reads = await asyncio.gather(*(turn(key) for key in keys))
        wall = time.time() - started
        await _settle(self.deployed)  # the runs' wrap-up after their done markers is theirs too
        worker_cpu = self.deployed.worker_cpu_seconds() - worker_before
        redis_cpu = await self._redis_cpu_seconds() - redis_before
        script_calls = await self._script_calls() - calls_before
        await self._check(keys, reads)
        return WaveCost(
            worker_cpu_s=worker_cpu,
            redis_cpu_s=redis_cpu,
            model_tokens=sum(_output_tokens(read) for read in reads),
            tokens_read=sum(len(read.latencies) for read in reads),
            sessions=sessions,
            wall_s=wall,
            load_1min=os.getloadavg()[0],
            script_calls=script_calls,
        )

    async def aclose(self) -> None:
        await self.handler.aclose()

    async def _redis_cpu_seconds(self) -> float:
        cpu = await self.handler.redis.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    async def _script_calls(self) -> int:
        stats = await self.handler.redis.info("commandstats")
        return int(stats.get("cmdstat_eval", {}).get("calls", 0))

    async def _check(self, keys: Sequence[str], reads: Sequence[SessionRead]) -> None:
        """The variant did what it says, or its figures mean nothing: fail loudly (CI runs this)."""
        label = self.variant.label
        for key, read in zip(keys, reads, strict=True):
            if read.final is None or not read.final.is_done or _output_tokens(read) <= 0:
                raise RuntimeError(f"{label}: a run did not end with a done marker with its usage: {read.final}")
            if self.variant.streams_tokens and not (read.complete() and read.latencies):
                raise RuntimeError(f"{label}: a run's tokens were not all read, in order: {read.sequences[:10]}...")
            if not self.variant.streams_tokens and read.sequences:
                raise RuntimeError(f"{label}: a run streamed {len(read.sequences)} entries; only markers expected")
            fenced = bool(await self.handler.redis.exists(attempts_key(key)))
            if fenced != self.variant.fenced:
                raise RuntimeError(f"{label}: the fence's attempts hash is {'present' if fenced else 'absent'}")


def _output_tokens(read: SessionRead) -> int:
    usage = json.loads(read.final.usage or "{}") if read.final is not None else {}
    return int(usage.get("output_tokens", 0))


async def _settle(deployed: Deployment) -> None:
    """Wait until the worker's CPU time stops growing (two equal readings in a row), at most a few seconds."""
    deadline, last, same = time.monotonic() + SETTLE_MAX_SECONDS, deployed.worker_cpu_seconds(), 0
    while same < 2 and time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_POLL_SECONDS)
        now = deployed.worker_cpu_seconds()
        same, last = (same + 1 if now == last else 0), now


async def _run_waves(
    targets: Sequence[Target], pairs: int, sessions: int, warmup_sessions: int
) -> list[list[WaveCost]]:
    """A warm-up wave per target (not counted), then `pairs` rounds of one wave each, in ABBA order."""
    costs: list[list[WaveCost]] = [[] for _ in targets]
    # start_run's blocking gRPC call goes to the loop's default executor: one thread per session.
    with ThreadPoolExecutor(max_workers=max(sessions, warmup_sessions), thread_name_prefix="start-run") as starter:
        asyncio.get_running_loop().set_default_executor(starter)
        try:
            if warmup_sessions:
                for target in targets:
                    await target.wave(warmup_sessions)
            for pair in range(pairs):
                order = range(len(targets)) if pair % 2 == 0 else reversed(range(len(targets)))
                for index in order:
                    cost = await targets[index].wave(sessions)
                    costs[index].append(cost)
                    per_token = (
                        f"{cost.worker_us_per_token:.0f} µs/token (worker), {cost.redis_us_per_token:.0f} (Redis), "
                        f"{cost.model_tokens / max(cost.script_calls, 1):.1f} tokens per script call"
                    )
                    print(f"[bench]   {targets[index].variant.label}: {per_token}", file=sys.stderr, flush=True)
        finally:
            for target in targets:
                await target.aclose()
    return costs


def measure(
    redis_url: str, variants: Sequence[Variant], pairs: int, sessions: int, warmup_sessions: int
) -> tuple[list[Row], list[Row]]:
    """One deployment per variant, all started first; the table's rows (variants, then the difference) and the waves.

    The difference row compares the first variant with the second, wave pair by wave pair.
    """
    with ExitStack() as stack, ThreadPoolExecutor(len(variants), thread_name_prefix="deploy") as starting:
        # Started side by side (mostly imports: CPU on a 2-core machine); each one that started is stopped on exit.
        managers = [deployment(redis_url, 1, v.command(), {VARIANT_VARIABLE: v.worker_variant}) for v in variants]
        deployed = [future.result() for future in [starting.submit(stack.enter_context, m) for m in managers]]
        targets = [
            Target(variant, d, max(sessions, warmup_sessions)) for variant, d in zip(variants, deployed, strict=True)
        ]
        costs = asyncio.run(_run_waves(targets, pairs, sessions, warmup_sessions))
    rows = [_variant_row(variant, waves) for variant, waves in zip(variants, costs, strict=True)]
    rows.append(_difference_row(costs[0], costs[1]))
    waves = [
        {"variant": variant.label, "wave": n, **_wave_fields(cost)}
        for variant, variant_costs in zip(variants, costs, strict=True)
        for n, cost in enumerate(variant_costs)
    ]
    return rows, waves


def _variant_row(variant: Variant, waves: Sequence[WaveCost]) -> Row:
    worker = [wave.worker_us_per_token for wave in waves]
    return {
        "variant": variant.label,
        "waves": len(waves),
        "sessions": waves[0].sessions,
        "model_tokens_per_run": round(sum(w.model_tokens for w in waves) / sum(w.sessions for w in waves), 1),
        "tokens_read_per_run": round(sum(w.tokens_read for w in waves) / sum(w.sessions for w in waves), 1),
        "worker_cpu_us_per_token": round(statistics.median(worker), 1),
        "worker_cpu_us_per_token_min": round(min(worker), 1),
        "worker_cpu_us_per_token_max": round(max(worker), 1),
        "redis_cpu_us_per_token": round(statistics.median(wave.redis_us_per_token for wave in waves), 1),
        "tokens_per_script_call": round(statistics.median(w.model_tokens / max(w.script_calls, 1) for w in waves), 1),
        "wall_s": round(statistics.median(wave.wall_s for wave in waves), 2),
    }


def _difference_row(first: Sequence[WaveCost], second: Sequence[WaveCost]) -> Row:
    """The first variant minus the second, per wave pair: median (and min, max) of the differences."""
    worker = [a.worker_us_per_token - b.worker_us_per_token for a, b in zip(first, second, strict=True)]
    redis = [a.redis_us_per_token - b.redis_us_per_token for a, b in zip(first, second, strict=True)]
    return {
        "variant": "difference (first − second, per wave pair)",
        "waves": len(worker),
        "worker_cpu_us_per_token": round(statistics.median(worker), 1),
        "worker_cpu_us_per_token_min": round(min(worker), 1),
        "worker_cpu_us_per_token_max": round(max(worker), 1),
        "redis_cpu_us_per_token": round(statistics.median(redis), 1),
    }


def _wave_fields(cost: WaveCost) -> Row:
    return {
        "worker_cpu_us_per_token": round(cost.worker_us_per_token, 1),
        "redis_cpu_us_per_token": round(cost.redis_us_per_token, 1),
        "model_tokens": cost.model_tokens,
        "tokens_read": cost.tokens_read,
        "wall_s": round(cost.wall_s, 2),
        "script_calls": cost.script_calls,
        "load_1min": round(cost.load_1min, 2),
    }
