"""Bad input, as a user types it: every case exits with a clear code and ONE line, never a traceback.

Run as subprocesses of the real command lines. This extends the matrix in
tests/tutorial/test_cli.py (`test_usage_and_configuration_errors_exit_2_with_one_line`
covers a malformed cursor, --cursor without --session, a blank message,
"../etc" as a session key, a zero TTL, a negative idle timeout, a non-URL
ENDPOINT and an unreachable Redis) and tests/support/test_secure_redis.py (wrong Redis
password, missing CA, plaintext to a TLS port) without repeating them.

    fault                                   exit  the line says
    malformed / unsafe input (argv)          2    what is accepted
    invalid environment value                2    the variable and what it accepts
    cursor past the end, or no such stream   2    why reattaching cannot work
    ENDPOINT at a closed port                2    nothing answers there
    ENDPOINT at something that is not gRPC   2    it answers, but not as a Durable Task scheduler
    the local scheduler port taken by such   2    the same, and to set LOCAL_SCHEDULER_PORT
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from redis_stream_response_handler import stream_key
from support.ports import free_port
from support.validation import MAX_MESSAGE_CHARACTERS
from tests.conftest import ROOT, cli_environment, run_cli


def assert_one_line(result: subprocess.CompletedProcess[str], exit_code: int, message: str) -> None:
    """Exit `exit_code`, exactly one `error:` line, containing `message`, and no traceback."""
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr


def nothing_running(**overrides: str) -> dict[str, str]:
    """Nothing configured, and nothing on the local ports: usage errors must be caught before connecting."""
    return cli_environment(LOCAL_SCHEDULER_PORT=str(free_port()), LOCAL_REDIS_PORT=str(free_port()), **overrides)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--session", ""], "session key must be 1-128 characters"),
        (["--session", "two words"], "session key must be 1-128 characters"),
        (["--session", "k" * 129], "session key must be 1-128 characters"),
        (["--session", "schlüssel"], "session key must be 1-128 characters"),
        (["--session", "key*"], "session key must be 1-128 characters"),
        (["--session", "abc", "--cursor", ""], "cursor must be a Redis stream entry id"),
        (["--session", "abc", "--cursor", "1-2-3"], "cursor must be a Redis stream entry id"),
        (["--session", "abc", "--cursor", "$"], "cursor must be a Redis stream entry id"),
        (["--session", "abc", "--cursor", "1-0", "-m", "hi"], "drop -m"),
        (["-m", ""], "the message is empty"),
        (["-m", "x" * (MAX_MESSAGE_CHARACTERS + 1)], f"the limit is {MAX_MESSAGE_CHARACTERS}"),
    ],
)
def test_bad_arguments_exit_2_before_connecting(args: list[str], message: str) -> None:
    assert_one_line(run_cli("client.py", *args, env=nothing_running(), timeout=60), 2, message)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REDIS_CONNECTION_STRING", "localhost:6379", "REDIS_CONNECTION_STRING must be a redis://"),
        ("REDIS_CONNECTION_STRING", "redis://localhost:99999", "REDIS_CONNECTION_STRING has an invalid port"),
        ("REDIS_TLS_CA_FILE", "/no/such/ca.pem", "REDIS_TLS_CA_FILE only applies to a rediss://"),
        ("REDIS_STREAM_TTL_MINUTES", "ten", "REDIS_STREAM_TTL_MINUTES must be a whole number of minutes >= 1"),
        ("REDIS_STREAM_MAX_LENGTH", "5", "REDIS_STREAM_MAX_LENGTH must be a whole number of entries >= 100"),
        ("STREAM_IDLE_TIMEOUT_SECONDS", "nan", "STREAM_IDLE_TIMEOUT_SECONDS must be a number of seconds > 0"),
        ("STREAM_HEARTBEAT_SECONDS", "soon", "STREAM_HEARTBEAT_SECONDS must be a number of seconds > 0"),
        ("LOCAL_SCHEDULER_PORT", "0", "LOCAL_SCHEDULER_PORT must be a TCP port"),
        ("LOCAL_REDIS_PORT", "70000", "LOCAL_REDIS_PORT must be a TCP port"),
        ("ENDPOINT", "localhost:8080", "ENDPOINT must be an http://"),
    ],
)
def test_every_invalid_environment_value_exits_2_naming_the_variable(name: str, value: str, message: str) -> None:
    env = nothing_running()
    env[name] = value
    assert_one_line(run_cli("client.py", "-m", "hi", env=env, timeout=60), 2, message)


def test_a_cursor_past_the_end_of_the_stream_exits_2(redis_url: str, scheduler_endpoint: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    newest = str(client.xadd(stream_key("past-the-end"), {"kind": "token", "text": "hi"}))
    client.close()
    beyond = f"{int(newest.split('-')[0]) + 1}-0"
    env = cli_environment(ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url)

    result = run_cli("client.py", "--session", "past-the-end", "--cursor", beyond, env=env, timeout=60)

    assert_one_line(result, 2, f"cursor {beyond} is past the end of the stream")


def test_a_cursor_into_a_stream_that_does_not_exist_exits_2(redis_url: str, scheduler_endpoint: str) -> None:
    env = cli_environment(ENDPOINT=scheduler_endpoint, REDIS_CONNECTION_STRING=redis_url)
    result = run_cli("client.py", "--session", "never-existed", "--cursor", "1-0", env=env, timeout=60)

    assert_one_line(result, 2, "(it expired, or never existed)")
    assert "never-existed" in result.stderr


def test_a_scheduler_endpoint_where_nothing_listens_exits_2(redis_url: str) -> None:
    env = cli_environment(ENDPOINT=f"http://127.0.0.1:{free_port()}", REDIS_CONNECTION_STRING=redis_url)
    result = run_cli("client.py", "-m", "hi", env=env, timeout=60)

    assert_one_line(result, 2, "nothing answers at ENDPOINT=")


def test_a_scheduler_endpoint_that_is_not_a_scheduler_exits_2(redis_url: str) -> None:
    # The Redis port accepts TCP; the gRPC Hello that follows is what tells it apart.
    endpoint = redis_url.replace("redis://", "http://")
    env = cli_environment(ENDPOINT=endpoint, REDIS_CONNECTION_STRING=redis_url)
    result = run_cli("worker.py", env=env, timeout=60)  # before the check, the worker retried forever

    assert_one_line(result, 2, f"ENDPOINT={endpoint} answers, but not as a Durable Task scheduler")


def test_something_else_on_the_local_scheduler_port_exits_2(redis_url: str) -> None:
    port = redis_url.rsplit(":", 1)[1]
    env = cli_environment(LOCAL_SCHEDULER_PORT=port, REDIS_CONNECTION_STRING=redis_url)
    result = run_cli("sample.py", "-m", "hi", env=env, timeout=60)

    assert_one_line(result, 2, f"localhost:{port} answers, but not as a Durable Task scheduler")
    assert "LOCAL_SCHEDULER_PORT" in result.stderr


def run_with_bytes(*args: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Like `run_cli`, but argv as raw bytes: what a shell passes when the terminal's encoding is not UTF-8."""
    command = [sys.executable.encode(), b"client.py", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_session_key_that_is_not_utf8_exits_2() -> None:
    # Python turns the undecodable byte into a lone surrogate ('\udcff'), which the key check rejects.
    result = run_with_bytes(b"--session", b"key\xff", env=nothing_running())

    assert_one_line(result, 2, "session key must be 1-128 characters")


def test_a_message_that_is_not_utf8_exits_2_before_connecting() -> None:
    result = run_with_bytes(b"-m", b"Plan a trip to \xff", env=nothing_running())

    assert_one_line(result, 2, "not valid UTF-8")
