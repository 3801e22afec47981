"""Choosing the model provider from the environment (support/providers.py).

Covers the order of precedence, every half-configured case (one-line
`UsageError` naming what is missing), that announcements never show a key,
and that `python worker.py` turns a half-configured provider into exit 2 with
one `error:` line. Building a client makes no network call, so none of this
needs a model, Azure or an API key.

Run it: `uv run pytest tests/support/test_providers.py`
"""

from __future__ import annotations

import pytest
from agent_framework_foundry import FoundryChatClient
from agent_framework_openai import OpenAIChatCompletionClient
from azure.identity.aio import DefaultAzureCredential

from agents import create_chat_client
from support import providers
from support.console import announce_once
from support.demo_model import DemoChatClient
from support.errors import UsageError
from support.ports import free_port
from support.providers import PROVIDER_VARIABLES, select_provider
from tests.conftest import cli_environment, run_cli

SECRET = "sk-test-secret-1234567890"
FOUNDRY = {
    "FOUNDRY_PROJECT_ENDPOINT": "https://acct.services.ai.azure.com/api/projects/trips",
    "FOUNDRY_MODEL": "gpt-4o",
}
AZURE = {"AZURE_OPENAI_ENDPOINT": "https://trips.openai.azure.com", "AZURE_OPENAI_CHAT_COMPLETION_MODEL": "chat"}
OPENAI = {"OPENAI_API_KEY": SECRET, "OPENAI_CHAT_COMPLETION_MODEL": "gpt-4o-mini"}
COMPATIBLE = {"OPENAI_COMPATIBLE_BASE_URL": "http://localhost:11434/v1", "OPENAI_COMPATIBLE_MODEL": "llama3.2"}


def label(environ: dict[str, str]) -> str | None:
    choice = select_provider(environ)
    return choice.spec.label if choice else None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({**FOUNDRY, **AZURE, **OPENAI, **COMPATIBLE}, "Microsoft Foundry"),
        ({**AZURE, **OPENAI, **COMPATIBLE}, "Azure OpenAI"),
        ({**OPENAI, **COMPATIBLE}, "OpenAI"),
        (COMPATIBLE, "OpenAI-compatible server"),
        ({"AZURE_OPENAI_ENDPOINT": "https://trips.openai.azure.com", "AZURE_OPENAI_MODEL": "chat"}, "Azure OpenAI"),
        ({"OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "gpt-4o-mini"}, "OpenAI"),
        # Variables that are commonly set globally are no sign of intent on their own.
        ({"AZURE_OPENAI_API_VERSION": "2024-10-21", "OPENAI_BASE_URL": "https://proxy.example/v1"}, None),
        ({**dict.fromkeys(PROVIDER_VARIABLES, "  "), "DEMO_MODEL_TOKEN_DELAY_MS": "0"}, None),  # blank = unset
    ],
)
def test_the_first_complete_provider_wins(environ: dict[str, str], expected: str | None) -> None:
    assert label(environ) == expected


def test_the_announcement_names_the_runner_up() -> None:
    choice = select_provider({**OPENAI, **COMPATIBLE})

    assert choice is not None
    assert f"[model] {choice.announcement()}" == (
        "[model] using OpenAI model gpt-4o-mini at https://api.openai.com/v1 "
        "(takes precedence over OpenAI-compatible server)"
    )


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({"FOUNDRY_PROJECT_ENDPOINT": FOUNDRY["FOUNDRY_PROJECT_ENDPOINT"]}, ["FOUNDRY_MODEL"]),
        ({"FOUNDRY_MODEL": "gpt-4o"}, ["FOUNDRY_PROJECT_ENDPOINT"]),
        ({"AZURE_OPENAI_ENDPOINT": AZURE["AZURE_OPENAI_ENDPOINT"]}, ["AZURE_OPENAI_CHAT_COMPLETION_MODEL"]),
        ({"AZURE_OPENAI_MODEL": "chat"}, ["AZURE_OPENAI_ENDPOINT"]),
        ({"AZURE_OPENAI_API_KEY": SECRET}, ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_CHAT_COMPLETION_MODEL"]),
        ({"OPENAI_API_KEY": SECRET}, ["OPENAI_CHAT_COMPLETION_MODEL"]),
        ({"OPENAI_MODEL": "gpt-4o-mini"}, ["OPENAI_API_KEY"]),
        ({"OPENAI_COMPATIBLE_BASE_URL": COMPATIBLE["OPENAI_COMPATIBLE_BASE_URL"]}, ["OPENAI_COMPATIBLE_MODEL"]),
        ({"OPENAI_COMPATIBLE_MODEL": "llama3.2"}, ["OPENAI_COMPATIBLE_BASE_URL"]),
        ({"OPENAI_COMPATIBLE_API_KEY": SECRET}, ["OPENAI_COMPATIBLE_BASE_URL", "OPENAI_COMPATIBLE_MODEL"]),
        # Half of one provider is an error even when another is complete: no silent fallback.
        ({**COMPATIBLE, "FOUNDRY_MODEL": "gpt-4o"}, ["FOUNDRY_PROJECT_ENDPOINT"]),
    ],
)
def test_a_half_configured_provider_is_one_line_naming_what_is_missing(
    environ: dict[str, str], missing: list[str]
) -> None:
    with pytest.raises(UsageError) as raised:
        select_provider(environ)

    message = str(raised.value)
    assert "\n" not in message
    assert all(name in message.split("missing", 1)[1] for name in missing), message
    assert SECRET not in message


