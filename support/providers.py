"""Model providers: which chat client the TravelPlanner talks to, chosen from the environment.

The first provider that is fully configured wins, in this order; with none
configured the agent uses the offline demo model (`support/demo_model.py`):

    1. Microsoft Foundry         FOUNDRY_PROJECT_ENDPOINT + FOUNDRY_MODEL
                                 (signs in with DefaultAzureCredential: `az login`, managed identity, ...)
    2. Azure OpenAI              AZURE_OPENAI_ENDPOINT + AZURE_OPENAI_CHAT_COMPLETION_MODEL (or AZURE_OPENAI_MODEL)
                                 [+ AZURE_OPENAI_API_KEY, else DefaultAzureCredential] [+ AZURE_OPENAI_API_VERSION]
    3. OpenAI                    OPENAI_API_KEY + OPENAI_CHAT_COMPLETION_MODEL (or OPENAI_MODEL) [+ OPENAI_BASE_URL]
    4. OpenAI-compatible server  OPENAI_COMPATIBLE_BASE_URL + OPENAI_COMPATIBLE_MODEL [+ OPENAI_COMPATIBLE_API_KEY]
                                 (Ollama, vLLM, LM Studio, llama.cpp server, ...)
    5. the offline demo model    nothing to set (DEMO_MODEL_TOKEN_DELAY_MS, DEMO_MODEL_FAIL_AFTER_TOKENS tune it)

The variable names for 1-3 are the ones `agent-framework-foundry` and
`agent-framework-openai` read themselves, so an existing setup carries over.
A provider with only some of its variables set (an endpoint without a model, a
key without a model, ...) is an error naming what is missing, even when another
provider is complete: a silent fallback would run a different model than the
one you meant to configure. The choice is announced once on stderr, without the key:

    [model] using OpenAI-compatible server model llama3.2 at http://localhost:11434/v1

Try it:

    OPENAI_COMPATIBLE_BASE_URL=http://localhost:11434/v1 OPENAI_COMPATIBLE_MODEL=llama3.2 \\
        uv run python -m support.providers
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from agent_framework import SupportsChatGetResponse
from azure.core.credentials_async import AsyncTokenCredential

from support.console import announce_once
from support.demo_model import demo_model_from_env, demo_model_options
from support.errors import UsageError
from support.redaction import redact_url

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local OpenAI-compatible servers ignore the key, but the OpenAI SDK refuses to start without one.
PLACEHOLDER_API_KEY = "not-needed"
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,4096}")


@dataclass(frozen=True)
class Setting:
    """One setting of a provider, read from the first of `names` that is set."""

    names: tuple[str, ...]
    meaning: str

    def read(self, environ: Mapping[str, str]) -> str | None:
        for name in self.names:
            if value := environ.get(name, "").strip():
                return value
        return None

    def describe(self) -> str:
        first, *others = self.names
        alternatives = f" (or {' or '.join(others)})" if others else ""
        return f"{first}{alternatives} ({self.meaning})"


@dataclass(frozen=True)
class ProviderSpec:
    """A provider: the settings it needs, the ones it may take, and how to build its client."""

    label: str
    required: tuple[Setting, ...]
    optional: tuple[Setting, ...]
    build: Callable[[Mapping[str, str]], SupportsChatGetResponse]
    model: Setting
    endpoint: Setting | None  # None: the provider has a fixed default endpoint
    default_endpoint: str = ""

    def present(self, environ: Mapping[str, str]) -> list[str]:
        """Names of this provider's variables that are set."""
        settings = (*self.required, *self.optional)
        return [name for setting in settings for name in setting.names if environ.get(name, "").strip()]

    def missing(self, environ: Mapping[str, str]) -> list[Setting]:
        return [setting for setting in self.required if setting.read(environ) is None]


@dataclass(frozen=True)
class ProviderChoice:
    """The provider picked from the environment, and what the announcement says about it."""

    spec: ProviderSpec
    model: str
    endpoint: str
    also_configured: tuple[str, ...] = ()

    def announcement(self) -> str:
        line = f"using {self.spec.label} model {self.model} at {self.endpoint}"
        if self.also_configured:
            line += f" (takes precedence over {', '.join(self.also_configured)})"
        return line


def _azure_credential() -> AsyncTokenCredential:
    # The async credential: the chat clients call it on the agent's event loop, where a
    # synchronous one (which may shell out to `az`) would stall every run in the worker.
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


