"""Run every benchmark, print the tables, write results.json and (with matplotlib) PNG plots.

    uv run python -m benchmarks --quick                              # CI smoke run, < 1 minute
    uv run --group bench python -m benchmarks --full --plots docs    # the published figures
    uv run --group bench python -m benchmarks --full --only process-scaling --plots docs   # section 6 alone (~1 min)
    uv run --group bench python -m benchmarks --full --only cluster          # section 4b alone (~1 min)
    uv run python -m benchmarks --full --only streaming-cost   # section 7: the streaming layer's CPU/token (~1 min)
    uv run python -m benchmarks --full --only fencing-cost     # section 7b, one-off: the fence's CPU/token (~1 min)
    uv run python -m benchmarks --full --only flusher-cost     # section 7c: the flusher's CPU/token in one process
    uv run python -m benchmarks --only fan-out                 # section 10: 100 / 1,000 / 10,000 SSE readers (~3 min)

A private redis-server is started on a free port (and, when the binary supports
TLS, a second one on a TLS port with a throwaway self-signed certificate), so
the figures do not depend on whatever Redis the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks import (
    delivery_latency,
    fan_out,
    flusher_cost,
    footprint,
    process_scaling,
    report,
    scaling,
    streaming_cost,
    time_to_first_token,
    write_throughput,
)
from benchmarks.agent_stack import agent_stack
from benchmarks.common import (
    FULL,
    QUICK,
    Mode,
    RedisTarget,
    Row,
    redis_server_binaries,
    redis_version,
    tls_redis_server,
)
from support.ports import free_port
from support.private_redis import PrivateRedisServer

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmarks for reliable, resumable streaming."
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small runs for CI (< 1 minute)")
    size.add_argument("--full", action="store_true", help="the full benchmark (default)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for results.json (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--plots", type=Path, default=None, help="folder for the PNG plots (default: --out)")
    parser.add_argument(
        "--only",
        choices=sorted(ONLY),
        help="run one section: process-scaling (6, the deployment shape), cluster (4b, on a local Redis Cluster), "
        "streaming-cost (7, worker CPU per token with and without streaming), fencing-cost (7b, fence vs plain XADD), "
        "flusher-cost (7c, the flusher's CPU per token in one process) "
        "or fan-out (10, readers per web process through the stream hub)",
    )
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform()}


@contextlib.contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    print(f"[bench] {label} …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    timings[label] = round(time.perf_counter() - started, 1)


def start_redis(stack: ExitStack, results: dict[str, Any]) -> tuple[RedisTarget, RedisTarget | None]:
    """The TLS server first (it finds a TLS-capable binary), then a plaintext one from the same binary."""
    binaries = redis_server_binaries()
    tls: RedisTarget | None = None
    try:
        tls = stack.enter_context(tls_redis_server(binaries))
    except (RuntimeError, ImportError, OSError) as error:
        results["notes"].append(f"TLS not measured: no redis-server here accepts TLS options ({error})")
    server = PrivateRedisServer(free_port())
    if tls is not None:
        server.binary = tls.binary  # compare plain and TLS on the same server build
    stack.enter_context(server)
    plain = RedisTarget("plain", server.url, binary=server.binary)
    results["redis"] = {"version": redis_version(server.url), "binary": server.binary, "tls": tls is not None}
    if tls is not None:
        results["redis"]["tls_version"] = redis_version_tls(tls)
    return plain, tls


def redis_version_tls(target: RedisTarget) -> str:
    import redis

    client = redis.Redis.from_url(target.url, ssl_ca_certs=target.ca_file)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def run_all(mode: Mode, results: dict[str, Any]) -> None:
    timings: dict[str, float] = results["seconds_per_section"]
    with ExitStack() as stack:
        plain, tls = start_redis(stack, results)
        with timed("1. delivery latency", timings):
            rows, raw = asyncio.run(delivery_latency.measure(plain, mode))
            results["delivery_latency"] = rows
            results["raw"]["delivery_latency_ms"] = {k: [round(v * 1000, 3) for v in s] for k, s in raw.items()}
        with timed("2. write throughput", timings):
            results["write_throughput"] = asyncio.run(write_throughput.measure(plain, mode))
            if tls is not None:
                results["write_throughput"] += asyncio.run(write_throughput.measure(tls, mode))
        with timed("3. time to first token", timings):
            results["time_to_first_token"] = []
            for delay_ms, repetitions in ((0, mode.ttft_repetitions), (20, mode.paced_ttft_repetitions)):
                with agent_stack(plain.url, token_delay_ms=delay_ms) as agents:
                    rows = asyncio.run(time_to_first_token.measure(agents, repetitions, delay_ms))
                results["time_to_first_token"] += rows
        run_scaling(plain, mode, results)
        with timed("5. footprint", timings):
            results["footprint"] = asyncio.run(footprint.measure(plain))
        run_streaming_cost(plain, mode, results)
        run_flusher_cost(plain, mode, results)


def run_process_scaling_only(mode: Mode, results: dict[str, Any]) -> None:
    with ExitStack() as stack:
        plain, _ = start_redis(stack, results)
        with timed("6. process-separated scaling", results["seconds_per_section"]):
            results["process_scaling"] = process_scaling.measure(plain.url, mode.process_workers, mode.process_sessions)


def run_fan_out_only(mode: Mode, results: dict[str, Any]) -> None:
    """Section 10 (not in --quick: each case starts web.py, and the big one opens 10,000 sockets)."""
    with ExitStack() as stack:
        plain, _ = start_redis(stack, results)
        with timed("10. fan-out", results["seconds_per_section"]):
            results["fan_out"] = fan_out.measure(plain.url)
            results["run_starts"] = [fan_out.measure_run_starts(plain.url)]


def run_streaming_cost(plain: RedisTarget, mode: Mode, results: dict[str, Any]) -> None:
    with timed("7. streaming cost per token", results["seconds_per_section"]):
        rows, waves = streaming_cost.measure(
            plain.url, streaming_cost.STREAMING_LAYER, mode.cost_pairs, mode.cost_sessions, mode.cost_warmup_sessions
        )
    results["streaming_cost"], results["raw"]["streaming_cost_waves"] = rows, waves
    results["streaming_layer_us_per_token"] = rows[-1]["worker_cpu_us_per_token"]  # worker.py − markers only


def run_streaming_cost_only(mode: Mode, results: dict[str, Any]) -> None:
    with ExitStack() as stack:
        plain, _ = start_redis(stack, results)
        run_streaming_cost(plain, mode, results)


def run_flusher_cost(plain: RedisTarget, mode: Mode, results: dict[str, Any]) -> None:
    # --quick: one short round of a few runs; --full: three rounds of 100 runs for 8 s.
    seconds, rounds = (8.0, 3) if mode.name == FULL.name else (1.0, 1)
    with timed("7c. flusher cost per token", results["seconds_per_section"]):
        results["flusher_cost"] = flusher_cost.measure(plain.url, mode.cost_sessions, seconds, rounds)


def run_flusher_cost_only(mode: Mode, results: dict[str, Any]) -> None:
    with ExitStack() as stack:
        plain, _ = start_redis(stack, results)
        run_flusher_cost(plain, mode, results)


def run_fencing_cost_only(mode: Mode, results: dict[str, Any]) -> None:
    """A one-off (not in --full): worker.py's fenced write against a plain pipelined XADD."""
    with ExitStack() as stack:
        plain, _ = start_redis(stack, results)
        with timed("7b. fencing cost per token", results["seconds_per_section"]):
            rows, waves = streaming_cost.measure(
                plain.url, streaming_cost.FENCING, mode.cost_pairs, mode.cost_sessions, mode.cost_warmup_sessions
            )
    results["fencing_cost"], results["raw"]["fencing_cost_waves"] = rows, waves
    results["fencing_us_per_token"] = rows[-1]["worker_cpu_us_per_token"]  # fenced − plain XADD


