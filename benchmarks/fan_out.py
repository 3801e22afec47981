"""Fan-out: many SSE readers per run on ONE web process, through the stream hub (webapp/stream_hub.py).

Process-separated, like section 6: `web.py` (its stream hub, its in-process worker and embedded
scheduler) in one process, the readers in two others (raw asyncio sockets, so the reader side
stays cheap), Redis in its own. For each case:

1. the readers connect first, from cursor 0-0 of their session, and wait (most readers of the big
   case tail quiet sessions that no run ever writes);
2. then one `POST /run` per active session starts the runs (the demo model, 100 ms per token);
3. every active reader reads its run to the `done` event; then the quiet ones disconnect.

Reported: readers that completed, with the same text as every other reader of their run; readers
refused (503); delivery p50/p99 (an entry's Redis id is its XADD time in ms; read time minus that);
the most Redis connections the whole stack held (CLIENT LIST, sampled every 0.5 s, the sampler's own
excluded); the web process's CPU seconds over the wave and its peak RSS, and RSS per reader
(peak minus the RSS before the readers came, over the readers).

Then, on a fresh web.py, RUN_STARTS POST /run at once: each one's time to its 202 (p50/p99).

    uv run python -m benchmarks --only fan-out          # 100, 1,000 and 10,000 readers, then the starts (~2 minutes)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from benchmarks.common import Row, new_key, summarize_ms
from redis_stream_response_handler import DONE, START, TOKEN, RedisStreamResponseHandler, entry_fields
from support.ports import free_port, port_answers

ROOT = Path(__file__).resolve().parent.parent
TOKEN_DELAY_MS = 100
READER_PROCESSES = 2
RUN_MESSAGE = "Plan a 2-day trip to Oslo"


@dataclass(frozen=True)
class Case:
    runs: int  # active sessions, one run each
    readers_per_run: int
    quiet_sessions: int = 0  # sessions nobody writes, tailed by...
    readers_per_quiet_session: int = 0
    agent_runs: bool = True  # POST /run (web.py's in-process worker writes); False: a writer process does

    @property
    def readers(self) -> int:
        return self.runs * self.readers_per_run + self.quiet_sessions * self.readers_per_quiet_session


WRITTEN_TOKENS = 60  # a writer-process run: 6 s of tokens at 100 ms
CASES = (
    Case(5, 20),
    Case(50, 20),  # issue 20's "done when": 50 runs x 20 readers of real runs
    Case(50, 20, agent_runs=False),  # the same fan-out, web.py's worker idle: the hub's cost alone
    Case(50, 20, quiet_sessions=450, readers_per_quiet_session=20, agent_runs=False),  # 10,000 readers
)


RUN_STARTS = 100  # POST /run at once, on a fresh web.py


def measure_run_starts(redis_url: str, requests: int = RUN_STARTS) -> Row:
    """`requests` POST /run at once on one web.py: how long each takes to answer 202 (issue 20: a start pool)."""
    with web_process(redis_url) as web:
        return asyncio.run(_start_runs(web, requests))


async def _start_runs(web: Web, requests: int) -> Row:
    limits = httpx.Limits(max_connections=None)  # every request on a connection of its own, all at once
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}", timeout=60, limits=limits) as http:
        await http.post("/agents/TravelPlanner/run", json={"message": RUN_MESSAGE})  # warm: the first gRPC channel

        async def start() -> tuple[int, float]:
            began = time.perf_counter()
            response = await http.post("/agents/TravelPlanner/run", json={"message": RUN_MESSAGE})
            return response.status_code, time.perf_counter() - began

        answers = await asyncio.gather(*(start() for _ in range(requests)))
    took = summarize_ms([seconds for _, seconds in answers])
    return {
        "requests": requests,
        "accepted_202": sum(status == 202 for status, _ in answers),
        "p50_ms": took["p50_ms"],
        "p99_ms": took["p99_ms"],
        "max_ms": took["max_ms"],
    }


def measure(redis_url: str, cases: Sequence[Case] = CASES) -> list[Row]:
    rows = []
    for case in cases:
        with web_process(redis_url) as web:
            rows.append(asyncio.run(wave(web, redis_url, case)))
        print(f"[bench]   {rows[-1]}", file=sys.stderr, flush=True)
    return rows


@dataclass
class Web:
    process: subprocess.Popen[bytes]
    port: int

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def web_process(redis_url: str) -> Iterator[Web]:
    """`web.py` with default settings, but the demo model's pace and an idle timeout the quiet readers outlast."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_CONNECTION_STRING": redis_url,
        "LOCAL_SCHEDULER_PORT": str(free_port()),
        "DEMO_MODEL_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
        "STREAM_IDLE_TIMEOUT_SECONDS": "300",
        "PYTHONUNBUFFERED": "1",
    }
    with ExitStack() as stack:
        log = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fan-out-"))) / "web.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "web.py", "--port", str(port)], cwd=ROOT, env=env, stdout=output, stderr=output
            )
        try:
            deadline = time.monotonic() + 60
            while not port_answers("127.0.0.1", port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"web.py did not start: {log.read_text()[-500:]}")
                time.sleep(0.1)
            yield Web(process, port)
        finally:
            process.terminate()
            process.wait(timeout=30)


