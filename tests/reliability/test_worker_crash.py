"""A worker killed mid-answer: its run is delivered again, and the conversation goes on.

Real processes throughout, with DEFAULT idle timeout and heartbeat: the embedded scheduler
(in this test process: it outlives the workers), a real Redis, `worker.py` and `client.py`.
The worker serving the answer is SIGKILLed a few tokens in; a NEW worker started afterwards
receives the run again. The reader must show the restart and then the complete answer (exit
0), the durable record must hold that answer once, and the next turn of the session must run.
`sample.py --crash-demo`, the one-command demonstration, is run as a user would.

Run it: `uv run pytest tests/reliability/test_worker_crash.py`
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from reliability.crash_demo import wait_for_tokens
from reliability.durable_record import recorded_state
from support.ports import free_port
from support.scheduler import connect_client
from support.sessions import new_session_key
from tests.conftest import ROOT, cli_environment, run_cli
from tests.terminal import Terminal
from tests.tutorial.test_cli import WorkerProcess


def test_a_killed_workers_run_is_delivered_to_a_new_worker_and_the_session_goes_on(
    scheduler_endpoint: str, redis_url: str, tmp_path: Path
) -> None:
    # Default STREAM_IDLE_TIMEOUT_SECONDS and STREAM_HEARTBEAT_SECONDS (cli_environment leaves them unset);
    # a realistic pace, so that the kill lands mid-answer.
    env = cli_environment(
        ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url, DEMO_MODEL_TOKEN_DELAY_MS="20"
    )
    first = WorkerProcess(env, tmp_path / "first-worker.log")  # the client starts meanwhile: the run waits for it
    session = new_session_key()
    client = subprocess.Popen(
        [sys.executable, "client.py", "--session", session, "-m", "Plan a 3-day trip to Rome", "--json"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    second: WorkerProcess | None = None
    try:
        correlation_id, pid = wait_for_tokens(redis_url, session, 10)
        assert pid == first.process.pid
        os.kill(pid, signal.SIGKILL)
        second = WorkerProcess(env, tmp_path / "second-worker.log")
        stdout, stderr = client.communicate(timeout=90)

        assert client.returncode == 0, stderr
        records = [json.loads(line) for line in stdout.splitlines()]
        restarts = [index for index, record in enumerate(records) if record.get("restart")]
        assert len(restarts) == 1 and restarts[0] > 10, stderr  # after the tokens the killed worker wrote
        assert "the run was delivered again after its worker stopped" in stderr
        answer = "".join(record["text"] for record in records[restarts[0] :])
        assert records[-1].get("done") and answer.startswith("# Your 3-day trip to Rome") and "Day 3" in answer

        state = recorded_state(connect_client(scheduler_endpoint, "default"), session)
        assert state is not None
        entries = [entry for entry in state.data.conversation_history if entry.correlation_id == correlation_id]
        assert [type(entry).__name__ for entry in entries] == ["DurableAgentStateRequest", "DurableAgentStateResponse"]
        recorded = state.try_get_agent_response(correlation_id)
        assert recorded is not None and recorded.text == answer

        next_turn = run_cli("client.py", "--session", session, "-m", "Plan a 2-day trip to Oslo", env=env, timeout=90)
        assert next_turn.returncode == 0, next_turn.stderr
        assert "Oslo" in next_turn.stdout and "Day 2" in next_turn.stdout
    finally:
        client.kill()
        first.process.kill()
        if second is not None:
            assert second.stop() == 0


def test_the_crash_demo_shows_a_restart_then_the_complete_answer() -> None:
    # Nothing configured, as a user runs it (the demo model at its own pace); private ports, so that
    # it never meets another test's services.
    ports = {"LOCAL_SCHEDULER_PORT": str(free_port()), "LOCAL_REDIS_PORT": str(free_port())}
    env = cli_environment(DEMO_MODEL_TOKEN_DELAY_MS="", **ports)
    result = run_cli("sample.py", "--crash-demo", env=env, timeout=150)

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    killed = next(index for index, line in enumerate(lines) if line.startswith("[crash-demo] killed worker"))
    restarted = next(index for index, line in enumerate(lines) if "[client] the answer restarted" in line)
    assert killed < restarted
    assert "[crash-demo] the durable record holds the first answer once, though it was started twice" in lines[-1]
    rome, oslo = result.stdout.split("# Your 3-day trip to Rome")[-1], result.stdout.split("# Your 2-day trip to Oslo")
    assert "Day 3" in rome and "Enjoy your trip!" in rome and len(oslo) == 2
    # The restarted answer starts a line of its own; before: "…A day-by-day plan for # Your 3-day trip to Rome".
    assert _lines_with("# Your 3-day trip to Rome", result.stdout) == ["# Your 3-day trip to Rome"] * 2, result.stdout
    # Its services stop with it: no "(continue it with --session)" for a conversation that cannot be continued.
    assert "continue it with --session" not in result.stderr


def test_on_a_terminal_the_crash_demos_lines_do_not_run_into_the_partial_answer() -> None:
    ports = {"LOCAL_SCHEDULER_PORT": str(free_port()), "LOCAL_REDIS_PORT": str(free_port())}
    demo = Terminal("sample.py", "--crash-demo", env=cli_environment(DEMO_MODEL_TOKEN_DELAY_MS="", **ports))
    try:
        assert demo.wait(timeout=150) == 0, demo.output
    finally:
        demo.close()

    shown = re.sub(r"[^\n]*\r\x1b\[K", "", demo.output)  # what "\r" and erase-line leave on screen (the indicator)
    # Before: "A day-by-day plan for [crash-demo] killed worker 1234 (SIGKILL) mid-answer; …"
    assert _lines_with("[crash-demo] killed worker", shown)[0].startswith("[crash-demo] killed worker"), shown
    assert _lines_with("[client] the answer restarted", shown)[0].startswith("[client] the answer restarted"), shown
    assert _lines_with("# Your 3-day trip to Rome", shown) == ["# Your 3-day trip to Rome"] * 2, shown


def _lines_with(text: str, output: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]
