"""Turns the benchmark results into tables (markdown, also printed to the terminal) and target checks.

Not a measurement by itself: `__main__` calls it after the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.common import Row

# Sections 7 and 7b: one row per variant (its waves' median, min and max), then the difference per wave pair.
_COST_COLUMNS = [
    ("variant", "variant"),
    ("waves", "waves"),
    ("sessions", "sessions/wave"),
    ("model_tokens_per_run", "model tokens/run"),
    ("tokens_read_per_run", "tokens read/run"),
    ("worker_cpu_us_per_token", "worker CPU µs/token (median)"),
    ("worker_cpu_us_per_token_min", "min"),
    ("worker_cpu_us_per_token_max", "max"),
    ("redis_cpu_us_per_token", "Redis CPU µs/token"),
    ("tokens_per_script_call", "tokens per write (script call)"),
    ("wall_s", "wall s"),
]

# section -> (title, [(column key, header)])
COLUMNS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "delivery_latency": (
        "1. Delivery latency (token produced → reader yields it), ms",
        [
            ("pace", "pace"),
            ("variant", "variant"),
            ("n", "tokens"),
            ("p50_ms", "p50"),
            ("p90_ms", "p90"),
            ("p99_ms", "p99"),
            ("max_ms", "max"),
        ],
    ),
    "write_throughput": (
        "2. Write throughput, no pacing (median of repetitions), chunks/s",
        [
            ("transport", "transport"),
            ("variant", "variant"),
            ("chunks", "chunks/rep"),
            ("repetitions", "reps"),
            ("median_chunks_per_s", "median"),
            ("min_chunks_per_s", "min"),
            ("max_chunks_per_s", "max"),
            ("x_naive", "× naive"),
        ],
    ),
    "time_to_first_token": (
        "3. Time to first token (fire-and-forget start_run → first token at the client), ms",
        [
            ("model", "model"),
            ("leg", "leg"),
            ("n", "runs"),
            ("p50_ms", "p50"),
            ("p90_ms", "p90"),
            ("p99_ms", "p99"),
            ("max_ms", "max"),
        ],
    ),
    "scaling": (
        "4. Scaling: concurrent sessions at LLM pace (20 ms/token)",
        [
            ("layer", "layer"),
            ("sessions", "sessions"),
            ("completed_in_order", "complete, in order"),
            ("tokens_per_session", "tokens/session"),
            ("aggregate_tokens_per_s", "tokens/s"),
            ("wall_s", "wall s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
            ("peak_rss_mib", "peak RSS MiB"),
            ("writer_cpu_us_per_token", "writer CPU µs/token"),
            ("round_trips", "round trips"),
            ("memory_usage_per_stream_bytes", "MEMORY USAGE/stream B"),
        ],
    ),
    "process_scaling": (
        "6. Process-separated scaling: scheduler, N workers and the readers in separate processes, 20 ms/token",
        [
            ("workers", "workers"),
            ("sessions", "sessions"),
            ("completed_in_order", "complete, in order"),
            ("ttft_p50_ms", "TTFT p50 ms"),
            ("ttft_p99_ms", "TTFT p99 ms"),
            ("delivery_p50_ms", "delivery p50 ms"),
            ("delivery_p99_ms", "delivery p99 ms"),
            ("aggregate_tokens_per_s", "tokens/s"),
            ("wall_s", "wall s"),
            ("worker_cpu_us_per_token", "worker CPU µs/token"),
            ("cpu_busy_pct", "CPU busy %"),
        ],
    ),
    "fan_out": (
        "10. Fan-out: readers per web process through the stream hub (web.py, readers, Redis: separate processes)",
        [
            ("readers", "readers"),
            ("runs", "live runs"),
            ("written_by", "written by"),
            ("quiet_readers", "of them on quiet streams"),
            ("completed", "active completed"),
            ("identical_text_per_run", "same text per run"),
            ("refused_503", "refused (503)"),
            ("delivery_p50_ms", "delivery p50 ms"),
            ("delivery_p99_ms", "delivery p99 ms"),
            ("redis_connections_max", "Redis connections (max)"),
            ("web_cpu_pct_of_wave", "web CPU % of a core"),
            ("web_rss_peak_mb", "web RSS peak MB"),
            ("web_rss_kb_per_reader", "web RSS KB/reader"),
            ("wall_s", "wall s"),
        ],
    ),
    "run_starts": (
        "10b. Starting runs: concurrent POST /run on one web.py (its worker in the same process)",
        [
            ("requests", "requests at once"),
            ("accepted_202", "accepted (202)"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("max_ms", "max ms"),
        ],
    ),
    "footprint": (
        "5. Redis footprint (MEMORY USAGE … SAMPLES 0) and its bounds",
        [
            ("check", "check"),
            ("entries", "entries"),
            ("memory_usage_bytes", "bytes"),
            ("bytes_per_entry", "B/entry"),
            ("ttl_s", "TTL s"),
            ("bounded", "bounded"),
        ],
    ),
    "streaming_cost": (
        "7. Streaming cost per token: worker CPU with and without streaming the tokens (1 worker, 20 ms/token)",
        _COST_COLUMNS,
    ),
    "fencing_cost": (
        "7b. Fencing cost per token: the fenced Lua script against a plain pipelined XADD (1 worker, 20 ms/token)",
        _COST_COLUMNS,
    ),
    "flusher_cost": (
        "7c. Flusher cost per token in one process (runs at 20 ms/token, 80 µs of agent work per token)",
        [
            ("sessions", "runs"),
            ("tokens", "tokens"),
            ("tokens_per_write", "tokens per write"),
            ("flusher_us_per_token", "flusher thread CPU µs/token"),
            ("agents_loop_us_per_token", "agents' loop CPU µs/token (beyond the agent work)"),
        ],
    ),
}


def markdown_table(rows: Sequence[Row], columns: Sequence[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(header for _, header in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """Every section that ran, as markdown tables, followed by the target checks."""
    parts: list[str] = []
    for section, (title, columns) in COLUMNS.items():
        rows = results.get(section)
        if rows:
            parts.append(f"### {title}\n\n{markdown_table(rows, columns)}")
    for note in results.get("notes", []):
        parts.append(f"Note: {note}")
    targets = results.get("targets", [])
    if targets:
        columns = [("target", "target"), ("measured", "measured"), ("met", "met")]
        parts.append("### Targets\n\n" + markdown_table(targets, columns))
    return "\n\n".join(parts)


# ---- targets -----------------------------------------------------------------


def _find(rows: Sequence[Row], **match: Any) -> Row | None:
    for row in rows:
        if all(str(row.get(key, "")).startswith(str(value)) for key, value in match.items()):
            return row
    return None


def check_targets(results: dict[str, Any]) -> list[Row]:
    checks: list[Row] = []
    checks += _latency_targets(results.get("delivery_latency", []))
    checks += _throughput_targets(results.get("write_throughput", []))
    for ttft in results.get("time_to_first_token", []):
        if ttft["leg"].startswith("TTFT total"):
            measured = f"{ttft['p50_ms']:.1f} ms"
            checks.append(_check(f"TTFT p50 < 50 ms ({ttft['model']})", measured, ttft["p50_ms"] < 50))
    for row in results.get("scaling", []):
        if row["sessions"] == 100:
            ok = row["completed_in_order"] == 100 and row["p99_ms"] < 50
            measured = f"{row['completed_in_order']}/100 complete, p99 {row['p99_ms']:.1f} ms"
            checks.append(_check(f"100 sessions complete, in order, p99 < 50 ms ({row['layer']})", measured, ok))
    checks += _process_targets(results.get("process_scaling", []))
    return checks


def _process_targets(rows: Sequence[Row]) -> list[Row]:
    """Issue 13's bar: one worker, default settings, 100 sessions; and what a second worker adds."""
    checks: list[Row] = []
    one = {row["sessions"]: row for row in rows if row["workers"] == 1}
    two = {row["sessions"]: row for row in rows if row["workers"] == 2}
    if 100 in one:
        row = one[100]
        ok = row["completed_in_order"] == 100 and row["ttft_p99_ms"] < 500 and row["delivery_p99_ms"] < 50
        latencies = f"TTFT p99 {row['ttft_p99_ms']:.0f} ms, delivery p99 {row['delivery_p99_ms']:.0f} ms"
        measured = f"{row['completed_in_order']}/100, {latencies}"
        checks.append(_check("1 worker, 100 sessions: complete, TTFT p99 < 500 ms, delivery p99 < 50 ms", measured, ok))
    if one and two:
        best_one = max(row["aggregate_tokens_per_s"] for row in one.values())
        best_two = max(row["aggregate_tokens_per_s"] for row in two.values())
        ratio = best_two / best_one
        checks.append(_check("2 workers ≥ 1.6× the tokens/s of 1 (best wave each)", f"{ratio:.2f}×", ratio >= 1.6))
    return checks