def run_cluster_only(mode: Mode, results: dict[str, Any]) -> None:
    with ExitStack() as stack:
        start_redis(stack, results)  # not measured: the report names the Redis build
        with timed("4b. streaming layer on a Redis Cluster", results["seconds_per_section"]):
            results["scaling"] = run_on_cluster(mode, results)


def run_scaling(plain: RedisTarget, mode: Mode, results: dict[str, Any]) -> None:
    with timed("4. scaling", results["seconds_per_section"]):
        layer = [asyncio.run(scaling.streaming_layer(plain.url, k, mode.stream_tokens)) for k in mode.stream_sessions]
        results["scaling"] = layer
        if mode.agent_sessions:  # in-process end to end; section 6 measures the deployment shape
            with agent_stack(plain.url, token_delay_ms=20) as agents:  # WORKER_MAX_CONCURRENT_RUNS' default
                results["scaling"] += [asyncio.run(scaling.end_to_end(agents, k)) for k in mode.agent_sessions]
    if mode.cluster_sessions:
        with timed("4b. streaming layer on a Redis Cluster", results["seconds_per_section"]):
            results["scaling"] += run_on_cluster(mode, results)
    with timed("6. process-separated scaling", results["seconds_per_section"]):
        results["process_scaling"] = process_scaling.measure(plain.url, mode.process_workers, mode.process_sessions)


