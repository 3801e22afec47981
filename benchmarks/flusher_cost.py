"""The flusher's CPU per token in one process: section 7's streaming layer without the agent, the scheduler and gRPC.

Section 7 (streaming_cost.py) measures the layer where it runs, in a worker process beside a scheduler, readers and
Redis on the same cores, and its difference of two busy processes moves by ±20 µs/token from run to run. This one
isolates the part that changes when the write path changes: K runs on one event loop (the agents' loop), each
appending a token every 20 ms after `AGENT_WORK_US` of busy work per token (so the GIL is contended as in a worker,
where Agent Framework spends ~100 µs per token), and the worker's own flusher on its thread
(reliability/flusher_thread.py) writing them to a real Redis. Per round:

- flusher µs/token: the flusher thread's CPU time (/proc/self/task/<tid>/stat) over the round, per token;
- agents' loop µs/token: the loop thread's CPU time per token, minus the simulated agent work;
- tokens per write: tokens over the flusher's round trips (its fenced script calls).

    uv run python -m benchmarks --full --only flusher-cost    # 3 rounds of 100 runs for 8 s (about 30 s)
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

from benchmarks.common import Row
from reliability.flusher_thread import start_flusher_thread
from reliability.write_behind import RunStreamWriter, StreamFlusher
from support.config import load_settings

AGENT_WORK_US = 80.0
TOKEN_INTERVAL_SECONDS = 0.02


def measure(redis_url: str, sessions: int, seconds: float, rounds: int) -> list[Row]:
    return [asyncio.run(_round(redis_url, sessions, seconds)) for _ in range(rounds)]


async def _round(redis_url: str, sessions: int, seconds: float) -> Row:
    flusher = start_flusher_thread(redis_url, load_settings({}))
    try:
        flusher_thread = next(t for t in threading.enumerate() if t.name == "stream-flusher").native_id
        loop_thread = threading.get_native_id()
        assert flusher_thread is not None
        flusher_before, loop_before = _thread_cpu(flusher_thread), _thread_cpu(loop_thread)
        deadline = time.monotonic() + seconds
        tokens = sum(await asyncio.gather(*(_run(flusher, deadline) for _ in range(sessions))))
        flusher_cpu, loop_cpu = _thread_cpu(flusher_thread) - flusher_before, _thread_cpu(loop_thread) - loop_before
    finally:
        await flusher.aclose()
    return {
        "sessions": sessions,
        "tokens": tokens,
        "tokens_per_write": round(tokens / max(flusher.round_trips, 1), 1),
        "flusher_us_per_token": round(flusher_cpu / tokens * 1e6, 1),
        "agents_loop_us_per_token": round(loop_cpu / tokens * 1e6 - AGENT_WORK_US, 1),
    }


async def _run(flusher: StreamFlusher, deadline: float) -> int:
    writer = RunStreamWriter(flusher, f"bench-flusher-{uuid.uuid4().hex}", uuid.uuid4().hex)
    writer.start()
    tokens = 0
    while time.monotonic() < deadline:
        _busy(AGENT_WORK_US / 1e6)  # the agent's own work for this token, holding the GIL as it does
        writer.append_token(f"word{tokens} ")
        tokens += 1
        await asyncio.sleep(TOKEN_INTERVAL_SECONDS)
    await writer.finish()
    if writer.tokens_lost:
        raise RuntimeError(f"the flusher lost {writer.tokens_lost} tokens: the figures would be wrong")
    return tokens


def _busy(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _thread_cpu(native_id: int) -> float:
    """A thread's CPU seconds (utime + stime) from /proc: `time.thread_time` only reads the calling thread's."""
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