def _build_foundry(environ: Mapping[str, str]) -> SupportsChatGetResponse:
    from agent_framework_foundry import FoundryChatClient  # imported late: it pulls in the Azure AI SDKs

    return FoundryChatClient(
        project_endpoint=FOUNDRY_ENDPOINT.read(environ),
        model=FOUNDRY_MODEL.read(environ),
        credential=_azure_credential(),
    )


def _build_azure_openai(environ: Mapping[str, str]) -> SupportsChatGetResponse:
    from agent_framework_openai import OpenAIChatCompletionClient

    api_key = AZURE_OPENAI_KEY.read(environ)
    return OpenAIChatCompletionClient(
        model=AZURE_OPENAI_DEPLOYMENT.read(environ),
        azure_endpoint=AZURE_OPENAI_ENDPOINT.read(environ),
        api_key=api_key,
        credential=None if api_key else _azure_credential(),
        api_version=AZURE_OPENAI_API_VERSION.read(environ),
    )


def _build_openai(environ: Mapping[str, str]) -> SupportsChatGetResponse:
    from agent_framework_openai import OpenAIChatCompletionClient

    return OpenAIChatCompletionClient(
        model=OPENAI_MODEL.read(environ),
        api_key=OPENAI_KEY.read(environ),
        base_url=OPENAI_BASE_URL.read(environ),
    )


def _build_openai_compatible(environ: Mapping[str, str]) -> SupportsChatGetResponse:
    from agent_framework_openai import OpenAIChatCompletionClient

    # Chat Completions, not the Responses API: it is what every compatible server speaks.
    # An explicit key (even the placeholder) also keeps a real OPENAI_API_KEY from being sent there.
    return OpenAIChatCompletionClient(
        model=COMPATIBLE_MODEL.read(environ),
        api_key=COMPATIBLE_KEY.read(environ) or PLACEHOLDER_API_KEY,
        base_url=COMPATIBLE_BASE_URL.read(environ),
    )


FOUNDRY_ENDPOINT = Setting(("FOUNDRY_PROJECT_ENDPOINT",), "the Foundry project endpoint URL")
FOUNDRY_MODEL = Setting(("FOUNDRY_MODEL",), "the model deployment name")
AZURE_OPENAI_ENDPOINT = Setting(("AZURE_OPENAI_ENDPOINT",), "https://<resource>.openai.azure.com")
AZURE_OPENAI_DEPLOYMENT = Setting(
    ("AZURE_OPENAI_CHAT_COMPLETION_MODEL", "AZURE_OPENAI_MODEL"), "the chat deployment name"
)
AZURE_OPENAI_KEY = Setting(("AZURE_OPENAI_API_KEY",), "optional; without it DefaultAzureCredential signs in")
AZURE_OPENAI_API_VERSION = Setting(("AZURE_OPENAI_API_VERSION",), "optional API version")
OPENAI_KEY = Setting(("OPENAI_API_KEY",), "your OpenAI API key")
OPENAI_MODEL = Setting(("OPENAI_CHAT_COMPLETION_MODEL", "OPENAI_MODEL"), "e.g. gpt-4o-mini")
OPENAI_BASE_URL = Setting(("OPENAI_BASE_URL",), f"optional; default {OPENAI_DEFAULT_BASE_URL}")
COMPATIBLE_BASE_URL = Setting(("OPENAI_COMPATIBLE_BASE_URL",), "e.g. http://localhost:11434/v1")
COMPATIBLE_MODEL = Setting(("OPENAI_COMPATIBLE_MODEL",), "the model name the server knows, e.g. llama3.2")
COMPATIBLE_KEY = Setting(("OPENAI_COMPATIBLE_API_KEY",), "optional; most local servers need none")

# In order of precedence: the first complete one wins.
PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        "Microsoft Foundry", (FOUNDRY_ENDPOINT, FOUNDRY_MODEL), (), _build_foundry, FOUNDRY_MODEL, FOUNDRY_ENDPOINT
    ),
    ProviderSpec(
        "Azure OpenAI",
        (AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_DEPLOYMENT),
        (AZURE_OPENAI_KEY,),  # the API version alone is no sign of intent: it is often set globally
        _build_azure_openai,
        AZURE_OPENAI_DEPLOYMENT,
        AZURE_OPENAI_ENDPOINT,
    ),
    ProviderSpec(
        "OpenAI",
        (OPENAI_KEY, OPENAI_MODEL),
        (),  # OPENAI_BASE_URL alone is no sign of intent either
        _build_openai,
        OPENAI_MODEL,
        OPENAI_BASE_URL,
        default_endpoint=OPENAI_DEFAULT_BASE_URL,
    ),
    ProviderSpec(
        "OpenAI-compatible server",
        (COMPATIBLE_BASE_URL, COMPATIBLE_MODEL),
        (COMPATIBLE_KEY,),
        _build_openai_compatible,
        COMPATIBLE_MODEL,
        COMPATIBLE_BASE_URL,
    ),
)

