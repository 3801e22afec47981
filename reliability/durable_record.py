"""The durable record: the answer the agent entity stored, the source of truth the stream mirrors.

The Redis stream is a fast, disposable copy of the answer: it can expire, a
Redis without persistence can restart empty, a write can be lost. The durable
entity (`dafx-TravelPlanner`, keyed by the session key) keeps the whole
conversation in its state, with each answer under its run's correlation id. The
client reads it through the scheduler to verify a streamed answer (`--verify`)
or to recover one the stream lost: when a reader knows it missed tokens (a gap in
sequence numbers), finds the stream gone (expired, or Redis restarted empty), or is
asked to `--verify`, it compares with, or takes, the answer recorded here.

Try it: `uv run sample.py --verify -m "Plan a 2-day trip to Oslo"` ends by comparing the streamed answer with
the recorded one (`[client] verified: ...`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Protocol, TypeGuard

from agent_framework import AgentResponse, Message
from agent_framework_durabletask import AgentSessionId, DurableAgentState, DurableAgentStateResponse
from durabletask.client import TaskHubGrpcClient
from durabletask.entities import EntityInstanceId

from agents import AGENT_NAME
from redis_stream_response_handler import ERROR, START_OF_STREAM, RedisStreamResponseHandler, StreamChunk
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce
from support.errors import UsageError
from support.validation import entry_id_order


def recorded_state(client: TaskHubGrpcClient, session_key: str) -> DurableAgentState | None:
    """The conversation state the agent entity of `session_key` persisted, if it exists."""
    entity = client.get_entity(EntityInstanceId(AgentSessionId.to_entity_name(AGENT_NAME), session_key))
    state_json = entity.get_state() if entity is not None else None
    return DurableAgentState.from_json(state_json) if state_json else None


def recorded_answer(client: TaskHubGrpcClient, session_key: str, correlation_id: str) -> AgentResponse | None:
    """The answer recorded for one run (one `run(...)` call), if it is there yet."""
    state = recorded_state(client, session_key)
    return state.try_get_agent_response(correlation_id) if state is not None else None


def latest_recorded_answer(client: TaskHubGrpcClient, session_key: str) -> AgentResponse | None:
    """The newest successful answer in the conversation, if any."""
    latest = latest_recorded_run(client, session_key)
    return latest[1] if latest is not None else None


def latest_recorded_run(client: TaskHubGrpcClient, session_key: str) -> tuple[str, AgentResponse] | None:
    """The newest successful answer in the conversation and its run's correlation id, if any."""
    state = recorded_state(client, session_key)
    history = state.data.conversation_history if state is not None else []
    responses = [entry for entry in history if isinstance(entry, DurableAgentStateResponse) and not entry.is_error]
    if not responses:
        return None
    return responses[-1].correlation_id or "", DurableAgentStateResponse.to_run_response(responses[-1])


