"""The command lines, run as a user runs them: `python worker.py`, `python client.py`, `python sample.py`.

The worker here is started with nothing configured, on ports of its own, so it
hosts the embedded scheduler and starts a private Redis server, exactly as in
the README's two-terminal flow; the client finds both by those ports.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ports import free_port
from tests.conftest import ROOT, cli_environment, run_cli


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=log.open("w"),
        )  # fmt: skip

    def wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "TravelPlanner is ready" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker.py did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_worker(tmp_path: Path, **overrides: str) -> WorkerProcess:
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()), **overrides)
    worker = WorkerProcess(env, tmp_path / f"worker-{len(list(tmp_path.iterdir()))}.log")
    worker.wait_until_ready()
    return worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    running = start_worker(tmp_path_factory.mktemp("worker"))
    yield running
    assert running.stop() == 0, "worker.py must exit 0 on SIGTERM"


def session_of(stderr: str) -> str:
    return stderr.split("[client] session ", 1)[1].split()[0]


def test_the_worker_announces_the_embedded_services_it_started(worker: WorkerProcess) -> None:
    log = worker.log.read_text()
    assert "[scheduler] started the embedded in-memory Durable Task scheduler" in log
    assert "[redis] started a private Redis server" in log
    assert "[model] using the offline demo model" in log


def test_client_streams_an_itinerary_and_exits_0(worker: WorkerProcess) -> None:
    result = run_cli("client.py", "-m", "Plan a 2-day trip to Paris", env=worker.env)

    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and "Day 2" in result.stdout
    assert "Traceback" not in result.stderr


def test_json_output_is_one_object_per_chunk_ending_with_done(worker: WorkerProcess) -> None:
    result = run_cli("client.py", "-m", "Plan a 1-day trip to Oslo", "--json", env=worker.env)

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1]["done"] is True
    assert {"session", "entry_id", "sequence", "text"} <= records[0].keys()
    numbered = records[1:-1]  # between the start and done markers: tool entries, then tokens, one counter
    assert records[0]["start"] is True and [r["sequence"] for r in numbered] == list(range(len(numbered)))
    assert "Oslo" in "".join(r["text"] for r in numbered)


def test_second_turn_with_session_streams_only_its_own_answer(worker: WorkerProcess) -> None:
    first = run_cli("client.py", "-m", "Plan a 2-day trip to Rome", env=worker.env)
    session = session_of(first.stderr)
    second = run_cli("client.py", "--session", session, "-m", "Plan a 1-day trip to Vienna", env=worker.env)

    assert second.returncode == 0, second.stderr
    assert "Vienna" in second.stdout and "Rome" not in second.stdout


def test_cursor_reattaches_and_prints_only_what_follows(worker: WorkerProcess) -> None:
    first = run_cli("client.py", "-m", "Plan a 2-day trip to Madrid", "--json", env=worker.env)
    records = [json.loads(line) for line in first.stdout.splitlines()]
    tokens = [r for r in records if r["text"]]
    cursor = tokens[9]["entry_id"]

    resumed = run_cli("client.py", "--session", records[0]["session"], "--cursor", cursor, env=worker.env)

    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.rstrip("\n") == "".join(r["text"] for r in tokens[10:])


@pytest.fixture(scope="module")
def slow_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A model at a realistic pace (30 ms a token), so a Ctrl+C lands mid-answer."""
    running = start_worker(tmp_path_factory.mktemp("slow-worker"), DEMO_MODEL_TOKEN_DELAY_MS="30")
    yield running
    running.stop()


def test_ctrl_c_prints_the_command_that_resumes_without_loss(slow_worker: WorkerProcess) -> None:
    worker = slow_worker
    client = subprocess.Popen(
        [*CTRL_C_AS_IN_A_TERMINAL, sys.executable, "client.py", "-m", "Plan a 3-day trip to Kyoto"], cwd=ROOT,
        env=worker.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None
    head = client.stdout.read(40)  # some tokens have arrived
    client.send_signal(signal.SIGINT)
    rest_of_stdout = client.stdout.read()  # not communicate(): it would skip what read(40) buffered
    assert client.stderr is not None
    stderr = client.stderr.read()
    client.wait(timeout=30)
    printed = head + rest_of_stdout

    assert client.returncode == 130, (stderr, printed)
    hint = stderr.split("resume with: ", 1)[1].strip().split()
    assert hint[:3] == ["uv", "run", "client.py"]
    resumed = run_cli(*hint[2:], env=worker.env)

    assert resumed.returncode == 0, resumed.stderr
    full = run_cli("client.py", "--session", hint[4], "--cursor", "0-0", env=worker.env)
    assert printed.rstrip("\n") + resumed.stdout.rstrip("\n") == full.stdout.rstrip("\n")


# A test runner started in the background (or under `uv run`) may pass SIGINT on ignored or blocked;
# a terminal's Ctrl+C is neither. This prefix resets both, then execs the command. (Not a preexec_fn:
# Python code between fork and exec can deadlock in a process that has gRPC threads, as this one has.)
CTRL_C_AS_IN_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); os.execv(sys.argv[1], sys.argv[1:])",
]