class Sampler:
    """Redis connections and the web process's RSS, every 0.5 s on a thread of its own, keeping the peaks."""

    def __init__(self, redis_url: str, web: Web) -> None:
        self.redis, self.web = redis.Redis.from_url(redis_url), web
        self.connections = self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.redis.close()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.connections = max(self.connections, len(self.redis.client_list()) - 1)  # not the sampler's own
            self.rss = max(self.rss, self.web.rss_bytes())


async def wave(web: Web, redis_url: str, case: Case) -> Row:
    active = [new_key("fan-out") for _ in range(case.runs)]
    quiet = [new_key("fan-out-quiet") for _ in range(case.quiet_sessions)]
    plan = [(s, True) for s in active for _ in range(case.readers_per_run)]
    plan += [(s, False) for s in quiet for _ in range(case.readers_per_quiet_session)]
    rss_before = web.rss_bytes()
    with Sampler(redis_url, web) as sampler:
        readers = [_start_readers(web.port, plan[n::READER_PROCESSES]) for n in range(READER_PROCESSES)]
        for reader in readers:  # each says "ready" once all its readers are streaming (or were refused)
            await asyncio.to_thread(reader.stdout.readline)  # type: ignore[union-attr]
        started, cpu_before = time.time(), web.cpu_seconds()  # the wave, not the readers connecting
        if case.agent_runs:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}", timeout=60) as http:
                posts = [
                    http.post("/agents/TravelPlanner/run", json={"message": RUN_MESSAGE, "session": s}) for s in active
                ]
                runs_started = sum(response.status_code == 202 for response in await asyncio.gather(*posts))
        else:
            runs_started = await asyncio.to_thread(_write_runs, redis_url, active)
        results = [json.loads(await asyncio.to_thread(_rest_of_output, reader)) for reader in readers]
        wall = time.time() - started
    return _row(case, results, runs_started, wall, sampler, web.cpu_seconds() - cpu_before, rss_before)


def _write_runs(redis_url: str, sessions: list[str]) -> int:
    """One run per session, written by a process of its own at 100 ms per token (as a worker would)."""
    command = [sys.executable, "-m", "benchmarks.fan_out", "--write", redis_url]
    subprocess.run(command, cwd=ROOT, input=json.dumps(sessions), text=True, check=True)
    return len(sessions)


def _row(
    case: Case, results: list[dict[str, Any]], runs_started: int, wall: float, sampler: Sampler, cpu: float,
    rss_before: int,
) -> Row:  # fmt: skip
    reads = [read for result in results for read in result["reads"]]
    texts: dict[str, set[str]] = {}
    for read in reads:
        if read["active"] and read["done"]:
            texts.setdefault(read["session"], set()).add(read["text"])
    delivery = summarize_ms([latency for read in reads for latency in read["latencies"]])
    return {
        "readers": case.readers,
        "runs": case.runs,
        "quiet_readers": case.quiet_sessions * case.readers_per_quiet_session,
        "written_by": "web.py's worker (POST /run)" if case.agent_runs else "a writer process",
        "runs_started": runs_started,
        "completed": sum(read["done"] for read in reads if read["active"]),
        "identical_text_per_run": all(len(variants) == 1 for variants in texts.values()) and len(texts) == case.runs,
        "refused_503": sum(read["status"] == 503 for read in reads),
        "delivery_p50_ms": delivery["p50_ms"],
        "delivery_p99_ms": delivery["p99_ms"],
        "redis_connections_max": sampler.connections,
        "web_cpu_s": round(cpu, 1),
        "web_cpu_pct_of_wave": round(cpu / wall * 100),
        "web_rss_peak_mb": round(sampler.rss / 2**20),
        "web_rss_kb_per_reader": round((sampler.rss - rss_before) / 1024 / max(case.readers, 1), 1),
        "wall_s": round(wall, 1),
    }


