"""The OpenAI-compatible provider end to end, against a tiny scripted server.

`ScriptedChatServer` speaks just enough of the Chat Completions API
(`POST /v1/chat/completions` with `stream=true`, answered as server-sent
events) to stand in for Ollama, vLLM or LM Studio: asked without tool results,
it streams two tool calls (get_weather_forecast and get_local_events); asked
again with their results, it streams its answer word by word.

`python worker.py` runs with only OPENAI_COMPATIBLE_* set, so the real Agent
Framework OpenAI chat client, inside the durable entity, talks to that server
and runs the real tools; `python client.py` then streams the answer from Redis.

Run it: `uv run pytest tests/support/test_openai_compatible.py`
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from agents import get_local_events, get_weather_forecast
from support.providers import PROVIDER_VARIABLES
from tests.conftest import run_cli
from tests.tutorial.test_cli import WorkerProcess, start_worker

MODEL = "scripted-llama"
ANSWER = "Lisbon in two days: ride tram 28 on the sunny day, then pastéis de nata by the river."
TOOL_CALLS = (
    ("call_weather", "get_weather_forecast", {"destination": "Lisbon", "days": 2}),
    ("call_events", "get_local_events", {"destination": "Lisbon", "category": "food"}),
)


class ScriptedChatServer(ThreadingHTTPServer):
    """A Chat Completions server on 127.0.0.1 that records every request body it receives."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ChatCompletionsHandler)
        self.requests: list[dict[str, Any]] = []
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ChatCompletionsHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server calls it by this name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cast(ScriptedChatServer, self.server).requests.append(body)
        if self.path != "/v1/chat/completions" or not body.get("stream"):
            self.send_error(400, "this scripted server only streams chat completions")
            return
        has_tool_results = any(message.get("role") == "tool" for message in body["messages"])
        chunks = _answer_chunks() if has_tool_results else _tool_call_chunks()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        for delta, finish_reason in chunks:
            self._send_event(_chunk(delta, finish_reason))
        self.wfile.write(b"data: [DONE]\n\n")

    def _send_event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # keeps the test output quiet
        pass


def _chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def _tool_call_chunks() -> list[tuple[dict[str, Any], str | None]]:
    # As real servers do: a call's id and name first, then its arguments as a separate fragment.
    chunks: list[tuple[dict[str, Any], str | None]] = []
    for index, (call_id, name, arguments) in enumerate(TOOL_CALLS):
        opening = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        chunks.append(({"role": "assistant", "tool_calls": [opening]}, None))
        chunks.append(({"tool_calls": [{"index": index, "function": {"arguments": json.dumps(arguments)}}]}, None))
    chunks.append(({}, "tool_calls"))
    return chunks


def _answer_chunks() -> list[tuple[dict[str, Any], str | None]]:
    words = ANSWER.split(" ")
    tokens = [word + " " for word in words[:-1]] + [words[-1]]
    chunks: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": t}, None) for t in tokens]
    return [*chunks, ({}, "stop")]


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ScriptedChatServer]:
    server = ScriptedChatServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def worker(chat_server: ScriptedChatServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    provider = {
        **dict.fromkeys(PROVIDER_VARIABLES, ""),  # nothing else configured, whatever the developer's shell holds
        "OPENAI_COMPATIBLE_BASE_URL": chat_server.base_url,
        "OPENAI_COMPATIBLE_MODEL": MODEL,
        "NO_PROXY": "127.0.0.1,localhost",  # a proxy in the environment must not intercept loopback
    }
    running = start_worker(tmp_path_factory.mktemp("compatible-worker"), **provider)
    yield running
    assert running.stop() == 0


def test_the_worker_announces_the_compatible_server(worker: WorkerProcess, chat_server: ScriptedChatServer) -> None:
    model_lines = [line for line in worker.log.read_text().splitlines() if line.startswith("[model]")]
    assert model_lines == [f"[model] using OpenAI-compatible server model {MODEL} at {chat_server.base_url}"]


def test_the_answer_streams_from_the_server_after_a_real_tool_round(
    worker: WorkerProcess, chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    result = run_cli("client.py", "-m", "Plan a 2-day trip to Lisbon for food lovers", env=worker.env, timeout=60)

    assert result.returncode == 0, result.stderr + worker.log.read_text()
    assert ANSWER in result.stdout
    first, second = chat_server.requests[-2:]
    assert first["model"] == MODEL and first["stream"] is True
    assert {tool["function"]["name"] for tool in first["tools"]} == {"get_weather_forecast", "get_local_events"}
    tool_results = {m["tool_call_id"]: m["content"] for m in second["messages"] if m.get("role") == "tool"}
    assert set(tool_results) == {"call_weather", "call_events"}
    # The worker really ran the tools: the server got back exactly what they return.
    assert get_weather_forecast("Lisbon", 2) in _text_of(tool_results["call_weather"])
    assert get_local_events("Lisbon", "food") in _text_of(tool_results["call_events"])


def _text_of(content: str | list[dict[str, Any]]) -> str:
    # A tool message's content is a string or a list of text parts, depending on the client version.
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
