"""One run's stream chunks as AG-UI events, each with an SSE id that orders and resumes exactly.

`RunEvents` is a deterministic mapping from the chunks `read_run` yields (one run, in stream order,
repeats already dropped; the entry kinds and fields: redis_stream_response_handler.py) to the
protocol's own event models (`ag_ui.core`, ag-ui-protocol 1.0):

    first chunk          RUN_STARTED (threadId, runId: the client's own ids), MESSAGES_SNAPSHOT (`before`: the
                         thread so far and this run's user message)
    token                TEXT_MESSAGE_START (when no text is open), TEXT_MESSAGE_CONTENT
    tool_call            TEXT_MESSAGE_END (if open), TOOL_CALL_START (parentMessageId: the assistant message
                         of this model turn, the one its text went to), TOOL_CALL_ARGS, TOOL_CALL_END
    tool_result          TEXT_MESSAGE_END (if open), TOOL_CALL_RESULT; the next text or call is a new message
    restart              TEXT_MESSAGE_END, CUSTOM "durable-agent.restart" {reason, messageId}, MESSAGES_SNAPSHOT
                         (`before` again: the abandoned attempt's messages leave the client's list); what follows
                         is new, never spliced onto the partial answer (ids "C~1-m0", ...; a tool call id the new
                         attempt repeats gets a "+" suffix: AG-UI ids are unique within a run)
    done                 TEXT_MESSAGE_END (if open), MESSAGES_SNAPSHOT (the durable record, with this run),
                         RUN_FINISHED (usage from the done marker); tokens that never reached the stream come
                         with the snapshot, and without a record the run ends with RUN_ERROR INCOMPLETE
    cancelled            the same, with RUN_FINISHED outcome {type: "cancelled"}: a Stop is not a failure
    error                TEXT_MESSAGE_END (if open), RUN_ERROR code RUN_FAILED

Ids: the events made from entry `1734649123456-0` get SSE ids `1734649123456-0.0`, `.1`, ..., so replaying
the run from its start yields the very same events with the very same ids. That is how a reconnect
resumes: replay, and skip every id up to `Last-Event-ID`. Message ids are the durable record's
(`webapp/ag_ui_history.py`: "C-m0", "C-t-<call id>" for run C), so the closing snapshot keeps them.

Try it: `uv run python -m webapp.ag_ui_events` prints the events of a short made-up run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Message,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
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
from webapp.ag_ui_history import MessageIds

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


def sse_frame(event_id: str | None, event: BaseEvent) -> bytes:
    """The protocol encoder's frame (`data: {json}` and a blank line), with our `id:` line before it."""
    frame = _ENCODER.encode(event)
    return (f"id: {event_id}\n{frame}" if event_id is not None else frame).encode()