def _rest_of_output(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    output = process.stdout.read()
    process.wait()
    return output


def _start_readers(port: int, plan: list[tuple[str, bool]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.fan_out", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(plan))
    process.stdin.close()
    return process


# The reader process: `python -m benchmarks.fan_out PORT`, the plan ([session, active], ...) on stdin.


@dataclass
class Read:
    session: str
    active: bool
    status: int = 0
    text: str = ""
    done: bool = False
    latencies: list[float] | None = None


async def _read(port: int, read: Read, streaming: asyncio.Event, quiet_done: asyncio.Event) -> Read:
    """One SSE reader on a raw socket: what a browser's EventSource does, without a browser's cost."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    path = f"/agents/TravelPlanner/stream/{read.session}?cursor=0-0"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
    read.status = int((await reader.readline()).split()[1])
    read.latencies = []
    try:
        if read.status != 200:
            return read
        await _events(reader, read, streaming, quiet_done)
    finally:
        streaming.set()
        writer.close()
    return read


async def _events(
    reader: asyncio.StreamReader, read: Read, streaming: asyncio.Event, quiet_done: asyncio.Event
) -> None:
    """Whatever arrived, in one read, split into events: line by line, the readers cost as much CPU as the web app.

    The body is chunked (HTTP/1.1): a chunk's size line lands among an event's lines and is ignored, as the
    status line and headers are. Every event that came in one read is timed at that read.
    """
    pending = b""
    while True:
        if not read.active and streaming.is_set():  # a quiet reader: streaming, now wait for the wave's end
            await quiet_done.wait()
            return
        arrived = await reader.read(2**16)
        if not arrived:
            return
        now = time.time()
        *blocks, pending = (pending + arrived).split(b"\r\n\r\n")
        for block in blocks:
            if _event(block.decode(), read, now, streaming):
                return


def _event(block: str, read: Read, now: float, streaming: asyncio.Event) -> bool:
    """Take one event's lines into `read`; True once the run ended (done, error, cancelled)."""
    event, entry_id, data = "message", "", []
    for line in block.split("\r\n"):
        if line.startswith(": streaming") or line.startswith("retry:"):
            streaming.set()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            entry_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if not data:
        return False
    if event == "message":
        read.text += "\n".join(data)
        assert read.latencies is not None
        read.latencies.append(now - int(entry_id.split("-")[0]) / 1000)
        return False
    if event in ("done", "error", "cancelled"):
        read.done = event == "done"
        return True
    return False


async def _reader_main(port: int, plan: list[tuple[str, bool]]) -> None:
    quiet_done = asyncio.Event()
    streaming = [asyncio.Event() for _ in plan]
    tasks = []
    for (session, active), ready in zip(plan, streaming, strict=True):
        tasks.append(asyncio.ensure_future(_read(port, Read(session, active), ready, quiet_done)))
        if len(tasks) % 200 == 0:
            await asyncio.sleep(0)  # let connections complete as they are opened
    for ready in streaming:
        await ready.wait()
    print("ready", flush=True)
    active_tasks = [task for task, (_, active) in zip(tasks, plan, strict=True) if active]
    await asyncio.gather(*active_tasks)
    quiet_done.set()
    reads = await asyncio.gather(*tasks)
    print(json.dumps({"reads": [read.__dict__ for read in reads]}), flush=True)


async def _writer_main(redis_url: str, sessions: list[str]) -> None:
    """Every session's run in lockstep: one pipelined write of all their next tokens every 100 ms."""
    async with RedisStreamResponseHandler.from_url(redis_url, ttl_seconds=600) as writer:
        await writer.write_streams([(s, [entry_fields(START, "run-1", 0, attempt="a1")]) for s in sessions])
        for sequence in range(WRITTEN_TOKENS):
            await asyncio.sleep(TOKEN_DELAY_MS / 1000)
            token = entry_fields(TOKEN, "run-1", sequence, f"word{sequence} ", attempt="a1")
            await writer.write_streams([(session, [token]) for session in sessions])
        done = entry_fields(DONE, "run-1", WRITTEN_TOKENS, chunks=WRITTEN_TOKENS, attempt="a1")
        await writer.write_streams([(session, [done]) for session in sessions])


if __name__ == "__main__":
    if sys.argv[1] == "--write":
        asyncio.run(_writer_main(sys.argv[2], json.load(sys.stdin)))
    else:
        asyncio.run(_reader_main(int(sys.argv[1]), [tuple(item) for item in json.load(sys.stdin)]))  # type: ignore[misc]