def wait_for_recorded_answer(
    client: TaskHubGrpcClient, session_key: str, correlation_id: str, timeout: float = 10.0
) -> AgentResponse | None:
    """The recorded answer, waiting for it briefly.

    Workaround (agent-framework-durabletask 1.0.0b260922): the done marker is written from
    `on_agent_response`, a moment BEFORE the entity's operation returns and the scheduler commits
    its state, so a fast reader can reach the record before the record exists. A hardened worker
    holds its done until the scheduler accepted the run (reliability/dispatch.py); a bare one
    (the tutorial's callback copied on its own) does not.
    """
    deadline = time.monotonic() + timeout
    while (answer := recorded_answer(client, session_key, correlation_id)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return answer


# ---- a stopped run, as the record keeps it --------------------------------------------------------
#
# Workaround (agent-framework-durabletask 1.0.0b260922): the entity records an answer without its
# `additional_properties` (`DurableAgentStateResponse.from_run_response` leaves them out, and neither
# entries nor messages persist `extensionData`), so `cancelled_response`'s "cancelled" property is lost.
# A message's role, contents and `authorName` are persisted, and the entity never replays a message
# with no contents to the model (`_to_replayable_message`). A reasoning content would not do: the
# entity files `text_reasoning` as "unknown" and replays it. So a stopped run's answer ends with an
# EMPTY assistant message whose author names the stop: not in the answer's `.text`, never sent to a model.

CANCELLED_AUTHOR_PREFIX = "cancelled: "


def cancelled_note(reason: str) -> Message:
    """The message that marks a recorded answer as the answer of a stopped run."""
    return Message(role="assistant", contents=[], author_name=f"{CANCELLED_AUTHOR_PREFIX}{reason}")


def recorded_cancel_reason(answer: AgentResponse) -> str | None:
    """The reason `answer` was stopped, if it ends with `cancelled_note` (live, or read back from the record)."""
    last = answer.messages[-1] if answer.messages else None
    author = last.author_name if last is not None and not last.contents else None
    return (
        author.removeprefix(CANCELLED_AUTHOR_PREFIX) if author and author.startswith(CANCELLED_AUTHOR_PREFIX) else None
    )


# ---- falling back on the record: when the stream lost something, the record has it -------------


class AnswerPrinter(Protocol):
    answer: str  # the text the reader printed for the current attempt

    def print_recovered(self, text: str) -> None: ...

    def print_end(self, final: StreamChunk) -> None: ...


async def print_latest_recorded_answer(scheduler: TaskHubGrpcClient, session_key: str, printer: AnswerPrinter) -> int:
    """The stream is gone (expired, or Redis restarted): print the answer the durable agent recorded.

    A stopped run's record says so (`cancelled_note`): one line naming the run and the reason, exit 1.
    """
    latest = await asyncio.to_thread(latest_recorded_run, scheduler, session_key)
    if latest is None:
        raise UsageError(
            f"unknown session {session_key}: no stream and no recorded answer (it expired, or never existed)"
        )
    correlation_id, answer = latest
    if (reason := recorded_cancel_reason(answer)) is not None:
        announce("client", f"the stream is gone; the agent's record says run {correlation_id} was cancelled ({reason})")
        return EXIT_RUN_FAILED
    announce("client", "the stream is gone (expired, or Redis restarted); this is the answer the agent recorded:")
    printer.print_recovered(answer.text)
    return EXIT_OK


async def settle_with_record(
    scheduler: TaskHubGrpcClient, session_key: str, final: StreamChunk, printer: AnswerPrinter, verify: bool
) -> int:
    """Compare what was streamed with the durable record; replace a stream with gaps by the record.

    A read that ended without a done marker (an error or cancelled marker, or silence) ends as `end_without_done` says.
    """
    if not final.is_done:
        return await end_without_done(scheduler, session_key, final, printer)
    record = await asyncio.to_thread(wait_for_recorded_answer, scheduler, session_key, final.correlation_id)
    if record is None:
        print("error: the agent recorded no answer for this run; cannot verify or recover it", file=sys.stderr)
        return EXIT_RUN_FAILED
    if final.missing:
        announce(
            "client", f"{final.missing} tokens never reached the stream; the full answer, from the durable record:"
        )
        printer.print_recovered(record.text)
    elif printer.answer != record.text:
        print("error: the streamed answer differs from the answer the agent recorded", file=sys.stderr)
        return EXIT_RUN_FAILED
    if verify:
        announce("client", "verified: the answer matches the one the durable agent recorded")
    return EXIT_OK


async def end_without_done(
    scheduler: TaskHubGrpcClient, session_key: str, final: StreamChunk, printer: AnswerPrinter
) -> int:
    """The read ended without a done marker: an error or cancelled marker, or nothing for the idle timeout.

    A worker that dies after the scheduler recorded its run's answer, but before the done marker reached
    Redis (a moment: reliability/dispatch.py holds the marker for the scheduler's verdict), leaves its
    readers with silence. The record has the answer then: it ends the read instead of an error.
    """
    record = None
    if final.kind == ERROR and final.correlation_id:  # a cancelled run, or one that failed, has no answer to find
        record = await asyncio.to_thread(recorded_answer, scheduler, session_key, final.correlation_id)
    if not is_answer_to_show(record):
        printer.print_end(final)  # `error: ...` or `[client] the run was cancelled`
        return EXIT_RUN_FAILED
    if printer.answer == record.text:
        announce("client", "the stream ended without its done marker, but the agent recorded this answer")
    else:
        announce("client", "the stream ended before the answer did; the full answer, from the durable record:")
        printer.print_recovered(record.text)
    return EXIT_OK


def is_answer_to_show(record: AgentResponse | None) -> TypeGuard[AgentResponse]:
    """True when a read that ended without its done marker should end with `record` instead: the run's answer.

    Not when the record has no answer for the run (it never finished: the error stands), nor when the
    recorded answer is a failure's or a stopped run's (the error or the stop is how the run ended).
    """
    return record is not None and not _failed(record) and recorded_cancel_reason(record) is None


def _failed(answer: AgentResponse) -> bool:
    # A failed run is recorded too, as a response whose text is the error (DurableAgentStateResponse.is_error).
    return any(content.type == "error" for message in answer.messages for content in message.contents)


async def reattach_point_exists(handler: RedisStreamResponseHandler, session_key: str, cursor: str | None) -> bool:
    """True when the stream still exists and `cursor` is not past its end (a UsageError then)."""
    newest = await handler.last_entry_id(session_key)
    if newest == START_OF_STREAM:
        return False
    if cursor is not None and entry_id_order(cursor) > entry_id_order(newest):
        raise UsageError(f"cursor {cursor} is past the end of the stream (newest entry: {newest})")
    return True
