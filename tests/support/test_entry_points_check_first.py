"""Every entry point checks every variable before it starts anything: one `error:` line, exit 2.

Before issue 10, worker.py and sample.py started Redis and the scheduler and only then rejected a
bad DEMO_MODEL_* value, web.py printed a traceback for `LOCAL_SCHEDULER_PORT=²` or
`ENDPOINT=http://[::1`, `LOG_LEVEL=bogus` was silently ignored, and scheduler_server.py read no
variable at all. Each entry point runs here as a user runs it, with nothing configured (so it
WOULD start a private Redis and the embedded scheduler, and announce them) and one bad value; all
five run at once to keep this quick. tests/support/test_environment_checks.py covers every
variable of .env.example against the check they all call.

    uv run pytest tests/support/test_entry_points_check_first.py -q
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from support.ports import free_port
from tests.conftest import cli_environment, run_cli

# entry point -> (variable, bad value): the failures issue 10 reported, one per entry point.
CASES = {
    "worker.py": ("DEMO_MODEL_FAIL_STREAM_ONLY", "maybe"),
    "sample.py": ("DEMO_MODEL_TOKEN_DELAY_MS", "99999999999"),
    "web.py": ("LOCAL_SCHEDULER_PORT", "²"),
    "client.py": ("LOG_LEVEL", "bogus"),
    "scheduler_server.py": ("ENDPOINT", "http://[::1"),
}


def run_with(script: str, name: str, value: str) -> subprocess.CompletedProcess[str]:
    # Free local ports: past the check, every entry point but client.py would start (and announce) services.
    env = cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()))
    env[name] = value
    arguments = {"web.py": ["--port", str(free_port())], "scheduler_server.py": ["--port", str(free_port())]}
    arguments |= {"worker.py": []}  # worker.py takes no options but --help
    arguments = arguments.get(script, ["-m", "hi"])
    return run_cli(script, *arguments, env=env, timeout=90)


def test_each_entry_point_rejects_a_bad_variable_before_starting_anything() -> None:
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        results = dict(zip(CASES, pool.map(lambda case: run_with(case[0], *case[1]), CASES.items()), strict=True))

    for script, (name, _) in CASES.items():
        result = results[script]
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2, f"{script}: {result.stderr}"
        assert len(error_lines) == 1 and name in error_lines[0], f"{script}: {result.stderr}"
        assert "Traceback" not in result.stderr, f"{script}: {result.stderr}"
        # Nothing started: no service announced itself, and nothing but the error line was said.
        assert result.stderr.strip().splitlines() == error_lines, f"{script}: {result.stderr}"
