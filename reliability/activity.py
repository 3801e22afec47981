"""Tool activity in the stream: what the agent does between its words, as entries a reader can show.

The callback receives every `AgentResponseUpdate` of a run. Besides text, its `contents` carry the
model's function calls, the tools' results and the model's token usage (agent-framework-core
1.23.0: content types `function_call`, `function_result`, `usage`). `RunActivity` turns one run's
updates into `token`, `tool_call` and `tool_result` entries, in the order they happened (the entry
kinds and fields: redis_stream_response_handler.py), and adds up the run's usage for the done marker.
A tool result's `name` is its call's (so absent when the call was never seen); results and arguments
are cut to RESULT_LIMIT characters, with a marker saying so. Whatever a model or tool hands over (arguments
that are not JSON, values JSON cannot hold, a result of megabytes, text that is not valid UTF-8)
becomes an entry a reader can display; it never raises into the callback.

Try it (no services needed): `uv run python -m reliability.activity`
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent_framework import AgentResponseUpdate, Content, UsageDetails, add_usage_details

from redis_stream_response_handler import TOKEN, TOOL_CALL, TOOL_RESULT

RESULT_LIMIT = 2_000  # characters of a tool result (and of its arguments) written to the stream
UNNAMED_TOOL = "(unnamed tool)"


def cut(text: str, limit: int = RESULT_LIMIT) -> str:
    """`text`, or its first `limit` characters and a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text):,} characters in all]"


def safe_text(value: object) -> str:
    """Any value as text Redis can store: JSON for data, str() otherwise, lone surrogates replaced."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    # A str from bytes that were not UTF-8 holds lone surrogates, which cannot be encoded to send.
    return text.encode("utf-8", "replace").decode("utf-8")


def arguments_json(arguments: object) -> str:
    """The JSON text of a call's arguments object; anything else becomes {"raw": <its text>}."""
    if arguments is None or arguments == "":
        return "{}"
    text = arguments if isinstance(arguments, str) and _is_json_object(arguments) else None
    if isinstance(arguments, Mapping):
        with contextlib.suppress(TypeError, ValueError, RecursionError):  # keys JSON cannot hold, or a cycle
            text = json.dumps(arguments, default=str, ensure_ascii=False)
    if text is None:
        text = json.dumps({"raw": safe_text(arguments)}, ensure_ascii=False)
    text = safe_text(text)
    return text if len(text) <= RESULT_LIMIT else json.dumps({"raw": cut(text)}, ensure_ascii=False)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def usage_fields(usage: Mapping[str, Any] | None) -> dict[str, str]:
    """{"usage": '{"input_tokens": N, "output_tokens": M}'} for a done marker, or {} when nothing was reported."""
    if not usage:
        return {}
    names = {"input_tokens": "input_token_count", "output_tokens": "output_token_count"}
    counts = {name: usage.get(field) for name, field in names.items()}
    counts = {name: count for name, count in counts.items() if isinstance(count, int)}
    return {"usage": json.dumps(counts)} if counts else {}


@dataclass
class _OpenCall:
    """A function call whose arguments may still be streaming in (OpenAI-style fragments)."""

    name: str
    call_id: str
    arguments: str | dict[str, Any] | None


