"""The worker's CPU per token with telemetry off and on: an A/B on process_scaling's deployment.

One `worker.py` process (and `scheduler_server.py`), K concurrent sessions per wave, waves alternating
off, on, off, on... so that a machine whose load drifts penalises both sides alike. "On" is
ENABLE_INSTRUMENTATION=true ENABLE_CONSOLE_EXPORTERS=true (spans and metrics printed to the worker's log:
every span, Agent Framework's included, is serialized; an OTLP exporter batches them instead).

    uv run python -m benchmarks.telemetry_cost [--sessions 20] [--rounds 3]

It prints one line per wave, then the median worker CPU µs/token of each side and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

from benchmarks.process_scaling import deployment, wave
from support.ports import free_port
from support.private_redis import PrivateRedisServer

TELEMETRY_ON = {"ENABLE_INSTRUMENTATION": "true", "ENABLE_CONSOLE_EXPORTERS": "true"}


def measure(redis_url: str, sessions: int, rounds: int) -> dict[str, list[int]]:
    per_token: dict[str, list[int]] = {"off": [], "on": []}

    for _ in range(rounds):
        for side in ("off", "on"):
            saved = {name: os.environ.pop(name, None) for name in TELEMETRY_ON}
            os.environ.update(TELEMETRY_ON if side == "on" else {})
            try:
                with deployment(redis_url, workers=1) as deployed:
                    asyncio.run(wave(deployed, 2))  # warm-up: imports, first connections
                    row = asyncio.run(wave(deployed, sessions))
            finally:
                for name, value in saved.items():
                    os.environ.pop(name, None)
                    if value is not None:
                        os.environ[name] = value
            per_token[side].append(int(row["worker_cpu_us_per_token"]))  # type: ignore[arg-type]
            print(f"[bench] telemetry {side}: {row}", file=sys.stderr, flush=True)
    return per_token


def main() -> int:
    parser = argparse.ArgumentParser(description="Worker CPU per token, telemetry off vs on.")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with PrivateRedisServer(free_port()) as redis:
        per_token = measure(redis.url, args.sessions, args.rounds)
    off, on = statistics.median(per_token["off"]), statistics.median(per_token["on"])
    print(f"worker CPU µs/token, median of {args.rounds}: off {off:g}, on {on:g} ({(on - off) / off * 100:+.1f}%)")
    print(f"  off: {per_token['off']}  on: {per_token['on']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