def _latency_targets(rows: Sequence[Row]) -> list[Row]:
    checks: list[Row] = []
    for pace in sorted({row["pace"] for row in rows}):
        ours, naive, limit = (_find(rows, pace=pace, variant=v) for v in ("ours", "naive", "limit"))
        if not (ours and naive and limit):
            continue
        short = pace.split(" (")[0]
        ratio = naive["p50_ms"] / ours["p50_ms"]
        checks.append(_check(f"delivery p50 ≥100× lower than 1 s polling ({short})", f"{ratio:,.0f}×", ratio >= 100))
        gap = ours["p50_ms"] - limit["p50_ms"]
        checks.append(_check(f"delivery p50 within 2 ms of bare XREAD BLOCK ({short})", f"{gap:+.2f} ms", gap <= 2))
    return checks


def _throughput_targets(rows: Sequence[Row]) -> list[Row]:
    checks: list[Row] = []
    for transport, needed in (("plain", 20), ("tls", 50)):
        ours = _find(rows, transport=transport, variant="ours: RunStreamWriter, append all")
        yielding = _find(rows, transport=transport, variant="ours: RunStreamWriter, yield")
        if ours and yielding:
            measured = f"{ours['x_naive']:,.1f}× (yielding per token: {yielding['x_naive']:,.1f}×)"
            checks.append(
                _check(f"write throughput ≥{needed}× conn-per-chunk ({transport})", measured, ours["x_naive"] >= needed)
            )
    return checks


def _check(target: str, measured: str, met: bool) -> Row:
    return {"target": target, "measured": measured, "met": met}
