"""The AG-UI endpoint over real HTTP: Agent Framework's own AG-UI client, the protocol's models, ag-ui-validate,
resuming with Last-Event-ID, restarts, failures, history snapshots, joining a thread, and bad input.

Like test_web.py: a real uvicorn server on a loopback port with its embedded scheduler, an in-process
durable worker (the offline demo model) and the tests' private Redis.

    uv run pytest tests/webapp/test_ag_ui.py -q
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ag_ui.core import Event
from ag_ui_validate.pytest_plugin import assert_valid_agui
from ag_ui_validate.transport import TransportOptions, sse_items, validate_endpoint
from pydantic import TypeAdapter

from redis_stream_response_handler import (
    CANCELLED,
    DONE,
    ERROR,
    START,
    TOOL_CALL,
    TOOL_RESULT,
    RedisStreamResponseHandler,
    entry_fields,
    stream_key,
)
from tests.conftest import ROOT
from tests.streams import write_entries
from tests.webapp.test_web import Server, demo_worker, eventually, serve
from webapp.ag_ui import record_key

AG_UI = "/ag-ui/TravelPlanner"
EVENT = TypeAdapter(Event)  # the protocol package's own union of event models


def run_input(thread_id: str, run_id: str, text: str = "Plan a 2-day trip to Oslo") -> dict[str, Any]:
    """A complete RunAgentInput, as the protocol's TypeScript client sends it."""
    message = {"id": f"user-{run_id}", "role": "user", "content": text}
    return {
        "threadId": thread_id,
        "runId": run_id,
        "messages": [message],
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


def new_ids() -> tuple[str, str]:
    return f"thread-{uuid.uuid4().hex}", f"run-{uuid.uuid4().hex}"


async def events_of(response: httpx.Response, stop_after_text: int | None = None) -> list[tuple[str | None, dict]]:
    """(SSE id, event) pairs, each event checked against the protocol's models; stop early after N text deltas."""
    assert response.status_code == 200, (await response.aread()).decode()
    events: list[tuple[str | None, dict]] = []
    async for item in sse_items(response.aiter_bytes()):
        assert item.kind != "problem", item
        if item.kind != "event":
            continue
        EVENT.validate_json(item.data)
        events.append((item.id, json.loads(item.data)))
        texts = [event for _, event in events if event["type"] == "TEXT_MESSAGE_CONTENT"]
        if stop_after_text is not None and len(texts) == stop_after_text:
            break
    return events


async def post_run(http: httpx.AsyncClient, body: dict[str, Any], stop_after_text: int | None = None) -> list:
    async with http.stream("POST", AG_UI, json=body) as response:
        return await events_of(response, stop_after_text)


async def resume(http: httpx.AsyncClient, thread_id: str, run_id: str, last_event_id: str | None = None) -> list:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with http.stream("GET", f"{AG_UI}/{thread_id}/runs/{run_id}", headers=headers) as response:
        return await events_of(response)


def text_of(events: list[tuple[str | None, dict]]) -> str:
    return "".join(event["delta"] for _, event in events if event["type"] == "TEXT_MESSAGE_CONTENT")


async def recorded_answer(
    http: httpx.AsyncClient, redis: RedisStreamResponseHandler, thread_id: str, run_id: str
) -> str:
    """The answer the durable entity recorded for the run (the AG-UI record names its correlation id)."""
    record = await redis.redis.get(record_key(thread_id, run_id))
    assert record is not None, "no AG-UI run record"
    correlation_id = json.loads(record)["correlation_id"]
    response = await http.get(f"/agents/TravelPlanner/answer/{thread_id}/{correlation_id}")
    assert response.status_code == 200, response.text
    return response.json()["text"]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisStreamResponseHandler]:
    async with RedisStreamResponseHandler.from_url(redis_url) as handler:
        yield handler


# Agent Framework's AG-UI client pins ag-ui-protocol < 0.2: it runs in an environment of its own (docs/workarounds.md).
AF_CLIENT = ["--no-project", "--isolated", "--with", "agent-framework-ag-ui==1.7.0", "python"]