@pytest.mark.parametrize("variable", ["OPENAI_COMPATIBLE_BASE_URL", "FOUNDRY_PROJECT_ENDPOINT"])
def test_an_endpoint_that_is_not_a_url_is_an_error(variable: str) -> None:
    environ = {**COMPATIBLE, **FOUNDRY, variable: "localhost:11434"}

    with pytest.raises(UsageError, match=f"{variable} must be an http:// or https:// URL"):
        select_provider(environ)


@pytest.mark.parametrize(
    "environ",
    [
        {**OPENAI, "OPENAI_BASE_URL": f"https://user:{SECRET}@gateway.example/v1?api-key={SECRET}"},
        {**AZURE, "AZURE_OPENAI_API_KEY": SECRET},
        {**COMPATIBLE, "OPENAI_COMPATIBLE_API_KEY": SECRET},
        {**COMPATIBLE, "OPENAI_COMPATIBLE_BASE_URL": f"http://me:{SECRET}@127.0.0.1:8000/v1?key={SECRET}"},
    ],
)
def test_the_announcement_never_contains_a_key(environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    announce_once.cache_clear()
    create_chat_client(environ)

    announced = capsys.readouterr().err
    assert announced.startswith("[model] using ") and announced.count("\n") == 1
    assert SECRET not in announced


@pytest.mark.parametrize(
    ("environ", "client_type"),
    [
        (FOUNDRY, FoundryChatClient),
        (AZURE, OpenAIChatCompletionClient),
        (OPENAI, OpenAIChatCompletionClient),
        (COMPATIBLE, OpenAIChatCompletionClient),
        ({"DEMO_MODEL_TOKEN_DELAY_MS": "0"}, DemoChatClient),
    ],
)
def test_each_provider_builds_its_agent_framework_client(environ: dict[str, str], client_type: type) -> None:
    assert isinstance(create_chat_client(environ), client_type)


def test_the_compatible_client_talks_to_the_configured_server_with_a_placeholder_key() -> None:
    client = create_chat_client(COMPATIBLE)

    assert isinstance(client, OpenAIChatCompletionClient) and client.model == "llama3.2"
    assert str(client.client.base_url) == "http://localhost:11434/v1/"
    # The OpenAI SDK needs some key; a real OPENAI_API_KEY must never be sent to a third-party server.
    assert client.client.api_key == providers.PLACEHOLDER_API_KEY


def test_azure_openai_without_a_key_signs_in_with_the_default_azure_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: list[DefaultAzureCredential] = []

    def recording_credential() -> DefaultAzureCredential:
        created.append(DefaultAzureCredential())
        return created[-1]

    monkeypatch.setattr(providers, "_azure_credential", recording_credential)

    create_chat_client(AZURE)

    assert len(created) == 1 and isinstance(created[0], DefaultAzureCredential)


def test_the_demo_model_knobs_still_work_when_no_provider_is_set() -> None:
    client = create_chat_client({"DEMO_MODEL_TOKEN_DELAY_MS": "5", "DEMO_MODEL_FAIL_AFTER_TOKENS": "3"})

    assert isinstance(client, DemoChatClient)
    assert (client.token_delay_seconds, client.fail_after_tokens) == (0.005, 3)


def test_worker_py_with_a_half_configured_provider_exits_2_with_one_line() -> None:
    env = cli_environment(
        LOCAL_SCHEDULER_PORT=str(free_port()),
        LOCAL_REDIS_PORT=str(free_port()),
        **{**dict.fromkeys(PROVIDER_VARIABLES, ""), "OPENAI_COMPATIBLE_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    result = run_cli("worker.py", env=env, timeout=60)

    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "missing OPENAI_COMPATIBLE_MODEL" in error_lines[0]
    assert "Traceback" not in result.stderr
