"""The client's `[tool]` status lines: one line per tool call, on stderr, so stdout stays the answer alone.

    [tool] get_weather_forecast(destination="Tokyo", days=3) → Weather forecast for Tokyo: Day 1: Sunny, 22°C; …
    [tool] get_local_events(destination="Tokyo") failed: Error: Function failed.

A call's line is printed when its result arrives (the call and its result on one line); until
then a terminal shows which tools are running on the transient status line. A call the run never
answered (it was cancelled, or failed, mid-call) is printed at the end with "(no result)".
"""

from __future__ import annotations

import itertools
import json

from redis_stream_response_handler import StreamChunk

SUMMARY_CHARACTERS = 80


def call_text(name: str | None, arguments: str | None) -> str:
    """`name(key=value, ...)` from a tool_call entry's JSON arguments."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = {"raw": arguments}
    if isinstance(parsed, dict) and set(parsed) == {"raw"}:
        shown = _short(str(parsed["raw"]))  # arguments that were not a JSON object, as the model sent them
    elif isinstance(parsed, dict):
        shown = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in parsed.items())
    else:
        shown = _short(str(parsed))
    return f"{name or '(unnamed tool)'}({_short(shown)})"


def result_summary(result: str | None) -> str:
    """A result on one line, shortened: "Weather forecast for Tokyo: Day 1: Sunny, 22°C; Day 2: …"."""
    lines = [line.strip() for line in (result or "").splitlines() if line.strip()]
    if not lines:
        return "(empty)"
    joined = lines[0]
    for previous, line in itertools.pairwise(lines):
        joined += (" " if previous.endswith(":") else "; ") + line
    return _short(joined)


def tool_line(call: str, result: str | None, error: str | None = None) -> str:
    """One call and its result (or its failure) on one line; cli/history.py words the record's calls so too."""
    if error is not None:
        return f"[tool] {call} failed: {_short(error)}"
    return f"[tool] {call} → {result_summary(result)}"


def _short(text: str) -> str:
    return text if len(text) <= SUMMARY_CHARACTERS else text[: SUMMARY_CHARACTERS - 1] + "…"


class ToolStatus:
    """Pairs each run's tool calls with their results and words the status lines."""

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}  # call id -> "name(arguments)", in call order

    def called(self, chunk: StreamChunk) -> None:
        self.pending[chunk.call_id or ""] = call_text(chunk.name, chunk.arguments)

    def returned(self, chunk: StreamChunk) -> str:
        """The status line of the call this result answers."""
        call = self.pending.pop(chunk.call_id or "", None) or f"{chunk.name or '(unknown tool)'}(…)"
        return tool_line(call, chunk.result, chunk.error)

    def running(self) -> str | None:
        """The transient line while calls are running, or None."""
        if not self.pending:
            return None
        return f"(running {', '.join(self.pending.values())}…)"

    def unanswered(self) -> list[str]:
        """Lines for the calls that never got a result, and forget them."""
        lines = [f"[tool] {call} … (no result)" for call in self.pending.values()]
        self.pending.clear()
        return lines
