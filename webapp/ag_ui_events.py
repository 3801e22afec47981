"""One run's stream chunks as AG-UI events, each with an SSE id that orders and resumes exactly.

`RunEvents` is a pure, deterministic mapping from the chunks `read_run` yields (one run, in stream
order, repeats already dropped; the entry kinds and fields: redis_stream_response_handler.py) to the
protocol's own event models (`ag_ui.core`):

    first chunk          RUN_STARTED (threadId, runId: the client's own ids, as agent-framework-ag-ui does)
    token                TEXT_MESSAGE_START (when no message is open), TEXT_MESSAGE_CONTENT
    tool_call            TEXT_MESSAGE_END (if open), TOOL_CALL_START, TOOL_CALL_ARGS, TOOL_CALL_END
    tool_result          TEXT_MESSAGE_END (if open), TOOL_CALL_RESULT
    restart              TEXT_MESSAGE_END, CUSTOM "durable-agent.restart" {messageId, reason}; what follows
                         is a NEW message, never spliced onto the partial one (a tool call id the new
                         attempt repeats gets a "+" suffix: AG-UI ids are unique within a run)
    done                 TEXT_MESSAGE_END (if open), RUN_FINISHED (usage from the done marker); when tokens
                         never reached the stream: a restart, the recorded answer as a new message, RUN_FINISHED
    error | cancelled    TEXT_MESSAGE_END (if open), RUN_ERROR code RUN_FAILED | CANCELLED (AG-UI has no
                         cancel event; a coded RUN_ERROR is the protocol's way, ag-ui issue #2327)

Ids: the events made from entry `1734649123456-0` get SSE ids `1734649123456-0.0`, `.1`, ... and message
ids derived from entry ids too, so replaying the run from its start yields the very same events with the
very same ids. That is how a reconnect resumes: replay, and skip every id up to `Last-Event-ID`.

Try it: `uv run python -m webapp.ag_ui_events` prints the events of a short made-up run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from pydantic import ValidationError

from redis_stream_response_handler import CANCELLED, DONE, ERROR, RESTART, TOKEN, TOOL_CALL, TOOL_RESULT, StreamChunk
from support.validation import MAX_ENTRY_ID_PART

RESTART_EVENT = "durable-agent.restart"
# fullmatch and [0-9]: `$` accepts a trailing newline and `\d` any Unicode digit (support/validation.py).
_EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})\.([0-9]{1,9})")
_ENCODER = EventEncoder()


def event_id_order(event_id: str) -> tuple[int, int, int]:
    """An SSE id this mapping made, as a sortable triple; ValueError for anything else."""
    match = _EVENT_ID.fullmatch(event_id)
    if match is None or max(int(match[1]), int(match[2])) > MAX_ENTRY_ID_PART:
        example = "1734649123456-0.1"
        raise ValueError(f"Last-Event-ID must be an event id this endpoint sent, such as {example} (got {event_id!r})")
    return int(match[1]), int(match[2]), int(match[3])


def sse_frame(event_id: str, event: BaseEvent) -> bytes:
    """The protocol encoder's frame (`data: {json}` and a blank line), with our `id:` line before it."""
    return f"id: {event_id}\n{_ENCODER.encode(event)}".encode()


