"""The crash demo: a worker is killed mid-answer, and its run is delivered again to another worker.

    uv run sample.py --crash-demo
    uv run sample.py --crash-demo -m "Plan a 5-day trip to Lisbon"

This process hosts the scheduler and Redis (embedded, or the ones you configured), so they
outlive the workers, as `scheduler_server.py` does. It starts two `worker.py` processes and runs
`client.py`, whose output you see as is. A few tokens into the answer it kills (SIGKILL) the
worker serving it, named by the answer's start entry. The scheduler delivers the run again to
the other worker: the client prints `the answer restarted …`, then the complete answer, and
exits 0. A second turn in the same session shows the conversation still takes runs, and the
durable record (the agent entity's state) is checked to hold the first answer exactly once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO, cast

import redis

from redis_stream_response_handler import MARKERS_THAT_END_A_RUN, START, TOKEN, stream_key
from reliability.durable_record import recorded_state
from support.config import check_environment
from support.console import EXIT_OK, EXIT_RUN_FAILED, announce, fail, setup_logging
from support.errors import UsageError
from support.private_redis import dying_with_this_process
from support.scheduler import connect_client
from support.services import Services, provide_services
from support.sessions import new_session_key
from support.validation import check_message

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MESSAGE = "Plan a 3-day trip to Rome"
NEXT_MESSAGE = "Now plan a 2-day trip to Oslo"
KILL_AFTER_TOKENS = 10
WORKERS = 2
Reply = list[tuple[str, list[tuple[str, dict[str, str]]]]]  # XREAD's answer for one stream


def run_crash_demo(args: argparse.Namespace) -> int:
    """Two workers, one client, one SIGKILL: the exit status is the client's, then the checks'."""
    if args.session is not None or args.cursor is not None or args.json or args.verify:
        raise UsageError("--crash-demo runs its own session and takes only -m")
    message = check_message(args.message) if args.message is not None else DEFAULT_MESSAGE
    setup_logging()  # the embedded scheduler logs each re-delivery as a warning
    settings = check_environment()  # every variable, before anything starts
    with ExitStack() as stack:
        services = provide_services(settings, stack, role="sample")
        env = {**os.environ, "ENDPOINT": services.scheduler_endpoint, "REDIS_CONNECTION_STRING": services.redis_url}
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-demo-")))
        workers = [stack.enter_context(WorkerProcess(env, logs / f"worker-{n}.log")) for n in range(WORKERS)]
        for worker in workers:
            worker.wait_until_ready()
        session = new_session_key()
        pids = [worker.pid for worker in workers]
        announce(
            "crash-demo", f"workers {pids} ready; the one serving the answer dies after {KILL_AFTER_TOKENS} tokens"
        )
        client = subprocess.Popen(_client_command(session, message), cwd=ROOT, env=env)
        try:
            correlation_id, victim = wait_for_tokens(services.redis_url, session, KILL_AFTER_TOKENS)
            if victim not in pids:  # never kill a process this demo did not start
                return fail(f"the run went to worker {victim}, not one of {pids}: stop other workers on this scheduler")
            os.kill(victim, signal.SIGKILL)
            announce_on_its_own_line(f"killed worker {victim} (SIGKILL) mid-answer; the scheduler delivers it again")
            if (exit_code := client.wait()) != EXIT_OK:
                return exit_code
        finally:
            if client.poll() is None:
                client.kill()
        announce("crash-demo", "the session still takes new turns:")
        if (exit_code := subprocess.run(_client_command(session, NEXT_MESSAGE), cwd=ROOT, env=env).returncode) != 0:
            return exit_code
        return check_record(services, settings.taskhub, session, correlation_id)


def announce_on_its_own_line(message: str) -> None:
    """A `[crash-demo]` line written while the client's answer is mid-line.

    The client writes the answer to the stdout it shares with this process. Where stdout and
    stderr are one file (a terminal, `2>&1`), a status line would continue the partial answer's
    line: it starts a line of its own instead, the break and the line in one write (CI saw the
    killed worker's last word in between: "plan \\nfor [crash-demo] killed …"). Words the client
    prints after it follow on the next line; the client ends that line before its restart notice.
    """
    announce("crash-demo", message, after_a_partial_line=_same_file(sys.stdout, sys.stderr))


def _same_file(first: TextIO, second: TextIO) -> bool:
    try:
        one, other = os.fstat(first.fileno()), os.fstat(second.fileno())
    except (OSError, ValueError):  # closed, or not a real file (a test's capture)
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


class WorkerProcess:
    """`python worker.py`, stopped with this process whatever happens; its status lines go to `log`."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        command = dying_with_this_process([sys.executable, str(ROOT / "worker.py")])
        with log.open("w") as output:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=output)
        self.pid = self.process.pid

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "TravelPlanner is ready" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.pid} did not start: {self.log.read_text().strip()[-300:]}")
            time.sleep(0.1)


def wait_for_tokens(redis_url: str, session: str, count: int, timeout: float = 60) -> tuple[str, int]:
    """Once `count` tokens of the session's first run are in its stream: (correlation id, worker pid)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10)
    cursor, start, tokens = "0-0", None, 0
    deadline = time.monotonic() + timeout
    try:
        while tokens < count or start is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the answer did not reach {count} tokens within {timeout:g}s")
            reply = cast(Reply, client.xread({stream_key(session): cursor}, block=1000) or [])
            for entry_id, fields in reply[0][1] if reply else []:
                cursor, kind = entry_id, fields.get("kind")
                if kind in MARKERS_THAT_END_A_RUN:
                    raise UsageError(f"the answer ended after {tokens} tokens, before the kill: ask for a longer trip")
                start = fields if start is None and kind == START else start
                tokens += kind == TOKEN
    finally:
        client.close()
    return start["correlation_id"], int(start["worker"].rsplit(":", 1)[1])


def check_record(services: Services, taskhub: str, session: str, correlation_id: str) -> int:
    """The durable record holds the first run's request and answer once each, however often it ran."""
    scheduler = connect_client(services.scheduler_endpoint, taskhub)
    state = recorded_state(scheduler, session)
    history = state.data.conversation_history if state is not None else []
    entries = [type(entry).__name__ for entry in history if entry.correlation_id == correlation_id]
    if entries != ["DurableAgentStateRequest", "DurableAgentStateResponse"]:
        problem = f"the durable record holds {entries} for the first run, not one request and one answer"
        return fail(problem, EXIT_RUN_FAILED)
    announce("crash-demo", "the durable record holds the first answer once, though it was started twice")
    return EXIT_OK


def _client_command(session: str, message: str) -> list[str]:
    return [sys.executable, str(ROOT / "client.py"), "--session", session, "-m", message]