# Every variable that selects a provider: tests blank them so a developer's own keys never leak in.
PROVIDER_VARIABLES: tuple[str, ...] = tuple(
    name
    for setting in (
        *(FOUNDRY_ENDPOINT, FOUNDRY_MODEL),
        *(AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_DEPLOYMENT, AZURE_OPENAI_KEY, AZURE_OPENAI_API_VERSION),
        *(OPENAI_KEY, OPENAI_MODEL, OPENAI_BASE_URL),
        *(COMPATIBLE_BASE_URL, COMPATIBLE_MODEL, COMPATIBLE_KEY),
    )
    for name in setting.names
)


def select_provider(environ: Mapping[str, str]) -> ProviderChoice | None:
    """The provider to use, or None for the offline demo model.

    Raises `UsageError` (one line naming the missing variables) for a half-configured provider.
    """
    complete = [
        ProviderChoice(spec, spec.model.read(environ) or "", _endpoint_of(spec, environ))
        for spec in PROVIDERS
        if _is_complete(spec, environ)
    ]
    if not complete:
        return None
    return replace(complete[0], also_configured=tuple(choice.spec.label for choice in complete[1:]))


def _is_complete(spec: ProviderSpec, environ: Mapping[str, str]) -> bool:
    present, missing = spec.present(environ), spec.missing(environ)
    if present and missing:
        raise UsageError(_half_configured_message(spec, present, missing))
    return not missing


def _endpoint_of(spec: ProviderSpec, environ: Mapping[str, str]) -> str:
    url = spec.endpoint.read(environ) if spec.endpoint else None
    return _checked_url(url, spec.endpoint) if url and spec.endpoint else spec.default_endpoint


def create_chat_client(environ: Mapping[str, str] = os.environ) -> SupportsChatGetResponse:
    """The chat client for the configured provider (see the module docstring), announced once."""
    choice = select_provider(environ)
    if choice is None:
        return demo_model_from_env(environ)  # announces itself
    client = choice.spec.build(environ)
    announce_once("model", choice.announcement())
    return client


def check_model_settings(environ: Mapping[str, str]) -> None:
    """Check every model variable (providers and DEMO_MODEL_*) without building a client or announcing one.

    Each set variable is checked even when it does not take effect (a lone OPENAI_BASE_URL, the demo
    model's knobs beside a real provider): a bad value is an error, never silently ignored.
    """
    select_provider(environ)
    for setting in (FOUNDRY_ENDPOINT, AZURE_OPENAI_ENDPOINT, OPENAI_BASE_URL, COMPATIBLE_BASE_URL):
        if url := setting.read(environ):
            _checked_url(url, setting)
    for setting in (AZURE_OPENAI_KEY, OPENAI_KEY, COMPATIBLE_KEY, AZURE_OPENAI_API_VERSION):
        value = setting.read(environ)
        if value is not None and not _HEADER_SAFE.fullmatch(value):  # it travels in an HTTP header or query
            raise UsageError(f"{setting.names[0]} must be printable ASCII without spaces (its value is not shown)")
    demo_model_options(environ)


def _half_configured_message(spec: ProviderSpec, present: list[str], missing: list[Setting]) -> str:
    needed = " and ".join(setting.describe() for setting in missing)
    plural = "s" if len(missing) > 1 else ""
    return (
        f"{spec.label} is only partly configured: {', '.join(present)} set, but missing {needed}; "
        f"set the missing variable{plural} or unset {', '.join(present)}"
    )


def _checked_url(url: str, setting: Setting) -> str:
    """The URL as it may be printed: no password, no query string (some carry keys)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        parts = urlsplit("")  # an unparsable URL (`http://[::1`) is reported like any other bad one
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{setting.names[0]} must be an http:// or https:// URL (got {redact_url(url)!r})")
    return redact_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


if __name__ == "__main__":
    selected = select_provider(os.environ)
    print(selected.announcement() if selected else "using the offline demo model (no provider configured)")
