"""PNG plots of the benchmark results (needs matplotlib: `uv run --group bench python -m benchmarks`).

Not a measurement by itself: `__main__` calls `write_plots` when matplotlib imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Write one PNG per section that ran; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, draw in (
        ("delivery_latency", _delivery_latency),
        ("write_throughput", _write_throughput),
        ("time_to_first_token", _time_to_first_token),
        ("scaling", _scaling),
        ("process_scaling", _process_scaling),
    ):
        if results.get(name):
            path = folder / f"benchmark_{name}.png"
            draw(results, path)
            written.append(path)
    return written


def _delivery_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    raw: dict[str, list[float]] = results["raw"]["delivery_latency_ms"]
    paces = sorted({label.split(" | ")[0] for label in raw})
    figure, axes = plt.subplots(1, len(paces), figsize=(6 * len(paces), 4), sharey=True)
    for axis, pace in zip(figure.axes if len(paces) > 1 else [axes], paces, strict=True):
        for label, samples in raw.items():
            if label.startswith(pace) and samples:
                ordered = sorted(max(sample, 0.01) for sample in samples)
                fractions = [(n + 1) / len(ordered) for n in range(len(ordered))]
                axis.step(ordered, fractions, where="post", label=label.split(" | ")[1])
        axis.set_xscale("log")
        axis.set_xlabel("delivery latency, ms (log)")
        axis.set_title(pace, fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    figure.axes[0].set_ylabel("fraction of tokens delivered")
    figure.axes[0].legend(fontsize=8, loc="lower right")
    _save(figure, path)


def _write_throughput(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = results["write_throughput"]
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    transports = list(dict.fromkeys(row["transport"] for row in rows))
    figure, axis = plt.subplots(figsize=(9, 4))
    height = 0.8 / len(transports)
    for offset, transport in enumerate(transports):
        values = {row["variant"]: row["median_chunks_per_s"] for row in rows if row["transport"] == transport}
        positions = [n + offset * height for n in range(len(variants))]
        axis.barh(positions, [values.get(v, 0) for v in variants], height=height, label=transport)
    axis.set_yticks([n + height * (len(transports) - 1) / 2 for n in range(len(variants))], variants, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("chunks persisted per second (log)")
    axis.legend()
    axis.grid(True, axis="x", which="both", alpha=0.3)
    _save(figure, path)


def _time_to_first_token(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = results["time_to_first_token"]
    figure, axis = plt.subplots(figsize=(9, 1 + 0.4 * len(rows)))
    labels = [f"{row['model'].removeprefix('demo model, ')}: {row['leg']}" for row in rows]
    axis.barh(labels, [row["p90_ms"] for row in rows], color="#c6dbef", label="p90")
    axis.barh(labels, [row["p50_ms"] for row in rows], color="#2171b5", label="p50")
    axis.invert_yaxis()
    axis.set_xlabel("ms")
    axis.tick_params(axis="y", labelsize=8)
    axis.legend()
    axis.grid(True, axis="x", alpha=0.3)
    _save(figure, path)


def _scaling(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = results["scaling"]
    figure, (latency, rate) = plt.subplots(1, 2, figsize=(11, 4))
    for layer in dict.fromkeys(row["layer"] for row in rows):
        mine = [row for row in rows if row["layer"] == layer]
        sessions = [row["sessions"] for row in mine]
        short = layer.split(" (")[0]
        (line,) = latency.plot(sessions, [row["p99_ms"] for row in mine], marker="o", label=f"{short} p99")
        p50 = [row["p50_ms"] for row in mine]
        latency.plot(sessions, p50, marker=".", linestyle="--", color=line.get_color(), label=f"{short} p50")
        rate.plot(sessions, [row["aggregate_tokens_per_s"] for row in mine], marker="o", label=short)
    sessions = sorted({row["sessions"] for row in rows})
    rate.plot(sessions, [50 * k for k in sessions], color="grey", linestyle=":", label="offered (50 tokens/s/session)")
    latency.axhline(50, color="red", linestyle=":", label="p99 target 50 ms")
    latency.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="delivery latency, ms")
    rate.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="aggregate tokens/s")
    for axis in (latency, rate):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    _save(figure, path)


def _process_scaling(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = results["process_scaling"]
    figure, (ttft, rate) = plt.subplots(1, 2, figsize=(11, 4))
    for workers in sorted({row["workers"] for row in rows}):
        mine = [row for row in rows if row["workers"] == workers]
        sessions = [row["sessions"] for row in mine]
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        (line,) = ttft.plot(sessions, [row["ttft_p99_ms"] for row in mine], marker="o", label=f"{label}: TTFT p99")
        p50 = [row["ttft_p50_ms"] for row in mine]
        ttft.plot(sessions, p50, marker=".", linestyle="--", color=line.get_color(), label=f"{label}: TTFT p50")
        rate.plot(sessions, [row["aggregate_tokens_per_s"] for row in mine], marker="o", label=label)
    sessions = sorted({row["sessions"] for row in rows})
    rate.plot(sessions, [50 * k for k in sessions], color="grey", linestyle=":", label="offered (50 tokens/s/session)")
    ttft.axhline(500, color="red", linestyle=":", label="TTFT p99 target 500 ms")
    ttft.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="time to first token, ms")
    rate.set(xscale="log", yscale="log", xlabel="concurrent sessions", ylabel="aggregate tokens/s")
    for axis in (ttft, rate):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
