"""The SSE events for a run's tool activity and for a stopped run: `tool_call`, `tool_result`, `cancelled`.

Each event's data is one JSON object (EventSource drops an event with empty data), and its `id` is
the Redis entry id, like every other event of the stream, so a reconnect replays them in order:

    event: tool_call     data: {"name": ..., "call_id": ..., "arguments": "<JSON text of the arguments>"}
    event: tool_result   data: {"call_id": ..., "name": ..., "result": "<text, cut>", "error": "<only if it failed>"}
    event: cancelled     data: {"correlation_id": ..., "reason": ...}      (ends the run, like done and error)
"""

from __future__ import annotations

import json

from sse_starlette import ServerSentEvent

from redis_stream_response_handler import CANCELLED, TOOL_CALL, TOOL_RESULT, StreamChunk


def activity_event(chunk: StreamChunk) -> ServerSentEvent | None:
    """The SSE event of a tool entry or a cancelled marker; None for any other chunk."""
    if chunk.kind == TOOL_CALL:
        data = {"name": chunk.name, "call_id": chunk.call_id, "arguments": chunk.arguments}
    elif chunk.kind == TOOL_RESULT:
        data = {"call_id": chunk.call_id, "name": chunk.name, "result": chunk.result}
        data |= {"error": chunk.error} if chunk.error is not None else {}
    elif chunk.kind == CANCELLED:
        data = {"correlation_id": chunk.correlation_id, "reason": chunk.reason}
    else:
        return None
    return ServerSentEvent(json.dumps(data), event=chunk.kind, id=chunk.entry_id)