@dataclass
class RunEvents:
    """Feed it one run's chunks in order; it returns each chunk's events with their SSE ids."""

    thread_id: str
    run_id: str
    started: bool = False
    message_id: str | None = None  # the open text message, if any
    tool_call_ids: dict[str, str] = field(default_factory=dict)  # this attempt: model's call id -> AG-UI id
    shown_tool_call_ids: set[str] = field(default_factory=set)  # every attempt: AG-UI ids already used
    _entry_id: str = ""
    _index: int = 0

    def events_for(self, chunk: StreamChunk, recorded_answer: str | None = None) -> list[tuple[str, BaseEvent]]:
        """`recorded_answer`: for a done chunk with `missing` tokens, the answer the durable entity recorded."""
        events: list[BaseEvent] = []
        if not self.started:
            self.started = True
            events.append(RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id))
        events += self._finish(chunk, recorded_answer) if chunk.kind == DONE else self._events(chunk)
        for event in events:
            event.timestamp = round(chunk.timestamp * 1000) or None  # when the worker wrote the entry
        return [(self._next_id(chunk.entry_id), event) for event in events]

    def _next_id(self, entry_id: str) -> str:
        # The reader's own idle-timeout error reuses the last entry's id: continue that entry's numbering.
        if entry_id != self._entry_id:
            self._entry_id, self._index = entry_id, 0
        self._index += 1
        return f"{entry_id}.{self._index - 1}"

    def _events(self, chunk: StreamChunk) -> list[BaseEvent]:
        if chunk.kind == TOKEN:
            return self._text(chunk)
        if chunk.kind == TOOL_CALL:
            return self._tool_call(chunk)
        if chunk.kind == TOOL_RESULT:
            return self._tool_result(chunk)
        if chunk.kind == RESTART:
            return self._restart(chunk)
        if chunk.kind == ERROR:
            return [*self._end_message(), RunErrorEvent(message=chunk.error or "the run failed", code="RUN_FAILED")]
        if chunk.kind == CANCELLED:
            reason = chunk.reason or "the run was cancelled"
            return [*self._end_message(), RunErrorEvent(message=reason, code="CANCELLED")]
        return []  # the start marker (RUN_STARTED stands for it), and kinds AG-UI has no event for

    def _finish(self, chunk: StreamChunk, recorded_answer: str | None) -> list[BaseEvent]:
        finished = RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, usage=_usage(chunk.usage))
        if not chunk.missing:
            return [*self._end_message(), finished]
        if recorded_answer is None:
            problem = f"{chunk.missing} tokens never reached the stream, and the durable record has no answer"
            return [*self._end_message(), RunErrorEvent(message=problem, code="INCOMPLETE")]
        # Tokens were lost on the way (Redis was unreachable for a while): the durable record has the
        # whole answer. Shown like a restart: the streamed text is replaced, never patched.
        reason = f"{chunk.missing} tokens never reached the stream; this is the answer the agent recorded"
        recovered = f"msg-{chunk.entry_id}"
        return [
            *self._restart(replace(chunk, error=reason)),
            TextMessageStartEvent(message_id=recovered, role="assistant"),
            TextMessageContentEvent(message_id=recovered, delta=recorded_answer),
            TextMessageEndEvent(message_id=recovered),
            finished,
        ]

    def _text(self, chunk: StreamChunk) -> list[BaseEvent]:
        if not chunk.text:
            return []
        events: list[BaseEvent] = []
        if self.message_id is None:
            self.message_id = f"msg-{chunk.entry_id}"
            events.append(TextMessageStartEvent(message_id=self.message_id, role="assistant"))
        events.append(TextMessageContentEvent(message_id=self.message_id, delta=chunk.text))
        return events

    def _end_message(self) -> list[BaseEvent]:
        if self.message_id is None:
            return []
        ended, self.message_id = self.message_id, None
        return [TextMessageEndEvent(message_id=ended)]

    def _tool_call(self, chunk: StreamChunk) -> list[BaseEvent]:
        call_id = tool_call_id = chunk.call_id or chunk.entry_id
        # A restarted attempt may call a tool under the same id again; AG-UI ids must be unique in a run.
        while tool_call_id in self.shown_tool_call_ids:
            tool_call_id = f"{tool_call_id}+"
        self.tool_call_ids[call_id] = tool_call_id
        self.shown_tool_call_ids.add(tool_call_id)
        name = chunk.name or "unknown"
        events = [*self._end_message(), ToolCallStartEvent(tool_call_id=tool_call_id, tool_call_name=name)]
        if arguments := chunk.arguments:
            events.append(ToolCallArgsEvent(tool_call_id=tool_call_id, delta=arguments))
        events.append(ToolCallEndEvent(tool_call_id=tool_call_id))
        return events

    def _tool_result(self, chunk: StreamChunk) -> list[BaseEvent]:
        tool_call_id = self.tool_call_ids.get(chunk.call_id or "")
        if tool_call_id is None:
            return []  # a result for a call this run never showed (AG-UI would reject it)
        content = chunk.result or ""
        result = ToolCallResultEvent(
            message_id=f"result-{chunk.entry_id}", tool_call_id=tool_call_id, content=content, role="tool"
        )
        return [*self._end_message(), result]

    def _restart(self, chunk: StreamChunk) -> list[BaseEvent]:
        partial = self.message_id
        self.tool_call_ids = {}
        value: dict[str, str] = {"reason": chunk.error or chunk.reason or "the answer restarted"}
        if partial is not None:
            value["messageId"] = partial  # what a UI should drop: the new attempt's text replaces it
        return [*self._end_message(), CustomEvent(name=RESTART_EVENT, value=value)]


def _usage(text: str | None) -> list[TokenUsage] | None:
    """The done marker's usage ({"input_tokens": N, "output_tokens": M}) as AG-UI's per-model list."""
    if not text:
        return None
    try:
        return [TokenUsage.model_validate_json(text)]
    except ValidationError:
        return None  # usage is a nicety: a value we cannot read must not fail the run's last event


def _demo() -> None:
    chunks = [
        StreamChunk("1764100000001-0", "start", correlation_id="run-1", timestamp=1764100000.001),
        StreamChunk("1764100000002-0", TOKEN, "Day 1: ", timestamp=1764100000.002),
        StreamChunk("1764100000003-0", TOKEN, "Oslo", sequence=1, timestamp=1764100000.003),
        StreamChunk("1764100000004-0", DONE, sequence=2, chunks=2, timestamp=1764100000.004),
    ]
    run = RunEvents(thread_id="thread-1", run_id="run-1")
    for chunk in chunks:
        for event_id, event in run.events_for(chunk):
            print(sse_frame(event_id, event).decode(), end="")
    print(json.dumps({"resume after": "1764100000002-0.1", "order": event_id_order("1764100000002-0.1")}))


if __name__ == "__main__":
    _demo()
