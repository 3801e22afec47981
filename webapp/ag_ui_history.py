"""A conversation's history as AG-UI messages, read from the durable record (the entity's state).

The durable entity keeps every turn: a request (the user's message) and a response (assistant
messages with text and tool calls, and tool messages with the results) under each run's correlation
id. `thread_messages` maps that onto the protocol's message models, with ids derived from the record
alone, so they are the same on every read, after a restart of the web app, and after the stream expired:

    request message i of run C         UserMessage      id "C-u{i}"
    assistant message k of run C       AssistantMessage id "C-m{k}" (text and/or toolCalls)
    a tool result for call X in run C  ToolMessage      id "C-t-X", toolCallId X

`webapp/ag_ui_events.py` gives the messages it streams the same ids (`message_ids`), so the
MESSAGES_SNAPSHOT that closes a run confirms what a client already has instead of replacing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ag_ui.core import AssistantMessage, FunctionCall, Message, ToolCall, ToolMessage, UserMessage
from agent_framework_durabletask import (
    DurableAgentState,
    DurableAgentStateFunctionCallContent,
    DurableAgentStateFunctionResultContent,
    DurableAgentStateRequest,
    DurableAgentStateResponse,
    DurableAgentStateTextContent,
)


@dataclass(frozen=True)
class MessageIds:
    """The ids of one attempt's messages: `prefix` is the correlation id (plus the attempt, after a restart)."""

    prefix: str

    def user(self, index: int = 0) -> str:
        return f"{self.prefix}-u{index}"

    def assistant(self, index: int) -> str:
        return f"{self.prefix}-m{index}"

    def tool_result(self, tool_call_id: str) -> str:
        return f"{self.prefix}-t-{tool_call_id}"


def thread_messages(state: DurableAgentState | None, *, without: str | None = None) -> list[Message]:
    """Every recorded turn in order; `without`: leave out one run (the one being streamed)."""
    messages: list[Message] = []
    history = state.data.conversation_history if state is not None else []
    for entry in history:
        run = entry.correlation_id or ""
        if run == without:
            continue
        if isinstance(entry, DurableAgentStateRequest):
            messages += _request_messages(entry)
        elif isinstance(entry, DurableAgentStateResponse):
            messages += _response_messages(entry, MessageIds(run))
    return messages


def has_response(state: DurableAgentState | None, correlation_id: str) -> bool:
    """True once the entity committed the run's response (its answer, a stopped run's partial one, or an error)."""
    history = state.data.conversation_history if state is not None else []
    return any(isinstance(e, DurableAgentStateResponse) and e.correlation_id == correlation_id for e in history)


def _response_messages(entry: DurableAgentStateResponse, ids: MessageIds) -> list[Message]:
    messages: list[Message] = []
    assistant_count = 0
    for message in entry.messages:
        if message.role == "assistant":
            text = "".join(c.text or "" for c in message.contents if isinstance(c, DurableAgentStateTextContent))
            calls = [
                ToolCall(id=c.call_id, function=FunctionCall(name=c.name, arguments=json.dumps(c.arguments)))
                for c in message.contents
                if isinstance(c, DurableAgentStateFunctionCallContent)
            ]
            if text or calls:
                messages.append(
                    AssistantMessage(id=ids.assistant(assistant_count), content=text or None, tool_calls=calls or None)
                )
            assistant_count += 1
        elif message.role == "tool":
            messages += [
                ToolMessage(id=ids.tool_result(c.call_id), tool_call_id=c.call_id, content=_result_text(c.result))
                for c in message.contents
                if isinstance(c, DurableAgentStateFunctionResultContent)
            ]
    return messages


def _result_text(result: object) -> str:
    return result if isinstance(result, str) else json.dumps(result, default=str)


def run_request_messages(state: DurableAgentState | None, correlation_id: str) -> list[Message]:
    """The user's message(s) of one run, once the entity committed its request (at the end of the run)."""
    history = state.data.conversation_history if state is not None else []
    return [
        message
        for entry in history
        if isinstance(entry, DurableAgentStateRequest) and entry.correlation_id == correlation_id
        for message in _request_messages(entry)
    ]


def _request_messages(entry: DurableAgentStateRequest) -> list[Message]:
    ids = MessageIds(entry.correlation_id or "")
    return [UserMessage(id=ids.user(i), content=m.text) for i, m in enumerate(entry.messages) if m.role == "user"]