class RunActivity:
    """One run's updates -> `(kind, fields)` entries, in order; the run's usage so far in `usage`."""

    def __init__(self) -> None:
        self.usage: UsageDetails | None = None
        self._open: dict[str, _OpenCall] = {}  # fragment key -> call not yet written
        self._written: set[str] = set()  # fragment keys of calls already written
        self._names: dict[str, str] = {}  # call id -> tool name, for the results

    def only_text(self, update: AgentResponseUpdate) -> str | None:
        """The update's text when that is all it holds and no call is open: most updates, so `entries`' fast path."""
        contents = update.contents
        if len(contents) == 1 and contents[0].type == "text" and not self._open:
            return contents[0].text or ""
        return None

    def entries(self, update: AgentResponseUpdate) -> Iterator[tuple[str, dict[str, str]]]:
        """The entries for one update: text as tokens, function calls and results as tool entries."""
        text = ""
        for content in update.contents:
            if content.type == "text":
                text += content.text or ""
                continue
            if content.type == "usage":
                self._add_usage(content)
                continue
            if text:
                yield TOKEN, {"text": text}
                text = ""
            if content.type == "function_call":
                yield from self._call_fragment(content)
            elif content.type == "function_result":
                yield from self.flush()
                yield TOOL_RESULT, self._result_fields(content)
        if text:
            yield from self.flush()  # the model moved on: its calls are complete
            yield TOKEN, {"text": text}

    def flush(self) -> Iterator[tuple[str, dict[str, str]]]:
        """Every call still open, as tool_call entries (at the end of a run, or when the model moves on)."""
        for key in list(self._open):
            yield self._write_call(key)

    def _call_fragment(self, content: Content) -> Iterator[tuple[str, dict[str, str]]]:
        key = (
            content.id or content.call_id or next(reversed(self._open), "")
        )  # a fragment without ids continues the last call
        if key in self._written:
            return  # a trailing fragment of a call already written
        call = self._open.get(key)
        if call is None:
            yield from self.flush()  # a new call: the earlier ones are complete
            call = self._open[key] = _OpenCall(content.name or "", content.call_id or "", None)
        call.name = call.name or content.name or ""
        call.call_id = call.call_id or content.call_id or ""
        call.arguments = _merge_arguments(call.arguments, content.arguments)
        if _complete(call.arguments):
            yield self._write_call(key)

    def _write_call(self, key: str) -> tuple[str, dict[str, str]]:
        call = self._open.pop(key)
        self._written.add(key)
        name = safe_text(call.name) or UNNAMED_TOOL
        self._names[call.call_id] = name
        return TOOL_CALL, {
            "name": name,
            "call_id": safe_text(call.call_id),
            "arguments": arguments_json(call.arguments),
        }

    def _result_fields(self, content: Content) -> dict[str, str]:
        call_id = content.call_id or ""
        result = cut(safe_text(content.result if content.result is not None else ""))
        fields = {"call_id": safe_text(call_id), "result": result}
        if call_id in self._names:
            fields["name"] = self._names[call_id]
        if content.exception is not None:
            # The framework marks `exception` as possibly sensitive; `result` is the text meant to be shown.
            fields["error"] = result or "the tool failed"
        return fields

    def _add_usage(self, content: Content) -> None:
        details = content.usage_details
        if details is None:
            return
        # "replace" is a running total (the function-invocation layer sends those); otherwise an increment.
        if content.merge_mode == "replace":
            self.usage = copy.deepcopy(details)
        else:
            self.usage = add_usage_details(self.usage, details)


def _merge_arguments(
    so_far: str | dict[str, Any] | None, more: str | Mapping[str, Any] | None
) -> str | dict[str, Any] | None:
    if more is None or more == "":
        return so_far
    if isinstance(more, Mapping):
        return {**(so_far if isinstance(so_far, dict) else {}), **more}
    return (so_far if isinstance(so_far, str) else "") + more


def _complete(arguments: str | dict[str, Any] | None) -> bool:
    """Arguments that can take no more fragments: a mapping, or text that is a whole JSON object."""
    return isinstance(arguments, dict) or (bool(arguments) and _is_json_object(arguments or ""))


if __name__ == "__main__":
    activity = RunActivity()
    updates = [
        AgentResponseUpdate(
            contents=[Content.from_function_call("call_1", "get_weather_forecast", arguments='{"desti')]
        ),
        AgentResponseUpdate(contents=[Content.from_function_call("call_1", "", arguments='nation": "Oslo"}')]),
        AgentResponseUpdate(role="tool", contents=[Content.from_function_result("call_1", result="Day 1: Sunny")]),
        AgentResponseUpdate(contents=[Content.from_text("Pack "), Content.from_usage({"output_token_count": 9})]),
    ]
    for each in updates:
        for kind, fields in activity.entries(each):
            print(kind, fields)
    print("usage", usage_fields(activity.usage))
