"""Process-separated scaling: a scheduler process, one or two worker processes, and the readers here.

The deployment shape, on one machine: `scheduler_server.py` in its own process,
N `worker.py` processes (default settings except the demo model's pace) sharing
its task hub and one Redis, and K concurrent sessions started and read from
this process. For each K and N:

- TTFT: `start_run` called → the run's first token read (p50/p99);
- delivery: a token's timestamp (worker) → read here (p50/p99);
- completed: runs whose every token arrived, in order, ending with `done`;
- tokens/s: tokens read / wall time of the wave;
- worker CPU µs/token: the workers' CPU time (/proc/<pid>/stat) over the wave / tokens;
- CPU busy: workers + scheduler + readers CPU time / (wall time × cores): near 100%, the machine is the limit.

    uv run python -m benchmarks --full     # runs this among the others
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent_framework_durabletask import DurableAIAgentClient

from agents import AGENT_NAME
from benchmarks.common import Row, new_key, summarize_ms
from benchmarks.scaling import MESSAGE, SessionRead, read_session
from client import start_run
from redis_stream_response_handler import RedisStreamResponseHandler
from support.config import load_settings
from support.ports import free_port, port_answers
from support.redis_connection import async_client
from support.scheduler import connect_client

ROOT = Path(__file__).resolve().parent.parent
TOKEN_DELAY_MS = 20


@dataclass
class Deployment:
    """The scheduler and worker processes of one measurement, and how to reach them."""

    scheduler_endpoint: str
    redis_url: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def worker_cpu_seconds(self) -> float:
        return sum(_cpu_seconds(worker.pid) for worker in self.workers)

    def cpu_seconds(self) -> float:
        """Workers, scheduler and this process (the readers): everything the benchmark runs but Redis."""
        return self.worker_cpu_seconds() + _cpu_seconds(self.scheduler.pid) + time.process_time()


@contextmanager
def deployment(
    redis_url: str,
    workers: int,
    worker_command: Sequence[str] = ("worker.py",),
    worker_variables: Mapping[str, str] | None = None,
) -> Iterator[Deployment]:
    """`scheduler_server.py` and `workers` × `worker.py`, each its own process, stopped on exit.

    `worker_command` (after the Python interpreter) and `worker_variables` start another worker instead:
    section 7 (streaming_cost.py) runs benchmarks/variant_worker.py with BENCH_WORKER_VARIANT set.
    """
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-processes-")))
        scheduler = _start(stack, [sys.executable, "scheduler_server.py", "--port", str(port)], env, logs / "s.log")
        _wait_for(lambda: port_answers("localhost", port), scheduler, logs / "s.log")
        worker_env = {
            **env,
            "ENDPOINT": f"http://localhost:{port}",
            "REDIS_CONNECTION_STRING": redis_url,
            "DEMO_MODEL_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
            **(worker_variables or {}),
        }
        started = []
        for n in range(workers):
            log = logs / f"worker{n}.log"
            started.append(_start(stack, [sys.executable, *worker_command], worker_env, log))
            _wait_for(lambda log=log: "is ready" in log.read_text(), started[-1], log)
        yield Deployment(f"http://localhost:{port}", redis_url, scheduler, started)


def _start(stack: ExitStack, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:  # a file, not a pipe: nobody reads it while the benchmark runs
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    stack.callback(_stop, process)
    return process


def _wait_for(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args} did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def wave(deployed: Deployment, sessions: int) -> Row:
    """K sessions at once, each one turn: start it (off the loop, as client.py does) and read it to the end."""
    scheduler = connect_client(deployed.scheduler_endpoint, load_settings({}).taskhub)
    agent = DurableAIAgentClient(scheduler).get_agent(AGENT_NAME)
    # One reader per session, each holding a connection while it blocks: a pool big enough for all of them.
    client = async_client(deployed.redis_url, decode_responses=True, socket_timeout=None, max_connections=sessions + 8)
    handler = RedisStreamResponseHandler(client, idle_timeout_seconds=120)
    # start_run's blocking gRPC call goes to the loop's default executor: one thread per session, not 6. A pool of
    # this wave's own: asyncio.run shuts the default executor down when the wave ends.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(sessions, thread_name_prefix="start-run"))

    async def turn(key: str) -> tuple[float | None, SessionRead]:
        asked = time.time()
        run = await start_run(agent, handler, key, MESSAGE)
        seen = await read_session(handler, key, run.correlation_id, run.cursor)
        return (seen.first_token_at - asked if seen.first_token_at else None), seen

    cpu_before, all_cpu_before, started = deployed.worker_cpu_seconds(), deployed.cpu_seconds(), time.time()
    results = await asyncio.gather(*(turn(new_key(f"proc{sessions}")) for _ in range(sessions)))
    wall, cpu = time.time() - started, deployed.worker_cpu_seconds() - cpu_before
    all_cpu = deployed.cpu_seconds() - all_cpu_before
    await handler.aclose()
    reads = [read for _, read in results]
    tokens = sum(len(read.sequences) for read in reads)
    ttft = summarize_ms([first for first, _ in results if first is not None])
    delivery = summarize_ms([latency for read in reads for latency in read.latencies])
    return {
        "workers": len(deployed.workers),
        "sessions": sessions,
        "completed_in_order": sum(read.complete() for read in reads),
        "ttft_p50_ms": ttft["p50_ms"],
        "ttft_p99_ms": ttft["p99_ms"],
        "delivery_p50_ms": delivery["p50_ms"],
        "delivery_p99_ms": delivery["p99_ms"],
        "aggregate_tokens_per_s": round(tokens / wall),
        "wall_s": round(wall, 2),
        "worker_cpu_us_per_token": round(cpu / max(tokens, 1) * 1e6),
        # Of the machine's cores over the wave, the share that workers, scheduler and readers used.
        "cpu_busy_pct": round(all_cpu / (wall * (os.cpu_count() or 1)) * 100),
    }


def measure(redis_url: str, worker_counts: Sequence[int], session_counts: Sequence[int]) -> list[Row]:
    """One deployment per worker count; one wave per session count, smallest first."""
    rows: list[Row] = []
    for workers in worker_counts:
        with deployment(redis_url, workers) as deployed:
            for sessions in session_counts:
                rows.append(asyncio.run(wave(deployed, sessions)))
                print(f"[bench]   {rows[-1]}", file=sys.stderr, flush=True)
    return rows