def run_on_cluster(mode: Mode, results: dict[str, Any]) -> list[Row]:
    """The streaming-layer rows again, on three masters started here (needs redis-server 7 and redis-cli)."""
    from tests.support.redis_cluster import cluster_binaries, local_redis_cluster  # the tests' own launcher

    if cluster_binaries() is None:
        results["notes"].append("Redis Cluster not measured: no redis-server and redis-cli pair on this machine")
        return []
    rows: list[Row] = []
    with local_redis_cluster() as cluster:
        for sessions in mode.cluster_sessions:
            row = asyncio.run(scaling.streaming_layer(cluster.url, sessions, mode.stream_tokens))
            rows.append({**row, "layer": "streaming layer on a 3-master Redis Cluster (separate writer process)"})
    return rows


ONLY: dict[str, Callable[[Mode, dict[str, Any]], None]] = {
    "process-scaling": run_process_scaling_only,
    "fan-out": run_fan_out_only,
    "cluster": run_cluster_only,
    "streaming-cost": run_streaming_cost_only,
    "fencing-cost": run_fencing_cost_only,
    "flusher-cost": run_flusher_cost_only,
}


def write_outputs(results: dict[str, Any], out: Path, plots: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"[bench] wrote {path}", file=sys.stderr)
    try:
        from benchmarks.plots import write_plots

        for png in write_plots(results, plots):
            print(f"[bench] wrote {png}", file=sys.stderr)
    except ImportError:
        print("[bench] no plots: matplotlib is not installed (uv run --group bench ...)", file=sys.stderr)


def main(argv: list[str] | None = None, run: Callable[[Mode, dict[str, Any]], None] = run_all) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    mode = QUICK if args.quick else FULL
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {"mode": mode.name, "command": command.strip(), "machine": machine()}
    results.update({"notes": [], "raw": {}, "seconds_per_section": {}, "load_average_before": os.getloadavg()})
    started = time.perf_counter()
    (ONLY[args.only] if args.only else run)(mode, results)
    results["seconds_total"] = round(time.perf_counter() - started, 1)
    results["load_average_after"] = os.getloadavg()
    results["targets"] = report.check_targets(results)
    print(f"\nMachine: {results['machine']}\nRedis: {results['redis']}")
    print(
        f"Load average (1/5/15 min) before: {results['load_average_before']}, after: {results['load_average_after']}\n"
    )
    print(report.render(results))
    print(f"\n{mode.name} run: {results['seconds_total']} s ({results['seconds_per_section']})")
    write_outputs(results, args.out, args.plots or args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