def agent_framework_client(endpoint: str, thread_id: str, question: str) -> dict[str, Any]:
    """What Agent Framework's AGUIChatClient made of one run (tests/webapp/af_agui_client.py, in its own venv)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv is not None, "uv runs the test suite, and this test runs uv"
    command = [*AF_CLIENT, str(ROOT / "tests" / "webapp" / "af_agui_client.py"), endpoint, thread_id, question]
    # Offline first (uv's cache, no index round trip), then online: a fresh CI machine downloads it once.
    for mode in (["--offline"], []):
        done = subprocess.run([uv, "run", *mode, *command], capture_output=True, text=True, timeout=240, cwd=ROOT)
        if done.returncode == 0:
            return json.loads(done.stdout.splitlines()[-1])
    raise AssertionError(f"the Agent Framework client failed ({done.returncode}):\n{done.stderr[-3000:]}")


async def test_agent_framework_client_streams_the_answer(
    web: Server, http: httpx.AsyncClient, redis: RedisStreamResponseHandler
) -> None:
    thread_id = f"thread-{uuid.uuid4().hex}"
    run = agent_framework_client(web.url + AG_UI, thread_id, "Plan a 2-day trip to Oslo")

    started, finished = run["started"], run["finished"]
    assert started["thread_id"] == thread_id and finished["thread_id"] == thread_id
    assert finished["run_id"] == started["run_id"] and run["finish_reason"] == "stop"
    assert run["text"] == await recorded_answer(http, redis, thread_id, started["run_id"])
    assert "Oslo" in run["text"]
    # The agent's tool calls, as Agent Framework content: server-side (hosted) calls, then their results.
    assert [(c["name"], c["arguments"]) for c in run["calls"]] == [
        ("get_weather_forecast", {"destination": "Oslo", "days": 2}),
        ("get_local_events", {"destination": "Oslo"}),
    ]
    assert all(c["hosted"] for c in run["calls"])  # the client runs nothing itself: the durable agent ran the tools
    assert [run["results"][c["call_id"]].splitlines()[0] for c in run["calls"]] == [
        "Weather forecast for Oslo:",
        "Events in Oslo (all):",
    ]


async def test_the_events_are_valid_ag_ui(
    web: Server, http: httpx.AsyncClient, redis: RedisStreamResponseHandler
) -> None:
    thread_id, run_id = new_ids()
    events = await post_run(http, run_input(thread_id, run_id))

    assert_valid_agui([event for _, event in events], max_warnings=0)  # the conformance validator, offline
    types = [event["type"] for _, event in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert {(e["threadId"], e["runId"]) for _, e in events if "runId" in e} == {(thread_id, run_id)}
    assert "TEXT_MESSAGE_START" in types and "TEXT_MESSAGE_END" in types
    tools = [
        (e["toolCallName"], json.loads(e_args["delta"]))
        for (_, e), (_, e_args) in itertools.pairwise(events)
        if e["type"] == "TOOL_CALL_START"
    ]
    assert tools == [
        ("get_weather_forecast", {"destination": "Oslo", "days": 2}),
        ("get_local_events", {"destination": "Oslo"}),
    ]
    assert types.count("TOOL_CALL_END") == types.count("TOOL_CALL_RESULT") == 2
    usage = events[-1][1]["usage"]  # the model's token usage, from the done marker
    assert len(usage) == 1 and usage[0]["inputTokens"] > 0 and usage[0]["outputTokens"] > 0
    assert text_of(events) == await recorded_answer(http, redis, thread_id, run_id)

    # The SSE ids come from Redis entry ids (<entry id>.<n>) and strictly increase.
    ids = [event_id for event_id, _ in events]
    keys = [(int(e.split("-")[0]), int(e.split("-")[1].split(".")[0]), int(e.split(".")[1])) for e in ids if e]
    assert len(keys) == len(events) and keys == sorted(set(keys))

    # The validator's transport rules too: SSE framing, content type, keepalive, incremental delivery.
    second_run = run_input(thread_id, f"run-{uuid.uuid4().hex}", "Plan a 1-day trip to Bergen")
    result = await validate_endpoint(web.url + AG_UI, TransportOptions(input=second_run, timeout_ms=30_000))
    assert (result.report.summary.errors, result.report.summary.warnings) == (0, 0), result.report.diagnostics


async def test_a_reconnect_with_last_event_id_gets_exactly_the_remaining_events(
    web: Server, http: httpx.AsyncClient
) -> None:
    thread_id, run_id = new_ids()
    first = await post_run(http, run_input(thread_id, run_id), stop_after_text=8)  # then the connection drops
    await eventually(lambda: web.app.state.active_streams == 0, "the dropped stream's generator finishes")

    rest = await resume(http, thread_id, run_id, last_event_id=first[-1][0])
    everything = await resume(http, thread_id, run_id)

    assert rest[-1][1]["type"] == "RUN_FINISHED"
    assert "TEXT_MESSAGE_CONTENT" in {event["type"] for _, event in rest}  # mid-answer: text followed
    assert first + rest == everything  # no gap, no repeat: same ids, same events
    assert_valid_agui([event for _, event in first + rest], max_warnings=0)
    # A resume after the last event has nothing left to send.
    assert await resume(http, thread_id, run_id, last_event_id=everything[-1][0]) == []


async def test_a_restart_is_a_fresh_message(
    web: Server, http: httpx.AsyncClient, redis: RedisStreamResponseHandler
) -> None:
    """A redelivered run (worker crash) starts over: a snapshot drops the abandoned attempt, the new one is new."""
    thread_id, run_id = new_ids()
    call = {"name": "get_weather_forecast", "call_id": "call-1"}
    entries = []
    for attempt, text in (("a1", "Day 1: rain"), ("a2", "Day 1: sun")):  # both attempts call the tool first
        entries += [entry_fields(START, "run-1", 0, attempt=attempt)]
        entries += [entry_fields(TOOL_CALL, "run-1", 0, arguments='{"destination": "Oslo"}', **call)]
        entries += [entry_fields(TOOL_RESULT, "run-1", 1, result="Day 1: Sunny", **call)]
        entries += [entry_fields("token", "run-1", 2, text)]
    ids = await write_entries(redis, thread_id, [*entries, entry_fields(DONE, "run-1", 3, chunks=3)])
    record = {"cursor": "0-0", "correlation_id": "run-1", "message": "Plan a day in Oslo"}
    await redis.redis.set(record_key(thread_id, run_id), json.dumps(record))

    events = await resume(http, thread_id, run_id)

    assert_valid_agui([event for _, event in events], max_warnings=0)  # no repeated id, no spliced message
    attempt = ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]
    attempt += ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"]
    types = [event["type"] for _, event in events]
    # (No durable record for this hand-written run: no closing snapshot.)
    assert types == [
        "RUN_STARTED",
        "MESSAGES_SNAPSHOT",
        *attempt,
        "CUSTOM",
        "MESSAGES_SNAPSHOT",
        *attempt,
        "RUN_FINISHED",
    ]
    opening, restart, dropping = events[1][1], events[9][1], events[10][1]
    assert (
        opening["messages"]
        == dropping["messages"]
        == [{"id": "run-1-u0", "role": "user", "content": record["message"]}]
    )
    partial, fresh = events[6][1], events[15][1]
    assert restart["name"] == "durable-agent.restart" and restart["value"]["messageId"] == partial["messageId"]
    assert fresh["messageId"] != partial["messageId"] and fresh["type"] == "TEXT_MESSAGE_START"
    assert text_of(events[10:]) == "Day 1: sun"
    first_call, second_call = events[2][1], events[11][1]
    assert first_call["toolCallId"] == "call-1" and second_call["toolCallId"] != "call-1"
    # The calls belong to the assistant message of their attempt (and not to a message of their own each).
    assert first_call["parentMessageId"] == "run-1-m0" and second_call["parentMessageId"] == "run-1~1-m0"
    assert [event_id for event_id, _ in events][8:12] == [f"{ids[4]}.0", f"{ids[4]}.1", f"{ids[4]}.2", f"{ids[5]}.0"]


async def test_tokens_that_never_reached_the_stream_are_recovered_from_the_durable_record(
    http: httpx.AsyncClient, redis: RedisStreamResponseHandler
) -> None:
    """A gap in the stream (Redis was unreachable for a while): the closing snapshot has the recorded answer."""
    thread_id, run_id = new_ids()
    answer = text_of(await post_run(http, run_input(thread_id, run_id)))  # a real run, recorded by the entity
    stored = await redis.redis.get(record_key(thread_id, run_id))
    assert stored is not None
    correlation_id, cursor = json.loads(stored)["correlation_id"], await redis.last_entry_id(thread_id)
    # The same run as a stream that lost token 1 of 3 (written by hand), under a second AG-UI run id.
    entries = [entry_fields(START, correlation_id, 0, attempt="gap"), entry_fields("token", correlation_id, 0, "Day")]
    entries += [entry_fields("token", correlation_id, 2, "Oslo"), entry_fields(DONE, correlation_id, 3, chunks=3)]
    await write_entries(redis, thread_id, entries)
    record = json.dumps({"cursor": cursor, "correlation_id": correlation_id})
    await redis.redis.set(record_key(thread_id, "with-a-gap"), record)

    events = await resume(http, thread_id, "with-a-gap")

    assert_valid_agui([event for _, event in events], max_warnings=0)
    types = [event["type"] for _, event in events]
    assert types[-3:] == ["TEXT_MESSAGE_END", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
    # What a client keeps is the snapshot: the streamed "DayOslo" is replaced (same id) or dropped (another id).
    streamed_id, snapshot = events[-3][1]["messageId"], events[-2][1]["messages"]
    assert text_of(events) == "DayOslo" and snapshot[-1] == {
        "id": f"{correlation_id}-m1",
        "role": "assistant",
        "content": answer,
    }
    assert all(message["content"] == answer for message in snapshot if message["id"] == streamed_id)


async def test_a_recorded_run_whose_done_marker_never_arrived_finishes_with_the_records_snapshot(
    http: httpx.AsyncClient, redis: RedisStreamResponseHandler
) -> None:
    """The worker died after the scheduler recorded the run, before its done marker's XADD: the stream goes silent.

    Default settings: after the default idle timeout (20 s) the run finishes with the record's snapshot (which
    holds the whole answer), not RUN_ERROR. The stream keeps the run's first half only.
    """
    thread_id, run_id = new_ids()
    complete = await post_run(http, run_input(thread_id, run_id, "Plan a 2-day trip to Lyon"))
    entry_ids = sorted({event_id.split(".")[0] for event_id, _ in complete if event_id}, key=_entry_order)
    tail = entry_ids[len(entry_ids) // 2 :]  # the second half and the done marker never reached Redis
    await redis.redis.xdel(stream_key(thread_id), *tail)

    events = await resume(http, thread_id, run_id)

    assert_valid_agui([event for _, event in events], max_warnings=0)
    assert [event["type"] for _, event in events][-3:] == ["TEXT_MESSAGE_END", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
    answer = await recorded_answer(http, redis, thread_id, run_id)
    assert text_of(events) != answer and answer.startswith(text_of(events))  # a part streamed ...
    assert events[-2][1]["messages"][-1]["content"] == answer  # ... the whole answer in the closing snapshot


def _entry_order(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-"))


@pytest.mark.parametrize(
    ("last_entry", "ending"),
    [
        (
            entry_fields(ERROR, "run-1", 1, error="RuntimeError: model down"),
            {"type": "RUN_ERROR", "code": "RUN_FAILED", "message": "RuntimeError: model down"},
        ),
        (
            entry_fields(CANCELLED, "run-1", 1, reason="stopped by the user"),
            {"type": "RUN_FINISHED", "outcome": {"type": "cancelled"}},
        ),
    ],
)
async def test_a_failed_run_ends_with_run_error_and_a_stopped_one_is_cancelled(
    http: httpx.AsyncClient, redis: RedisStreamResponseHandler, last_entry: dict[str, str], ending: dict[str, Any]
) -> None:
    thread_id, run_id = new_ids()
    entries = [entry_fields(START, "run-1", 0, attempt="a1"), entry_fields("token", "run-1", 0, "Day 1"), last_entry]
    await write_entries(redis, thread_id, entries)
    await redis.redis.set(record_key(thread_id, run_id), json.dumps({"cursor": "0-0", "correlation_id": "run-1"}))

    events = await resume(http, thread_id, run_id)

    assert_valid_agui([event for _, event in events], max_warnings=0)
    assert [event["type"] for _, event in events][-2] == "TEXT_MESSAGE_END"
    assert events[-1][1].items() >= ending.items()
    stored = await redis.redis.get(record_key(thread_id, run_id))  # the outcome, kept for after the stream expired
    assert stored is not None and json.loads(stored)["outcome"] == last_entry["kind"]


async def test_a_run_the_worker_restarts_without_streaming_is_a_fresh_message(redis_url: str) -> None:
    """The streamed attempt fails part way; the host's unstreamed retry succeeds: a restart, then the answer."""
    with serve(redis_url, demo_worker(DEMO_MODEL_FAIL_AFTER_TOKENS="3", DEMO_MODEL_FAIL_STREAM_ONLY="1")) as retrying:
        async with httpx.AsyncClient(base_url=retrying.url, timeout=30) as http:
            thread_id, run_id = new_ids()
            events = await post_run(http, run_input(thread_id, run_id))

    assert_valid_agui([event for _, event in events], max_warnings=0)
    restarts = [n for n, (_, event) in enumerate(events) if event["type"] == "CUSTOM"]
    assert len(restarts) == 1
    before, after = events[: restarts[0]], events[restarts[0] + 1 :]
    assert len([e for _, e in before if e["type"] == "TEXT_MESSAGE_CONTENT"]) == 3
    assert "Oslo" in text_of(after)
    assert {e["messageId"] for _, e in before if "messageId" in e}.isdisjoint(e.get("messageId") for _, e in after)
    assert after[-1][1]["type"] == "RUN_FINISHED"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "the body must be JSON"),
        (b'["a list"]', "must be a JSON object"),
        (json.dumps({"threadId": "{thread}", "runId": "r1"}).encode(), "not a valid RunAgentInput: messages"),
        (json.dumps({**run_input("{thread}", "r1"), "messages": []}).encode(), "messages is empty"),
        (json.dumps({**run_input("{thread}", "r1"), "messages": [{"id": "m", "role": "robot"}]}).encode(), "valid"),
        (
            json.dumps(
                {**run_input("{thread}", "r1"), "messages": [{"id": "a", "role": "assistant", "content": "hi"}]}
            ),
            "no user message",
        ),
        (json.dumps(run_input("{thread}", "r1", "   ")).encode(), "the message is empty"),
        (json.dumps(run_input("../../etc", "r1")).encode(), "threadId is the session key"),
        (json.dumps(run_input("{thread}", "r 1")).encode(), "runId must be"),
    ],
)
async def test_bad_input_is_a_422_and_starts_nothing(
    http: httpx.AsyncClient, redis: RedisStreamResponseHandler, body: bytes | str, reason: str
) -> None:
    thread_id = f"thread-{uuid.uuid4().hex}"
    content = (body.decode() if isinstance(body, bytes) else body).replace("{thread}", thread_id)
    response = await http.post(AG_UI, content=content, headers={"Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert reason in error and "\n" not in error
    assert await redis.redis.keys(f"*{thread_id}*") == []  # no stream, no run record: nothing started


async def test_a_repeated_run_id_is_a_409_and_unknown_runs_and_bad_ids_are_refused(
    http: httpx.AsyncClient,
) -> None:
    thread_id, run_id = new_ids()
    await post_run(http, run_input(thread_id, run_id))

    again = await http.post(AG_UI, json=run_input(thread_id, run_id))
    assert again.status_code == 409 and f"{AG_UI}/{thread_id}/runs/{run_id}" in again.json()["error"]
    unknown = await http.get(f"{AG_UI}/{thread_id}/runs/no-such-run")
    assert unknown.status_code == 404
    bad_id = await http.get(f"{AG_UI}/{thread_id}/runs/{run_id}", headers={"Last-Event-ID": "1-2-3"})
    assert bad_id.status_code == 422 and "Last-Event-ID" in bad_id.json()["error"]
    future = f"{int(time.time() * 1000) + 86_400_000}-0.0"  # a day after the thread's newest entry
    past_the_end = await http.get(f"{AG_UI}/{thread_id}/runs/{run_id}", headers={"Last-Event-ID": future})
    assert past_the_end.status_code == 422 and "past the end" in past_the_end.json()["error"]  # not 200 and silence


async def connect(http: httpx.AsyncClient, thread_id: str) -> list:
    body = {"threadId": thread_id, "runId": f"join-{uuid.uuid4().hex}", "messages": []}  # what connectAgent() sends
    async with http.stream("POST", f"{AG_UI}/connect", json=body) as response:
        return await events_of(response)


def snapshots(events: list[tuple[str | None, dict]]) -> list[list[dict]]:
    return [event["messages"] for _, event in events if event["type"] == "MESSAGES_SNAPSHOT"]


async def test_every_run_opens_and_closes_with_the_threads_messages(http: httpx.AsyncClient) -> None:
    thread_id = f"thread-{uuid.uuid4().hex}"
    first = await post_run(http, run_input(thread_id, "r1"))
    second = await post_run(http, run_input(thread_id, "r2", "Plan a 1-day trip to Bergen"))

    for events in (first, second):
        assert_valid_agui([event for _, event in events], max_warnings=0)
        assert [event["type"] for _, event in events][:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
        assert [event["type"] for _, event in events][-2:] == ["MESSAGES_SNAPSHOT", "RUN_FINISHED"]
    (opening, closing), (opening_2, closing_2) = snapshots(first), snapshots(second)
    assert [m["role"] for m in opening] == ["user"] and opening[0]["content"] == "Plan a 2-day trip to Oslo"
    assert [m["role"] for m in closing] == ["user", "assistant", "tool", "tool", "assistant"]
    assert opening_2[:-1] == closing and opening_2[-1]["content"] == "Plan a 1-day trip to Bergen"
    assert closing_2[:5] == closing and len(closing_2) == 10
    # The streamed messages carry the ids the record gives them: the closing snapshot confirms, never replaces.
    streamed = {
        e.get("messageId") or e.get("parentMessageId") for _, e in first if e["type"].startswith(("TEXT", "TOOL"))
    }
    assert streamed - {None} == {m["id"] for m in closing[1:]}
    assert closing[-1]["content"] == text_of(first)
    assert [call["id"] for call in closing[1]["toolCalls"]] == [m["toolCallId"] for m in closing[2:4]]


async def test_joining_a_thread_after_its_run_ended_is_a_finished_run_with_the_history(
    http: httpx.AsyncClient,
) -> None:
    thread_id, run_id = new_ids()
    ran = await post_run(http, run_input(thread_id, run_id))

    joined = await connect(http, thread_id)

    assert_valid_agui([event for _, event in joined], max_warnings=0)
    assert [event["type"] for _, event in joined] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
    assert snapshots(joined) == snapshots(ran)[-1:]
    assert all(event_id is None for event_id, _ in joined)  # made from the record: no stream position to resume
    empty = await connect(http, f"thread-{uuid.uuid4().hex}")  # a thread nobody used: no messages, still a run
    assert snapshots(empty) == [[]]
    bad = await http.post(f"{AG_UI}/connect", json={"threadId": "../x", "runId": "j", "messages": []})
    assert bad.status_code == 422 and "threadId" in bad.json()["error"]


@pytest.mark.parametrize("outcome", ["done", "cancelled"])
async def test_a_resume_after_the_stream_expired_answers_the_recorded_outcome(
    http: httpx.AsyncClient, redis: RedisStreamResponseHandler, outcome: str
) -> None:
    thread_id, run_id = new_ids()
    ran = await post_run(http, run_input(thread_id, run_id))
    key = record_key(thread_id, run_id)
    stored = await redis.redis.get(key)
    assert stored is not None and json.loads(stored)["outcome"] == "done"  # noted when the stream showed the end
    await redis.redis.set(key, json.dumps({**json.loads(stored), "outcome": outcome}))  # as a Stop would have
    await redis.redis.delete(stream_key(thread_id))  # the stream expired

    events = await resume(http, thread_id, run_id, last_event_id=ran[3][0])

    assert_valid_agui([event for _, event in events], max_warnings=0)
    assert [event["type"] for _, event in events] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
    assert snapshots(events) == snapshots(ran)[-1:] and events[0][1]["runId"] == run_id
    assert events[-1][1].get("outcome", {"type": "done"})["type"] == outcome
