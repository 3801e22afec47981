"""Tool activity and Stop on the command line, run as a user runs them: `python worker.py`, `client.py`, `sample.py`.

The two-terminal flow of the README plus a third terminal: a client tails a run, `client.py
--session KEY --cancel` stops it, the tailing client ends with `cancelled` and exit 1, and the next
turn of the session completes. The worker runs with default settings except a slower demo model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cli.arguments import build_parser, validate_arguments
from redis_stream_response_handler import stream_key
from support.errors import UsageError
from support.ports import free_port
from tests.conftest import ROOT, cli_environment, run_cli
from tests.tutorial.test_cli import WorkerProcess, start_worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """100 ms a token: a Tokyo plan streams for about 25 s, so a stop lands mid-answer."""
    running = start_worker(tmp_path_factory.mktemp("activity-worker"), DEMO_MODEL_TOKEN_DELAY_MS="100")
    yield running
    running.stop()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_tools_come_before_the_first_token(records: list[dict[str, Any]]) -> None:
    kinds = [r["kind"] for r in records]
    first_token = kinds.index("token")
    assert "tool_call" in kinds[:first_token] and "tool_result" in kinds[:first_token]
    call = next(r for r in records if r["kind"] == "tool_call")
    assert call["name"] and call["call_id"] and isinstance(json.loads(call["arguments"]), dict)
    result = next(r for r in records if r["kind"] == "tool_result")
    assert result["call_id"] and result["result"]


def test_cancel_from_a_third_terminal_ends_the_tailing_client_and_the_session_goes_on(worker: WorkerProcess) -> None:
    tail = subprocess.Popen(
        [sys.executable, "client.py", "-m", "Plan a 3-day trip to Tokyo", "--json"], cwd=ROOT, env=worker.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tail.stdout is not None and tail.stderr is not None
    head: list[dict[str, Any]] = []
    for line in tail.stdout:  # until the answer is under way
        head.append(json.loads(line))
        if head[-1]["kind"] == "token":
            break
    session = head[0]["session"]

    cancel = run_cli("client.py", "--session", session, "--cancel", env=worker.env)
    rest = json_lines(tail.stdout.read())
    tail_stderr = tail.stderr.read()
    tail.wait(timeout=120)

    assert cancel.returncode == 0, cancel.stderr
    assert "[client] cancelled run" in cancel.stderr
    assert tail.returncode == 1, tail_stderr
    assert "[client] the run was cancelled" in tail_stderr and "Traceback" not in tail_stderr
    records = head + rest
    assert all("kind" in r for r in records)
    assert records[-1]["kind"] == "cancelled" and records[-1]["reason"]
    assert_tools_come_before_the_first_token(records)
    assert_nothing_of_the_run_follows_its_cancelled_marker(worker, session)

    again = run_cli("client.py", "--session", session, "--cancel", env=worker.env)
    assert again.returncode == 1 and "no run in progress" in again.stderr, again.stderr

    next_turn = run_cli("client.py", "--session", session, "-m", "Plan a 1-day trip to Oslo", "--json", env=worker.env)
    assert next_turn.returncode == 0, next_turn.stderr
    turn = json_lines(next_turn.stdout)
    assert all("kind" in r for r in turn) and turn[-1]["kind"] == "done" and turn[-1]["done"] is True
    assert turn[-1]["usage"]["input_tokens"] > 0 and turn[-1]["usage"]["output_tokens"] > 0
    assert_tools_come_before_the_first_token(turn)
    assert next_turn.stderr.count("[tool] ") == 2

    unknown = run_cli("client.py", "--session", "no-such-session", "--cancel", env=worker.env)
    assert unknown.returncode == 2 and "unknown session no-such-session" in unknown.stderr, unknown.stderr


def test_a_stopped_run_whose_stream_expired_is_reported_cancelled_from_the_record(worker: WorkerProcess) -> None:
    tail = subprocess.Popen(
        [sys.executable, "client.py", "-m", "Plan a 7-day trip to Lisbon", "--json"], cwd=ROOT, env=worker.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tail.stdout is not None
    head: list[dict[str, Any]] = []
    for line in tail.stdout:  # until the answer is under way
        head.append(json.loads(line))
        if head[-1]["kind"] == "token":
            break
    session, cursor = head[0]["session"], head[-1]["entry_id"]
    cancel = run_cli("client.py", "--session", session, "--cancel", env=worker.env)
    rest = json_lines(tail.stdout.read())
    tail.wait(timeout=120)
    assert cancel.returncode == 0 and rest[-1]["kind"] == "cancelled", cancel.stderr
    with redis.Redis(port=int(worker.env["LOCAL_REDIS_PORT"]), decode_responses=True) as client:
        newest: list[tuple[str, dict[str, str]]] = client.xrevrange(stream_key(session), count=1)  # type: ignore[assignment]
        run = newest[0][1]["correlation_id"]  # the cancelled marker's run
        assert client.delete(stream_key(session)) == 1  # what expiry (or an emptied Redis) does

    reattached = run_cli("client.py", "--session", session, "--cursor", cursor, env=worker.env)

    assert reattached.returncode == 1, reattached.stderr
    said = [line for line in reattached.stderr.splitlines() if not line.startswith(("[redis]", "[scheduler]"))]
    expected = f"[client] the stream is gone; the agent's record says run {run} was cancelled"
    assert said == [f"{expected} (cancelled with client.py --cancel)"], reattached.stderr
    assert reattached.stdout == ""


def assert_nothing_of_the_run_follows_its_cancelled_marker(worker: WorkerProcess, session: str) -> None:
    time.sleep(1)  # a worker that kept going would have written more tokens by now (100 ms each)
    with redis.Redis(port=int(worker.env["LOCAL_REDIS_PORT"]), decode_responses=True) as client:
        entries: list[tuple[str, dict[str, str]]] = client.xrange(stream_key(session))  # type: ignore[assignment]
    kinds = [fields["kind"] for _, fields in entries if fields["kind"] != "heartbeat"]
    assert kinds[-1] == "cancelled" and kinds.count("cancelled") == 1


def test_sample_shows_two_tool_lines_before_the_itinerary() -> None:
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "sample.py", "-m", "Plan a 2-day trip to Oslo"], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    tool_lines = [n for n, line in enumerate(lines) if line.startswith("[tool] ")]
    assert len(tool_lines) == 2, result.stdout
    assert 'get_weather_forecast(destination="Oslo", days=2) → Weather forecast for Oslo: Day 1:' in result.stdout
    assert max(tool_lines) < lines.index("# Your 2-day trip to Oslo")


def test_cancel_with_a_message_is_a_usage_error_before_anything_starts() -> None:
    result = run_cli("client.py", "--session", "abc", "--cancel", "-m", "hi", env=cli_environment())

    assert result.returncode == 2
    assert result.stderr.startswith("error: --cancel") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("arguments", [["--cancel"], ["--cancel", "--session", "abc", "--cursor", "1-0"]])
def test_cancel_without_a_session_or_with_a_cursor_is_a_usage_error(arguments: list[str]) -> None:
    args = build_parser("client.py", "Ask the TravelPlanner.", can_cancel=True).parse_args(arguments)

    with pytest.raises(UsageError, match=r"--cancel .* with --session only"):
        validate_arguments(args)
