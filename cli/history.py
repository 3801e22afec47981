"""`client.py --session KEY --history`: the conversation the durable entity recorded, turn by turn.

    uv run client.py --session <key> --history          # with worker.py, scheduler_server.py, the emulator or Azure
    uv run client.py --session <key> --history --json   # one JSON object per message, for scripts

For each turn, in order: the user's message, each tool call with its arguments and result
(shortened as the `[tool]` lines on stderr are), the answer, and how the turn ended: completed,
cancelled (and why) or failed (and why). Then the token usage added up. Everything comes from the
entity's state, read through the scheduler (reliability/conversation_record.py); nothing comes from
Redis, so it works after the stream expired. A turn shows once its run has ended.

    === turn 1 of 3: completed (run 3c9f…) ===
    You: Plan a 2-day trip to Paris
    [tool] get_weather_forecast(destination="Paris", days=2) → Weather forecast for Paris: Day 1: …
    TravelPlanner:
    # Your 2-day trip to Paris
    …
    === turn 3 of 3: cancelled: cancelled with client.py --cancel (run 7a1e…) ===
    …
    [cancelled: cancelled with client.py --cancel]

    usage: 36 input + 282 output = 318 tokens in 3 turns

Exit status: 0 printed, 1 an unknown session (one line), 2 bad usage.
"""

from __future__ import annotations

import json

from agents import AGENT_NAME
from cli.tool_status import call_text, tool_line
from reliability.conversation_record import (
    RecordedTurn,
    arguments_of,
    history_messages,
    recorded_conversation,
    result_text,
    usage_totals,
)
from support.config import Settings
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce, fail
from support.scheduler import connect_client
from support.services import Services


def history_command(settings: Settings, services: Services, session_key: str, *, as_json: bool) -> int:
    """Print the recorded conversation of `session_key`: 0 printed, 1 no such session."""
    turns = recorded_conversation(connect_client(services.scheduler_endpoint, settings.taskhub), session_key)
    if turns is None:
        return fail(
            f"unknown session {session_key}: the agent recorded no conversation under that key "
            "(a first turn still running is recorded when it ends)",
            EXIT_RUN_FAILED,
        )
    announce("client", f"session {session_key}: the conversation as the durable agent recorded it")
    if as_json:
        for message in history_messages(turns):
            print(json.dumps(message, ensure_ascii=False), flush=True)
        return EXIT_OK
    for turn in turns:
        print("\n".join(turn_lines(turn, len(turns))), end="\n\n", flush=True)
    print(usage_line(turns), flush=True)
    return EXIT_OK


def turn_lines(turn: RecordedTurn, turns: int) -> list[str]:
    """One turn as text: a heading with how it ended, the user's message, the tool lines, the answer."""
    ending = f"{turn.status}: {turn.detail}" if turn.detail else turn.status
    lines = [f"=== turn {turn.number} of {turns}: {ending} (run {turn.correlation_id}) ==="]
    lines += [f"You: {message.text}" for message in turn.request]
    calls: dict[str | None, str] = {}  # call id -> "name(arguments)", until its result is shown
    for message in turn.response:
        for content in message.contents:
            if content.type == "function_call":
                calls[content.call_id] = call_text(content.name, json.dumps(arguments_of(content)))
            elif content.type == "function_result":
                call = calls.pop(content.call_id, None) or "(unknown tool)(…)"
                lines.append(tool_line(call, result_text(content)))
        if message.text:
            lines += [f"{message.author_name or AGENT_NAME}:", message.text]
    lines += [f"[tool] {call} … (no result)" for call in calls.values()]
    if turn.status != "completed":  # so a cut-off answer does not read as a whole one
        lines.append(f"[{ending}]")
    return lines


def usage_line(turns: list[RecordedTurn]) -> str:
    totals = usage_totals(turns)
    return (
        f"usage: {totals['input_token_count']} input + {totals['output_token_count']} output "
        f"= {totals['total_token_count']} tokens in {len(turns)} turn{'' if len(turns) == 1 else 's'}"
    )
