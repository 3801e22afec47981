"""A scripted walk through every command in the README, as a new user types them.

    uv run python -m tests.readme_walk                     # about 2-4 minutes
    uv run python -m tests.readme_walk --with-benchmarks   # plus `python -m benchmarks --quick`

Each command runs with `uv run` from the project folder, on a real terminal where the README has
you type or press Ctrl+C (tests/terminal.py), and must print no traceback and no ERROR line. The
services get free ports of their own (LOCAL_SCHEDULER_PORT, LOCAL_REDIS_PORT, --port) so the walk
never meets, or disturbs, something already running on 8080, 6379 or 8000; otherwise nothing is
configured. Skipped: `uv run pytest` (this walk is not part of it, but it would run itself
recursively otherwise) and `docker compose` (no Docker here). Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from support.ports import free_port
from tests.conftest import ROOT, cli_environment
from tests.terminal import Terminal

UV = os.environ.get("UV") or shutil.which("uv") or "uv"
_PROBLEM = re.compile(r"Traceback \(most recent call last\)|^ERROR\b|\bERROR [\w.]+:", re.MULTILINE)


class Walk:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.failures: list[str] = []
        self.terminals: list[Terminal] = []

    def check(self, step: str, output: str, exit_code: int | None, expected: int = 0) -> str:
        problems = [] if exit_code == expected else [f"exit {exit_code}, expected {expected}"]
        if match := _PROBLEM.search(output):
            problems.append(f"printed {match.group(0)!r}")
        print(f"{'FAIL' if problems else 'ok  '} {step}" + (f": {'; '.join(problems)}" if problems else ""))
        if problems:
            self.failures.append(f"{step}: {'; '.join(problems)}\n{output[-2000:]}")
        return output

    def run(self, command: str, expected: int = 0, **extra_env: str) -> str:
        """One README command line, run as typed (`uv run ...`); its stdout and stderr together."""
        result = subprocess.run(
            command, shell=True, cwd=ROOT, env={**self.env, **extra_env}, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
        return self.check(command, result.stdout + result.stderr, result.returncode, expected)

    def finish(self, step: str, terminal: Terminal, expected: int = 0) -> str:
        exit_code = terminal.wait()  # first: the output is complete only once the program has ended
        return self.check(step, terminal.output, exit_code, expected)

    def terminal(self, *arguments: str, **extra_env: str) -> Terminal:
        terminal = Terminal("run", *arguments, env={**self.env, **extra_env}, program=UV)
        self.terminals.append(terminal)
        return terminal

    def close(self) -> None:
        for terminal in self.terminals:
            terminal.close()


def two_terminals(walk: Walk) -> None:
    worker = walk.terminal("worker.py")
    worker.read_until("TravelPlanner is ready", timeout=120)
    first = walk.run('uv run client.py -m "Plan a 2-day trip to Paris"')
    session = first.split("[client] session ", 1)[1].split()[0]
    walk.run(f'uv run client.py --session {session} -m "Make day 2 more relaxed"')
    walk.run(f"uv run client.py --session {session} --history")
    as_json = walk.run('uv run client.py -m "Plan a 1-day trip to Oslo" --json')
    records = [json.loads(line) for line in as_json.splitlines() if line.startswith("{")]
    cursor = records[len(records) // 2]["entry_id"]
    walk.run(f"uv run client.py --session {records[0]['session']} --cursor {cursor}")
    walk.run('uv run client.py -m "Plan a 2-day trip to Rome" --verify')
    interactive(walk)
    ctrl_c_while_streaming(walk)
    worker.press_ctrl_c()
    walk.finish("Ctrl+C in `uv run worker.py`", worker)


def interactive(walk: Walk) -> None:
    client = walk.terminal("client.py")
    client.read_until("You [", timeout=120)
    client.type("Plan a 2-day trip to Lisbon\n")
    client.read_until("You (empty line to quit)", timeout=120)
    client.type("Make day 2 more relaxed\n")
    client.read_until("As you asked, day 2", timeout=120)
    client.read_until("You (empty line to quit)", timeout=120)
    client.type("\n")
    walk.finish("uv run client.py (the prompt, two turns, an empty line)", client)
    at_prompt = walk.terminal("client.py")
    at_prompt.read_until("You [", timeout=120)
    at_prompt.press_ctrl_c()
    walk.finish("uv run client.py, Ctrl+C at the prompt", at_prompt, expected=130)


def ctrl_c_while_streaming(walk: Walk) -> None:
    client = walk.terminal("client.py", "-m", "Plan a 7-day trip to Kyoto", DEMO_MODEL_TOKEN_DELAY_MS="30")
    client.read_until("## Day 2", timeout=120)
    client.press_ctrl_c()
    output = walk.finish("uv run client.py, Ctrl+C while it streams", client, expected=130)
    resume = output.split("resume with: ", 1)[1].split("\n", 1)[0].strip()
    walk.run(resume)


def browser_path(walk: Walk) -> None:
    port = free_port()
    web = walk.terminal("web.py", "--port", str(port))
    web.read_until("[web] open", timeout=120)
    base = f"localhost:{port}/agents/TravelPlanner"
    body = json.dumps({"message": "Plan a 2-day trip to Oslo"})
    started = json.loads(walk.run(f"curl -s -X POST {base}/run -H 'Content-Type: application/json' -d '{body}'"))
    session, correlation_id, cursor = started["session"], started["correlation_id"], started["cursor"]
    events = walk.run(f'curl -sN "{base}/stream/{session}?cursor={cursor}&correlation_id={correlation_id}"')
    middle = re.findall(r"^id: (\S+)", events, re.MULTILINE)[3]
    walk.run(f"curl -sN -H 'Last-Event-ID: {middle}' \"{base}/stream/{session}?correlation_id={correlation_id}\"")
    walk.run(f"curl -s {base}/answer/{session}/{correlation_id}")
    web.press_ctrl_c()
    walk.finish("Ctrl+C in `uv run web.py`", web)


def scale_out(walk: Walk) -> None:
    port = free_port()
    scheduler = walk.terminal("scheduler_server.py", "--port", str(port))
    scheduler.read_until("ready on", timeout=120)
    endpoint = f"http://localhost:{port}"
    worker = walk.terminal("worker.py", ENDPOINT=endpoint)
    worker.read_until("TravelPlanner is ready", timeout=120)
    walk.run('uv run client.py -m "Plan a 2-day trip to Rome"', ENDPOINT=endpoint)
    for name, terminal in (("worker.py", worker), ("scheduler_server.py", scheduler)):
        terminal.press_ctrl_c()
        walk.finish(f"Ctrl+C in `uv run {name}` (scale-out)", terminal)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every README command; no traceback, no ERROR line.")
    parser.add_argument("--with-benchmarks", action="store_true", help="also `python -m benchmarks --quick`")
    args = parser.parse_args()
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()))
    env["DEMO_MODEL_TOKEN_DELAY_MS"] = ""  # the default pace, as a user gets it
    walk = Walk(env)
    started = time.monotonic()
    steps: list[Callable[[Walk], None]] = [two_terminals, browser_path, scale_out]
    try:
        walk.run("uv run sample.py")
        walk.run('uv run sample.py -m "Plan a 2-day trip to Paris" --json')
        walk.run('uv run sample.py -m "Plan a 2-day trip to Paris" | head -2', expected=0)  # the shell: head's 0
        walk.run("uv run sample.py", expected=2, REDIS_STREAM_TTL_MINUTES="0")
        observed = walk.run(
            'uv run sample.py -m "Plan a 1-day trip to Rome"',
            ENABLE_INSTRUMENTATION="true",
            ENABLE_CONSOLE_EXPORTERS="true",
        )
        if '"agent_stream.read"' not in observed or "time_to_first_chunk" not in observed:
            walk.failures.append("Observing it: no agent_stream.read span or time_to_first_chunk metric printed")
        for step in steps:
            step(walk)
        if args.with_benchmarks:
            walk.run(f"uv run python -m benchmarks --quick --out {ROOT / 'test-artifacts' / 'bench'}")
    finally:
        walk.close()
    print(f"{len(walk.failures)} failed, {time.monotonic() - started:.0f} s")
    for failure in walk.failures:
        print(f"\n--- {failure}", file=sys.stderr)
    return 1 if walk.failures else 0


if __name__ == "__main__":
    sys.exit(main())
