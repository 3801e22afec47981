"""Configuration: every bad value is one clear line; passwords never printed."""

from __future__ import annotations

import pytest

from support.config import load_settings
from support.errors import UsageError
from support.redaction import redact_url


def test_defaults_need_nothing_configured() -> None:
    settings = load_settings({})
    assert settings.endpoint is None and settings.redis_url is None
    assert settings.taskhub == "default"
    assert settings.stream_ttl_seconds == 600
    assert settings.max_silence_seconds == 300  # a run may think or call tools for minutes, not for ever
    assert settings.worker_drain_seconds == 30  # the usual container grace period


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_STREAM_TTL_MINUTES", "0", "REDIS_STREAM_TTL_MINUTES must be a whole number of minutes >= 1"),
        ("REDIS_STREAM_TTL_MINUTES", "-5", "REDIS_STREAM_TTL_MINUTES must be a whole number of minutes >= 1"),
        ("REDIS_STREAM_TTL_MINUTES", "ten", "REDIS_STREAM_TTL_MINUTES must be a whole number of minutes >= 1"),
        ("REDIS_STREAM_MAX_LENGTH", "5", "REDIS_STREAM_MAX_LENGTH must be a whole number of entries >= 100"),
        ("STREAM_IDLE_TIMEOUT_SECONDS", "0", "STREAM_IDLE_TIMEOUT_SECONDS must be a number of seconds > 0"),
        ("STREAM_HEARTBEAT_SECONDS", "soon", "STREAM_HEARTBEAT_SECONDS must be a number of seconds > 0"),
        ("STREAM_MAX_SILENCE_SECONDS", "-1", "STREAM_MAX_SILENCE_SECONDS must be a number of seconds > 0"),
        ("WORKER_DRAIN_SECONDS", "0", "WORKER_DRAIN_SECONDS must be a number of seconds > 0"),
        ("WORKER_DRAIN_SECONDS", "3601", "WORKER_DRAIN_SECONDS must be a number of seconds > 0 and at most 3600"),
        ("LOCAL_REDIS_PORT", "70000", "LOCAL_REDIS_PORT must be a TCP port"),
        ("ENDPOINT", "localhost:8080", "ENDPOINT must be an http:// (local emulator) or https:// (Azure) URL"),
        ("REDIS_CONNECTION_STRING", "localhost:6379", "REDIS_CONNECTION_STRING must be a redis://"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_accepts(name: str, value: str, expected: str) -> None:
    with pytest.raises(UsageError) as raised:
        load_settings({name: value})
    message = str(raised.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_a_ttl_in_minutes_becomes_seconds() -> None:
    assert load_settings({"REDIS_STREAM_TTL_MINUTES": "3"}).stream_ttl_seconds == 180


def test_passwords_are_redacted_even_in_error_messages() -> None:
    assert redact_url("rediss://app:s3cret@cache.example:6380/0") == "rediss://app:***@cache.example:6380/0"
    assert redact_url("redis://:s3cret@localhost") == "redis://:***@localhost"
    # A password with an unencoded '@' and '/': the user info ends at the LAST '@' before the host.
    assert redact_url("redis://u:p@a/b@host:1") == "redis://u:***@host:1"
    with pytest.raises(UsageError) as raised:
        load_settings({"REDIS_CONNECTION_STRING": "http://app:s3cret@cache.example"})
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"STREAM_HEARTBEAT_SECONDS": "20"}, "STREAM_HEARTBEAT_SECONDS (20) must be at most half of"),
        ({"STREAM_IDLE_TIMEOUT_SECONDS": "3"}, "STREAM_HEARTBEAT_SECONDS (2) must be at most half of"),
        ({"STREAM_MAX_SILENCE_SECONDS": "0.1"}, "STREAM_MAX_SILENCE_SECONDS (0.1) must be at least"),
    ],
)
def test_timings_that_contradict_each_other_are_one_error_line(environ: dict[str, str], expected: str) -> None:
    # Each value is valid alone; together a reader would give up on a live run, or a live run be ended as stuck.
    with pytest.raises(UsageError) as raised:
        load_settings(environ)
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)
