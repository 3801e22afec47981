"""The conversation the durable entity recorded: every turn, in order, read through the scheduler.

The agent entity (`dafx-TravelPlanner`, keyed by the session key) keeps the whole conversation in
its state: for each turn a request (the user's message) and a response under the run's correlation
id (the tool calls, their results, the answer, the usage). This module reads that state and nothing
else, so it works the same with the embedded scheduler, scheduler_server.py, the emulator and Azure,
and after the Redis stream has expired. A turn appears once its run has ended: the entity records
the request and its response together.

Each turn is `completed`, `cancelled` (stopped: `turn_status` is the one place that decides it) or
`failed` (the entity recorded an error). `history_messages` turns the turns into one JSON object
per message, shaped like Agent Framework's `Message` (role, contents of type text, function_call,
function_result, error) plus the turn's correlation id, status and, on its last message, usage.

See it with `uv run client.py --session <key> --history` (add `--json` for the objects), or
`curl localhost:8000/agents/TravelPlanner/history/<key>` with `uv run web.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from agent_framework import AgentResponse, Content, Message
from agent_framework_durabletask import DurableAgentStateRequest, DurableAgentStateResponse
from durabletask.client import TaskHubGrpcClient

from reliability.durable_record import recorded_state
from reliability.stop_watch import cancel_reason

TurnStatus = Literal["completed", "cancelled", "failed"]
USAGE_FIELDS = ("input_token_count", "output_token_count", "total_token_count")


@dataclass(frozen=True)
class RecordedTurn:
    """One turn as the entity recorded it: the user's message(s), then what the agent said and did."""

    number: int  # 1, 2, ...: the turn's place in the conversation
    correlation_id: str  # the run's id: names its entries on the stream, and its response in the record
    request: list[Message]  # the user's message
    response: list[Message]  # tool calls, tool results and answer text, in order (markers left out)
    status: TurnStatus
    detail: str | None  # why it was cancelled, or the error it failed with
    usage: dict[str, int] | None  # the run's token counts, when the model reported them


def recorded_conversation(client: TaskHubGrpcClient, session_key: str) -> list[RecordedTurn] | None:
    """Every turn the entity of `session_key` recorded, in order; None when there is no such entity."""
    state = recorded_state(client, session_key)
    if state is None:
        return None
    history = state.data.conversation_history
    responses = {e.correlation_id: e for e in history if isinstance(e, DurableAgentStateResponse)}
    requests = [entry for entry in history if isinstance(entry, DurableAgentStateRequest)]
    return [_turn(number, request, responses.get(request.correlation_id)) for number, request in enumerate(requests, 1)]


def _turn(number: int, request: DurableAgentStateRequest, entry: DurableAgentStateResponse | None) -> RecordedTurn:
    answer = DurableAgentStateResponse.to_run_response(entry) if entry is not None else None
    status, detail = turn_status(answer, is_error=entry is not None and entry.is_error)
    usage = _usage(entry.usage.to_usage_details()) if entry is not None and entry.usage is not None else None
    return RecordedTurn(
        number, request.correlation_id or "", [m.to_chat_message() for m in request.messages],
        [m for m in (answer.messages if answer is not None else []) if m.contents], status, detail, usage,
    )  # fmt: skip


def turn_status(answer: AgentResponse | None, *, is_error: bool = False) -> tuple[TurnStatus, str | None]:
    """How a recorded turn ended, and why when it did not complete: the one place that says "cancelled".

    A stopped run's answer carries its reason (`stop_watch.cancel_reason`: the response's
    additional properties when present, else the note the record keeps). A failed run's answer
    is the entity's error message. A request with no answer (the entity never recorded one) failed.
    """
    if answer is None:
        return "failed", "the agent recorded no answer for this turn"
    if (reason := cancel_reason(answer)) is not None:
        return "cancelled", reason
    errors = [c for m in answer.messages for c in m.contents if c.type == "error"]
    if errors or is_error:
        return "failed", "; ".join(c.message or c.error_code or "error" for c in errors) or "the run failed"
    return "completed", None


def usage_totals(turns: list[RecordedTurn]) -> dict[str, int]:
    """The token counts of every turn added up (turns whose model reported none count zero)."""
    return {name: sum((turn.usage or {}).get(name, 0) for turn in turns) for name in USAGE_FIELDS}


def history_messages(turns: list[RecordedTurn]) -> list[dict[str, Any]]:
    """One JSON object per message: client.py --history --json prints them, GET /history returns them."""
    objects: list[dict[str, Any]] = []
    for turn in turns:
        messages = turn.request + turn.response
        for index, message in enumerate(messages):
            status = {"status": turn.status} | ({"reason": turn.detail} if turn.detail is not None else {})
            last = index == len(messages) - 1
            objects.append(
                {"turn": turn.number, "correlation_id": turn.correlation_id, "role": str(message.role)}
                | ({"author_name": message.author_name} if message.author_name else {})
                | {"text": message.text, "contents": [content_object(c) for c in message.contents], **status}
                | ({"usage": turn.usage} if last and turn.usage is not None else {})
            )
    return objects


def content_object(content: Content) -> dict[str, Any]:
    """A content the way Agent Framework names its fields, with only what the record holds."""
    if content.type == "text":
        return {"type": "text", "text": content.text or ""}
    if content.type == "function_call":
        call = {"call_id": content.call_id, "name": content.name, "arguments": arguments_of(content)}
        return {"type": "function_call", **call}
    if content.type == "function_result":
        return {"type": "function_result", "call_id": content.call_id, "result": result_text(content)}
    if content.type == "error":
        return {"type": "error", "message": content.message, "error_code": content.error_code}
    return {"type": content.type}


def arguments_of(call: Content) -> dict[str, Any] | None:
    """A function call's arguments as an object (the record keeps them parsed)."""
    try:
        return call.parse_arguments()
    except ValueError:
        return {"raw": call.arguments}


def result_text(result: Content) -> str | None:
    """A function result as text: the tools here return text; anything else as JSON."""
    value = result.result
    return value if value is None or isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _usage(details: Any) -> dict[str, int] | None:
    counts = {name: details.get(name) for name in USAGE_FIELDS}
    return {name: value for name, value in counts.items() if isinstance(value, int)} or None
