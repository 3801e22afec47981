"""Every variable of .env.example, every input a user types: a bad value is ONE line naming it.

In-process checks of `support.config.check_environment` (which every entry point calls
before starting anything), `support.config.redact_url` and `support.validation`. The entry
points themselves are run in tests/support/test_entry_points_check_first.py.

    uv run pytest tests/support/test_environment_checks.py -q
"""

from __future__ import annotations

import re

import pytest

from support.config import check_environment
from support.errors import UsageError
from support.redaction import redact_url
from support.validation import validate_cursor, validate_session_key
from tests.conftest import ROOT

# One bad value for every variable .env.example lists (a value that looks plausible, or came up in issue 10).
BAD_VALUES = {
    "ENDPOINT": "http://[::1",
    "TASKHUB": "hub\nname",
    "REDIS_CONNECTION_STRING": "rediss://user:se/cret@host:6380",
    "REDIS_TLS_CA_FILE": "/no/such/ca.pem",
    "REDIS_STREAM_TTL_MINUTES": "99999999999999999",
    "REDIS_STREAM_MAX_LENGTH": "9" * 30,
    "STREAM_IDLE_TIMEOUT_SECONDS": "١",
    "STREAM_HEARTBEAT_SECONDS": "inf",
    "STREAM_MAX_SILENCE_SECONDS": "99999999",
    "LOCAL_SCHEDULER_PORT": "²",
    "LOCAL_REDIS_PORT": "6379 6380",
    "REDIS_CLUSTER": "yes",
    "REDIS_AUTH": "entra",
    "WORKER_MAX_CONCURRENT_RUNS": "100000",
    "WORKER_DRAIN_SECONDS": "30s",
    "WEB_MAX_STREAMS": "100000",
    "WEB_ALLOWED_HOSTS": "localhost:8000",
    "FOUNDRY_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
    "FOUNDRY_MODEL": "gpt-4o-mini",
    "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
    "AZURE_OPENAI_CHAT_COMPLETION_MODEL": "gpt-4o-mini",
    "AZURE_OPENAI_API_KEY": "key with spaces",
    "AZURE_OPENAI_API_VERSION": "2024 10 21",
    "OPENAI_API_KEY": "sk-only-a-key",
    "OPENAI_CHAT_COMPLETION_MODEL": "gpt-4o-mini",
    "OPENAI_BASE_URL": "api.openai.com/v1",
    "OPENAI_COMPATIBLE_BASE_URL": "http://[::1",
    "OPENAI_COMPATIBLE_MODEL": "llama3.2",
    "OPENAI_COMPATIBLE_API_KEY": "ключ",
    "DEMO_MODEL_TOKEN_DELAY_MS": "99999999",
    "DEMO_MODEL_FAIL_AFTER_TOKENS": "-1",
    "DEMO_MODEL_FAIL_STREAM_ONLY": "maybe",
    "DEMO_MODEL_FIRST_TOKEN_DELAY_MS": "1e3",
    "DEMO_MODEL_THINK_MS": "-5",
    "DEMO_MODEL_SIGNATURE": "two words",
    "LOG_LEVEL": "bogus",
    "ENABLE_CONSOLE_EXPORTERS": "stderr",
    "ENABLE_INSTRUMENTATION": "maybe",
    "ENABLE_SENSITIVE_DATA": "sometimes",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "https://x.in.applicationinsights.azure.com/",
    "OTEL_SERVICE_NAME": "travel\nplanner",
}


def env_example_variables() -> list[str]:
    return re.findall(r"^# ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)


def test_every_variable_of_env_example_has_a_bad_value_here() -> None:
    assert sorted(env_example_variables()) == sorted(BAD_VALUES)


@pytest.mark.parametrize(("name", "value"), BAD_VALUES.items(), ids=list(BAD_VALUES))
def test_a_bad_value_of_any_variable_is_one_line_naming_it(name: str, value: str) -> None:
    with pytest.raises(UsageError) as raised:
        check_environment({name: value})
    message = str(raised.value)
    assert name in message and "\n" not in message.replace(repr(value), ""), message
    assert "se/cret" not in message  # a password, even in a URL that does not parse
    if name.endswith("_KEY"):
        assert value not in message


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        ("rediss://user:se/cret@host:6380", "rediss://user:***@host:6380"),
        ("redis://user:Ab@cd@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://host:6379/0?password=s3cret&username=bob", "redis://host:6379/0?password=***&username=bob"),
        ("redis://host:6379?username=bob&password=s3cret", "redis://host:6379?username=bob&password=***"),
        ("rediss://app:s3cret@cache.example:6380/0", "rediss://app:***@cache.example:6380/0"),
        ("redis://:s3cret@localhost", "redis://:***@localhost"),
        ("redis://u:p?w#d@host:1", "redis://u:***@host:1"),
        ("redis://localhost:6379", "redis://localhost:6379"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_redact_url_hides_every_password(url: str, printed: str) -> None:
    assert redact_url(url) == printed


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("rediss://user:se/cret@host:6380", "rediss://user:***@host:6380"),  # parsed as port "se": an invalid port
        ("redis://user:Ab@cd@host:http", "redis://user:***@host:http"),
        ("redis://host:port/0?password=s3cret", "redis://host:port/0?password=***"),
    ],
)
def test_url_errors_never_show_the_password(value: str, shown: str) -> None:
    with pytest.raises(UsageError) as raised:
        check_environment({"REDIS_CONNECTION_STRING": value})
    assert shown in str(raised.value)
    assert "cret" not in str(raised.value) and "Ab@cd" not in str(raised.value)


@pytest.mark.parametrize(
    "cursor",
    ["1-0\n", "١-٠", "1734649123456-٣", "18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-0"],
)
def test_cursors_are_ascii_anchored_and_64_bit(cursor: str) -> None:
    with pytest.raises(UsageError, match="cursor must be a Redis stream entry id"):
        validate_cursor(cursor)


def test_the_largest_64_bit_cursor_is_accepted() -> None:
    largest = f"{2**64 - 1}-{2**64 - 1}"
    assert validate_cursor(largest) == largest


@pytest.mark.parametrize("key", ["evil\n", "key\r\n", "ключ", "a" * 129, ""])
def test_session_keys_are_ascii_and_anchored(key: str) -> None:
    with pytest.raises(UsageError, match="session key must be"):
        validate_session_key(key)
