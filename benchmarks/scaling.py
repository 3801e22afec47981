"""Scaling: many concurrent sessions streaming at once.

Two measurements, reported separately:

- streaming layer: K sessions × N tokens at LLM pace (20 ms per token), written
  by RunStreamWriter in ONE separate writer process (standing in for the worker;
  one shared Redis client, like RedisStreamCallback) and read by K
  `read_run` readers in this process (standing in for the clients).
- end to end: K concurrent agent turns through the embedded scheduler and ONE
  in-process worker (worker, scheduler and K readers share this process), with
  the demo model at 20 ms per word and its real answer length (~100 tokens).

The full run repeats the streaming layer on a local 3-master Redis Cluster (`__main__.run_on_cluster`);
`process_scaling` measures the deployment shape (scheduler, workers and readers in separate processes).

For each K: how many runs completed with every token, in order; aggregate
tokens/s; delivery latency (token timestamp → reader yield); peak RSS of the
writing process (sampled from /proc/self/status); MEMORY USAGE per finished stream.
For the streaming layer also the writer process's CPU time per token (RSS
sampler included) and the Redis round trips its one StreamFlusher made.

    uv run python -m benchmarks --quick     # runs this among the others
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.agent_stack import AgentStack
from benchmarks.common import Row, RssSampler, memory_usage, new_key, summarize_ms
from client import start_run
from redis_stream_response_handler import TOKEN, RedisStreamResponseHandler, StreamChunk, stream_key
from reliability.run_tracker import NUMBERED_KINDS, read_run
from reliability.write_behind import RunStreamWriter, StreamFlusher

RUN_ID = "bench-run"
PACE_SECONDS = 0.020
MESSAGE = "Plan a 3-day trip to Tokyo with emphasis on culture and food"


@dataclass
class SessionRead:
    """What one reader saw of one run."""

    latencies: list[float] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)  # of tokens and tool entries
    final: StreamChunk | None = None
    finished_at: float = 0.0
    first_token_at: float = 0.0  # when this reader got the run's first token (0: never)

    def complete(self, expected_tokens: int | None = None) -> bool:
        if self.final is None or not self.final.is_done:
            return False
        expected = self.final.chunks if expected_tokens is None else expected_tokens
        return self.sequences == list(range(expected or 0))


async def read_session(
    handler: RedisStreamResponseHandler, key: str, correlation_id: str | None, cursor: str = "0-0"
) -> SessionRead:
    seen = SessionRead()
    async for chunk in read_run(handler, key, cursor, correlation_id=correlation_id):
        if chunk.kind == TOKEN:
            seen.first_token_at = seen.first_token_at or time.time()
            seen.latencies.append(time.time() - chunk.timestamp)
        if chunk.kind in NUMBERED_KINDS:  # tool entries share the tokens' sequence numbers
            seen.sequences.append(chunk.sequence)
        seen.final = chunk
    seen.finished_at = time.time()
    return seen


def summarize_sessions(
    sessions: int, reads: Sequence[SessionRead], started: float, redis_url: str, keys: Sequence[str]
) -> Row:
    tokens = sum(len(read.latencies) for read in reads)
    wall = max(read.finished_at for read in reads) - started
    latencies = [latency for read in reads for latency in read.latencies]
    return {
        "sessions": sessions,
        "completed_in_order": sum(read.complete() for read in reads),
        "tokens_per_session": round(tokens / sessions),
        "aggregate_tokens_per_s": round(tokens / wall),
        "wall_s": round(wall, 2),
        **summarize_ms(latencies),
        "memory_usage_per_stream_bytes": round(statistics.median(memory_usage(redis_url, stream_key(k)) for k in keys)),
    }


# ---- streaming layer: writers in a separate process -------------------------


def writer_process(url: str, keys: list[str], tokens: int, results: Any) -> None:
    """Child process entry point: stream every session, then report timing and memory."""
    results.put(asyncio.run(_write_sessions(url, keys, tokens)))


async def _write_sessions(url: str, keys: list[str], tokens: int) -> dict[str, float]:
    handler = RedisStreamResponseHandler.from_url(url)
    await handler.redis.ping()
    writing_started, cpu_started = time.time(), time.process_time()
    flusher = StreamFlusher(handler)  # one flusher writes every session, as in a worker
    async with RssSampler() as rss:
        lost = await asyncio.gather(*(_write_one(flusher, key, tokens) for key in keys))
    cpu = time.process_time() - cpu_started
    round_trips = flusher.round_trips
    await handler.aclose()
    return {
        "writing_started": writing_started,
        "peak_rss_mib": rss.peak_mib,
        "tokens_lost": sum(lost),
        "writer_cpu_us_per_token": round(cpu / (len(keys) * tokens) * 1e6),
        "round_trips": round_trips,
    }


async def _write_one(flusher: StreamFlusher, key: str, tokens: int) -> int:
    await asyncio.sleep(random.uniform(0, PACE_SECONDS))  # sessions do not tick in lockstep
    writer = RunStreamWriter(flusher, key, RUN_ID)
    writer.start()
    for n in range(tokens):
        writer.append_token(f"w{n} ")
        await asyncio.sleep(PACE_SECONDS)
    await writer.finish()
    return writer.tokens_lost


async def streaming_layer(redis_url: str, sessions: int, tokens: int) -> Row:
    keys = [new_key(f"scale{sessions}") for _ in range(sessions)]
    handler = RedisStreamResponseHandler.from_url(redis_url, idle_timeout_seconds=60)
    readers = [asyncio.ensure_future(read_session(handler, key, RUN_ID)) for key in keys]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=writer_process, args=(redis_url, keys, tokens, results))
    child.start()
    reads = await asyncio.gather(*readers)
    report: dict[str, float] = await asyncio.to_thread(results.get, True, 60)
    await asyncio.to_thread(child.join, 10)
    await handler.aclose()
    row = summarize_sessions(sessions, reads, report.pop("writing_started"), redis_url, keys)
    layer = "streaming layer (RunStreamWriter, separate writer process)"
    return {"layer": layer, **row, **report, "rss_of": "the writer process"}


# ---- end to end: agent turns through one in-process worker ------------------


async def end_to_end(stack: AgentStack, sessions: int) -> Row:
    keys = [new_key(f"e2e{sessions}") for _ in range(sessions)]
    handler = RedisStreamResponseHandler.from_url(stack.services.redis_url, idle_timeout_seconds=60)
    started = time.time()

    async def turn(key: str) -> SessionRead:
        run = await start_run(stack.agent, handler, key, MESSAGE)
        return await read_session(handler, key, run.correlation_id, run.cursor)

    async with RssSampler() as rss:
        reads = await asyncio.gather(*(turn(key) for key in keys))
    await handler.aclose()
    row = summarize_sessions(sessions, reads, started, stack.services.redis_url, keys)
    return {
        "layer": "end to end (agent via scheduler, in-process worker)",
        **row,
        "peak_rss_mib": rss.peak_mib,
        "rss_of": "the one process: scheduler, worker and readers",
        "max_concurrent_runs": stack.max_concurrent_runs,
    }