def test_sample_runs_with_nothing_configured_on_a_machine_without_services(tmp_path: Path) -> None:
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()))
    result = run_cli("sample.py", "-m", "Plan a 3-day trip to Tokyo", env=env)

    assert result.returncode == 0, result.stderr
    assert "Tokyo" in result.stdout and "Day 3" in result.stdout
    status_lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert any(line.startswith("[scheduler] started the embedded") for line in status_lines)
    assert any(line.startswith("[redis] started a private Redis server") for line in status_lines)
    assert any(line.startswith("[model] using the offline demo model") for line in status_lines)


def test_a_failing_model_exits_1_with_the_error_text(tmp_path: Path) -> None:
    failing = start_worker(tmp_path, DEMO_MODEL_FAIL_AFTER_TOKENS="5", STREAM_IDLE_TIMEOUT_SECONDS="60")
    try:
        result = run_cli("client.py", "-m", "Plan a 2-day trip to Paris", env=failing.env)
    finally:
        failing.stop()

    assert result.returncode == 1
    assert "Demo model failure after 5 tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_worker_running_is_reported_by_the_idle_timeout(redis_url: str, scheduler_endpoint: str) -> None:
    env = cli_environment(
        ENDPOINT=scheduler_endpoint,
        REDIS_CONNECTION_STRING=redis_url,
        STREAM_IDLE_TIMEOUT_SECONDS="1",
        STREAM_HEARTBEAT_SECONDS="0.5",  # at most half the idle timeout (support/config.py)
    )
    result = run_cli("client.py", "-m", "Plan a trip to Bern", env=env)

    assert result.returncode == 1
    assert "no answer started within 1s" in result.stderr


@pytest.mark.parametrize(
    ("args", "env_overrides", "message"),
    [
        (["--session", "abc", "--cursor", "yesterday"], {}, "cursor must be a Redis stream entry id"),
        (["--cursor", "1-0"], {}, "--cursor needs --session"),
        (["-m", "   "], {}, "the message is empty"),
        (["--session", "../etc"], {}, "session key must be"),
        (["-m", "hi"], {"REDIS_STREAM_TTL_MINUTES": "0"}, "REDIS_STREAM_TTL_MINUTES must be a whole number"),
        (["-m", "hi"], {"STREAM_IDLE_TIMEOUT_SECONDS": "-1"}, "STREAM_IDLE_TIMEOUT_SECONDS must be"),
        (["-m", "hi"], {"ENDPOINT": "nonsense"}, "ENDPOINT must be an http://"),
        (
            ["-m", "hi"],
            {"REDIS_CONNECTION_STRING": "redis://:pw@127.0.0.1:1"},
            "nothing usable answers at redis://:***@",
        ),
    ],
)
@pytest.mark.parametrize("script", ["client.py", "sample.py"])
def test_usage_and_configuration_errors_exit_2_with_one_line(
    script: str, args: list[str], env_overrides: dict[str, str], message: str
) -> None:
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()), **env_overrides)
    result = run_cli(script, *args, env=env, timeout=60)

    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr and "pw@" not in result.stderr


def test_client_alone_says_to_start_the_worker(tmp_path: Path) -> None:
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()))
    result = run_cli("client.py", "-m", "hi", env=env)

    assert result.returncode == 2
    assert "start `uv run worker.py`" in result.stderr


def test_an_explicit_scheduler_that_does_not_answer_is_an_error_not_a_fallback() -> None:
    env = cli_environment(ENDPOINT=f"http://localhost:{free_port()}")
    result = run_cli("sample.py", "-m", "hi", env=env)

    assert result.returncode == 2
    assert "nothing answers at ENDPOINT=" in result.stderr
    assert "[scheduler] started" not in result.stderr


def test_on_a_terminal_the_client_prompts_and_keeps_the_conversation(worker: WorkerProcess) -> None:
    leader, follower = pty.openpty()  # stdin is a terminal; stdout and stderr stay pipes
    client = subprocess.Popen(
        [sys.executable, "client.py"], cwd=ROOT, env=worker.env,
        stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(follower)
    # Typed ahead: Enter (the default message), a second turn, then an empty line to quit.
    os.write(leader, b"\nNow plan a 1-day trip to Oslo\n\n")
    stdout, stderr = client.communicate(timeout=120)
    os.close(leader)

    assert client.returncode == 0, stderr
    assert "Tokyo" in stdout and "Oslo" in stdout  # the default message, then the typed one
    assert stderr.count("You [") == 1 and stderr.count("You (empty line to quit)") == 2
    assert "You [" not in stdout and "empty line to quit" not in stdout  # prompts never mix with the answer