@dataclass
class RunEvents:
    """Feed it one run's chunks in order; it returns each chunk's events with their SSE ids.

    `before`: the thread's messages before this run (the durable record without it, plus the run's own
    user message), sent as a MESSAGES_SNAPSHOT after RUN_STARTED and again at a restart, which takes the
    abandoned attempt's messages out of a client's list. None: no snapshot (the demo below).
    """

    thread_id: str
    run_id: str
    before: list[Message] | None = None
    started: bool = False
    attempt: int = 0  # restarts seen: the attempt's messages get ids of their own (MessageIds.prefix)
    assistant_count: int = 0  # assistant messages this attempt opened so far
    assistant_id: str | None = None  # the assistant message text and tool calls now go to, if any
    text_open: bool = False  # a TEXT_MESSAGE_START without its END yet
    tool_call_ids: dict[str, str] = field(default_factory=dict)  # this attempt: model's call id -> AG-UI id
    shown_tool_call_ids: set[str] = field(default_factory=set)  # every attempt: AG-UI ids already used
    _ids: MessageIds | None = None
    _entry_id: str = ""
    _index: int = 0

    def events_for(
        self, chunk: StreamChunk, final_messages: list[Message] | None = None
    ) -> list[tuple[str, BaseEvent]]:
        """`final_messages`: for a done or cancelled chunk, the thread's messages the durable record holds now."""
        events: list[BaseEvent] = []
        if not self.started:
            self.started = True
            self._ids = MessageIds(chunk.correlation_id or self.run_id)
            events.append(RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id))
            events += self._snapshot(self.before)
        if chunk.kind in (DONE, CANCELLED):
            events += self._finish(chunk, final_messages)
        else:
            events += self._events(chunk)
        for event in events:
            event.timestamp = round(chunk.timestamp * 1000) or None  # when the worker wrote the entry
        return [(self._next_id(chunk.entry_id), event) for event in events]

    def _next_id(self, entry_id: str) -> str:
        # The reader's own idle-timeout error reuses the last entry's id: continue that entry's numbering.
        if entry_id != self._entry_id:
            self._entry_id, self._index = entry_id, 0
        self._index += 1
        return f"{entry_id}.{self._index - 1}"

    @property
    def ids(self) -> MessageIds:
        assert self._ids is not None, "ids are known from the first chunk on"
        return self._ids

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
            return [*self._end_text(), RunErrorEvent(message=chunk.error or "the run failed", code="RUN_FAILED")]
        return []  # the start marker (RUN_STARTED stands for it), and kinds AG-UI has no event for

    def _finish(self, chunk: StreamChunk, final_messages: list[Message] | None) -> list[BaseEvent]:
        """RUN_FINISHED after the record's MESSAGES_SNAPSHOT: the history the client keeps, then the outcome."""
        outcome = RunFinishedCancelledOutcome() if chunk.kind == CANCELLED else None
        finished = RunFinishedEvent(
            thread_id=self.thread_id, run_id=self.run_id, outcome=outcome, usage=_usage(chunk.usage)
        )
        if chunk.missing and final_messages is None:
            problem = f"{chunk.missing} tokens never reached the stream, and the durable record has no answer"
            return [*self._end_text(), RunErrorEvent(message=problem, code="INCOMPLETE")]
        # Tokens lost on the way (Redis was unreachable for a while) are in the record: the snapshot gives
        # the streamed message (same id) its whole text, replacing what the client had.
        return [*self._end_text(), *self._snapshot(final_messages), finished]

    def _snapshot(self, messages: list[Message] | None) -> list[BaseEvent]:
        return [MessagesSnapshotEvent(messages=messages)] if messages is not None else []

    def _assistant(self) -> str:
        """The assistant message text and tool calls go to: a new one after a tool result (the next model turn)."""
        if self.assistant_id is None:
            self.assistant_id = self.ids.assistant(self.assistant_count)
            self.assistant_count += 1
        return self.assistant_id

    def _text(self, chunk: StreamChunk) -> list[BaseEvent]:
        if not chunk.text:
            return []
        message_id, events = self._assistant(), []
        if not self.text_open:
            self.text_open = True
            events.append(TextMessageStartEvent(message_id=message_id, role="assistant"))
        events.append(TextMessageContentEvent(message_id=message_id, delta=chunk.text))
        return events

    def _end_text(self) -> list[BaseEvent]:
        if not self.text_open or self.assistant_id is None:
            return []
        self.text_open = False
        return [TextMessageEndEvent(message_id=self.assistant_id)]

    def _tool_call(self, chunk: StreamChunk) -> list[BaseEvent]:
        call_id = tool_call_id = chunk.call_id or chunk.entry_id
        # A restarted attempt may call a tool under the same id again; AG-UI ids must be unique in a run.
        while tool_call_id in self.shown_tool_call_ids:
            tool_call_id = f"{tool_call_id}+"
        self.tool_call_ids[call_id] = tool_call_id
        self.shown_tool_call_ids.add(tool_call_id)
        name = chunk.name or "unknown"
        events = self._end_text()
        # parentMessageId: the calls belong to the assistant message (with its text, if it said something first).
        start = ToolCallStartEvent(tool_call_id=tool_call_id, tool_call_name=name, parent_message_id=self._assistant())
        events.append(start)
        if arguments := chunk.arguments:
            events.append(ToolCallArgsEvent(tool_call_id=tool_call_id, delta=arguments))
        events.append(ToolCallEndEvent(tool_call_id=tool_call_id))
        return events

    def _tool_result(self, chunk: StreamChunk) -> list[BaseEvent]:
        tool_call_id = self.tool_call_ids.get(chunk.call_id or "")
        if tool_call_id is None:
            return []  # a result for a call this run never showed (AG-UI would reject it)
        events = self._end_text()
        self.assistant_id = None  # the model's next turn is the next assistant message
        message_id, content = self.ids.tool_result(tool_call_id), chunk.result or ""
        return [*events, ToolCallResultEvent(message_id=message_id, tool_call_id=tool_call_id, content=content)]

    def _restart(self, chunk: StreamChunk) -> list[BaseEvent]:
        """The attempt starts over: its messages leave the client's list (the snapshot), the next attempt's are new."""
        partial = self.assistant_id
        events = self._end_text()
        value: dict[str, str] = {"reason": chunk.error or chunk.reason or "the answer restarted"}
        if partial is not None:
            value["messageId"] = partial  # for a UI that shows the restart; the snapshot already dropped it
        events += [CustomEvent(name=RESTART_EVENT, value=value), *self._snapshot(self.before)]
        self.attempt += 1
        self._ids = MessageIds(f"{chunk.correlation_id or self.run_id}~{self.attempt}")
        self.assistant_id, self.assistant_count, self.tool_call_ids = None, 0, {}
        return events


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
