"""`client.py --session KEY --history`, run as a user runs it, against two backends.

Two turns and a third stopped mid-answer, then `--history`: the two answers and the stopped turn,
marked cancelled, with the usage totals at the end. The same after the conversation's stream is
deleted from Redis: the durable record is the source. Backends: `worker.py` hosting the embedded
scheduler, and `scheduler_server.py` with a worker beside it. Bad usage and an unknown session
each say so in one line.

    uv run pytest tests/tutorial/test_history.py -n 0
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from cli.arguments import build_parser, validate_arguments
from redis_stream_response_handler import RedisStreamResponseHandler, stream_key
from reliability.stop_requests import stop_current_run
from support.config import load_settings
from support.errors import UsageError
from support.ports import free_port
from support.scheduler import connect_client
from tests.conftest import ROOT, cli_environment, run_cli
from tests.support.test_scale_out import SchedulerProcess
from tests.tutorial.test_cli import WorkerProcess, session_of

STOP_REASON = "stopped by test_history"


@dataclass
class Backend:
    env: dict[str, str]  # what a client.py needs to find the scheduler and Redis
    scheduler_endpoint: str
    redis_url: str


@pytest.fixture(scope="module", params=["embedded", "scheduler_server"])
def backend(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """worker.py at 20 ms a token (a stop lands mid-answer): it hosts the scheduler, or scheduler_server.py does."""
    logs = tmp_path_factory.mktemp(request.param)
    pace = {"DEMO_MODEL_TOKEN_DELAY_MS": "20", "REDIS_CONNECTION_STRING": redis_url}
    scheduler = None
    if request.param == "scheduler_server":
        scheduler = SchedulerProcess(free_port(), logs / "scheduler.log", cli_environment(**pace))
        endpoint, env = scheduler.endpoint, cli_environment(ENDPOINT=scheduler.endpoint, **pace)
    else:  # as in the README's two terminals
        port = free_port()
        endpoint, env = f"http://localhost:{port}", cli_environment(LOCAL_SCHEDULER_PORT=str(port), **pace)
    worker = WorkerProcess(env, logs / "worker.log")
    try:
        worker.wait_until_ready()
        yield Backend(env, endpoint, redis_url)
    finally:
        worker.stop()
        if scheduler is not None:
            scheduler.stop()


@pytest.fixture(scope="module")
def conversation(backend: Backend) -> tuple[str, list[str]]:
    """Two answered turns and a third stopped mid-answer: the session key and the two answers."""
    first = run_cli("client.py", "-m", "Plan a 2-day trip to Paris", env=backend.env)
    session = session_of(first.stderr)
    second = run_cli("client.py", "--session", session, "-m", "Make day 2 more relaxed", env=backend.env)
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    third = subprocess.Popen(
        [sys.executable, "client.py", "--session", session, "-m", "Plan a 3-day trip to Tokyo"], cwd=ROOT,
        env=backend.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert third.stdout is not None
    third.stdout.read(40)  # mid-answer
    # Stopped in-process, the way `client.py --cancel` stops it: a CLI that takes seconds to start on a busy
    # machine could miss the run (tests/reliability/test_cancellation.py and cli/cancel.py cover the command).
    status = asyncio.run(stop(backend, session))
    _, stderr = third.communicate(timeout=60)
    assert status == "cancelled" and third.returncode == 1, (status, stderr)
    assert f"the run was cancelled ({STOP_REASON})" in stderr
    return session, [first.stdout.strip(), second.stdout.strip()]


async def stop(backend: Backend, session: str) -> str:
    async with RedisStreamResponseHandler.from_url(backend.redis_url) as handler:
        scheduler = connect_client(backend.scheduler_endpoint, load_settings({}).taskhub)
        outcome = await stop_current_run(handler, scheduler, session, STOP_REASON, idle_timeout_seconds=20)
    return outcome.status


def test_history_prints_two_answers_and_marks_the_stopped_turn_cancelled(
    backend: Backend, conversation: tuple[str, list[str]]
) -> None:
    session, answers = conversation
    history = run_cli("client.py", "--session", session, "--history", env=backend.env)

    assert history.returncode == 0, history.stderr
    printed = history.stdout
    headings = [line for line in printed.splitlines() if line.startswith("=== turn ")]
    endings = [heading.split(": ", 1)[1].split(" (run ")[0] for heading in headings]
    assert endings == ["completed", "completed", f"cancelled: {STOP_REASON}"]
    assert printed.index("You: Plan a 2-day trip to Paris") < printed.index(answers[0])
    assert printed.index("You: Make day 2 more relaxed") < printed.index(answers[1])
    assert printed.index(answers[1]) < printed.index("You: Plan a 3-day trip to Tokyo")
    assert '[tool] get_weather_forecast(destination="Paris", days=2) → Weather forecast for Paris: Day 1:' in printed
    assert '[tool] get_weather_forecast(destination="Tokyo", days=3) →' in printed  # it ran before the stop
    stopped_turn = printed.split("You: Plan a 3-day trip to Tokyo")[1]
    assert f"[cancelled: {STOP_REASON}]" in stopped_turn and "Enjoy your trip!" not in stopped_turn
    usage = printed.strip().splitlines()[-1]
    assert usage.startswith("usage: ") and usage.endswith(" tokens in 3 turns"), usage


def test_history_is_the_same_after_the_stream_is_deleted(backend: Backend, conversation: tuple[str, list[str]]) -> None:
    session, _ = conversation
    before = run_cli("client.py", "--session", session, "--history", env=backend.env)
    with redis.Redis.from_url(backend.redis_url) as client:
        assert client.delete(stream_key(session)) == 1
    after = run_cli("client.py", "--session", session, "--history", env=backend.env)

    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout and f"[cancelled: {STOP_REASON}]" in after.stdout


def test_an_unknown_session_says_so_in_one_line(backend: Backend) -> None:
    result = run_cli("client.py", "--session", "never-seen-session", "--history", env=backend.env)

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[")]  # not the [redis] ... lines
    assert len(lines) == 1 and lines[0].startswith("error: unknown session never-seen-session")
    assert result.stdout == ""


def test_history_without_a_session_is_one_line_and_exit_2_before_anything_starts() -> None:
    # Nothing answers on these ports: a check made after looking for services would fail differently.
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()))
    result = run_cli("client.py", "--history", env=env)

    assert result.returncode == 2
    assert (
        result.stderr == "error: --history prints one recorded conversation: use it with --session (and --json) only\n"
    )


@pytest.mark.parametrize(
    "arguments",
    [
        ["--history", "--session", "abc", "-m", "hi"],
        ["--history", "--session", "abc", "--cursor", "0-0"],
        ["--history", "--session", "abc", "--cancel"],
        ["--history", "--session", "bad key"],
    ],
)
def test_history_with_another_action_or_a_bad_key_is_a_usage_error(arguments: list[str]) -> None:
    args = build_parser("client.py", "", can_cancel=True).parse_args(arguments)

    with pytest.raises(UsageError, match="session"):
        validate_arguments(args)
