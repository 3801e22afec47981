"""Every "Try it" command in a module's docstring runs, and prints what it promises.

The commands are found, not listed: a module whose docstring has a "Try it" section is covered as
soon as it is written. Each runs from the project folder as a reader types it, with `uv run` being
this interpreter (like `run_cli`), and with the tests' private Redis and scheduler as the configured
ones (REDIS_CONNECTION_STRING, ENDPOINT), so nothing on localhost:6379 or :8080 is touched.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from typing import NamedTuple

import pytest

from tests.conftest import ROOT, cli_environment

# A "Try it" section runs until a blank line followed by unindented text (the next paragraph).
_SECTION = re.compile(r"^Try it\b.*?(?=\n\n(?! )|\Z)", re.DOTALL | re.MULTILINE)
# A command in backticks in the prose: `uv run ...`, perhaps after VARIABLE=value assignments.
_INLINE = re.compile(r"`((?:[A-Z_]+=\S+ )*uv run [^`]+)`")
_UV_RUN = re.compile(r"\buv run (?:python )?")
_PROBLEM = re.compile(r"Traceback \(most recent call last\)|^ERROR\b", re.MULTILINE)


class Expected(NamedTuple):
    output: str  # a piece of what the command prints (stdout and stderr together)
    exit_code: int = 0


# What each module's example must print. One not listed here must exit 0 and print something.
EXPECTED = {
    "agents.py": Expected("# Your 3-day trip to Tokyo"),
    "redis_stream_response_handler.py": Expected("done"),
    "reliability/activity.py": Expected("tool_call {'name': 'get_weather_forecast'"),
    "reliability/durable_record.py": Expected("[client] verified: the answer matches"),
    "reliability/flusher_thread.py": Expected("token 'busy. '"),
    "reliability/resume_point.py": Expected("trimmed=True"),
    "reliability/run_liveness.py": Expected("the run showed no progress for 0.2s"),
    "reliability/run_tracker.py": Expected("restart"),
    "reliability/write_behind.py": Expected('token "agent\'s "'),
    "support/config.py": Expected("error: REDIS_STREAM_TTL_MINUTES must be a whole number", exit_code=2),
    "support/demo_model.py": Expected("# Your 2-day trip to Oslo"),
    "support/gc_pauses.py": Expected("objects frozen after importing Agent Framework"),
    "support/itinerary_changes.py": Expected("day 2"),
    "support/private_redis.py": Expected("redis://127.0.0.1:"),
    "support/providers.py": Expected("OpenAI-compatible server model llama3.2"),
    "support/redis_connection.py": Expected("True one node"),
    "support/scheduler.py": Expected("a Durable Task scheduler answers there"),
    "support/services.py": Expected("Services(scheduler_endpoint="),
    "webapp/ag_ui_events.py": Expected('"type":"RUN_FINISHED"'),
}


class Example(NamedTuple):
    modules: tuple[str, ...]  # paths from the project folder of the docstrings that show it
    command: str | None  # None: a "Try it" section with no command this test can find


def find_examples() -> list[Example]:
    """Every command once, with the modules that show it (redis_stream_response_handler.py shows write_behind's)."""
    shown_by: dict[str, list[str]] = {}
    without_a_command = []
    packages = [path.parent for path in ROOT.glob("*/__init__.py") if path.parent.name != "tests"]
    for path in sorted(path for folder in [ROOT, *packages] for path in folder.glob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        for section in _SECTION.findall(docstring):
            commands = _commands(section)
            without_a_command += [] if commands else [Example((module,), None)]
            for command in commands:
                shown_by.setdefault(command, []).append(module)
    return [Example(tuple(modules), command) for command, modules in shown_by.items()] + without_a_command


def _commands(section: str) -> list[str]:
    """The commands of one section: inline ones in backticks, and indented lines (`\\` continues one)."""
    commands = [match for line in section.splitlines() if not line.startswith(" ") for match in _INLINE.findall(line)]
    block = re.sub(r"\\\n\s*", "", section)  # a continued line becomes one
    commands += [line.strip() for line in block.splitlines() if line.startswith("    ") and "uv run" in line]
    return commands


EXAMPLES = find_examples()


def test_the_examples_are_found_and_every_expectation_names_one() -> None:
    assert len(EXAMPLES) >= 15, EXAMPLES  # the finder still understands the docstrings
    assert set(EXPECTED) <= {module for example in EXAMPLES for module in example.modules}  # none outlives its example


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: "+".join(example.modules))
def test_the_example_runs(example: Example, redis_url: str, scheduler_endpoint: str) -> None:
    assert example.command is not None, f"{example.modules[0]}: a Try it section with no `uv run ...` command in it"
    as_typed = _UV_RUN.sub(f"{shlex.quote(sys.executable)} ", example.command)
    env = cli_environment(REDIS_CONNECTION_STRING=redis_url, ENDPOINT=scheduler_endpoint)
    result = subprocess.run(
        ["bash", "-c", as_typed],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    for expected in [EXPECTED.get(module, Expected("")) for module in example.modules]:
        assert result.returncode == expected.exit_code, f"{example.command}\n{output[-3000:]}"
        assert output.strip() and expected.output in output, f"{example.command}\n{output[-3000:]}"
    assert not _PROBLEM.search(output), f"{example.command}\n{output[-3000:]}"


def test_commands_are_read_inline_and_from_indented_blocks_and_a_section_ends_at_the_next_paragraph() -> None:
    section = _SECTION.findall(
        'Intro.\n\nTry it: `A=1 uv run x.py` or, in a block:\n\n    uv run python -c "a; \\\n        b"\n'
        "    # what it prints\n\nRead next: `uv run y.py`."
    )
    assert section and _commands(section[0]) == ["A=1 uv run x.py", 'uv run python -c "a; b"']
