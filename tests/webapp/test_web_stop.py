"""web.py with clients that linger: half-sent request heads are closed, and Ctrl+C tells every open stream.

uv run pytest tests/webapp/test_web_stop.py -q
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from support.ports import free_port
from tests.conftest import cli_environment
from tests.terminal import Terminal
from tests.webapp.test_web import STREAM, Server, serve
from tests.webapp.test_web_guards import no_worker
from webapp import server as web_server


@pytest.fixture
def web(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setattr(web_server, "REQUEST_HEAD_SECONDS", 1.0)  # read when each connection opens
    with serve(redis_url, no_worker) as server:
        yield server


async def test_connections_that_never_finish_their_request_head_are_closed(web: Server) -> None:
    url = urlsplit(web.url)
    half_open = [await asyncio.open_connection(url.hostname, url.port) for _ in range(50)]
    for _, writer in half_open:
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # slowloris: the head never ends
        await writer.drain()
    async with asyncio.timeout(30):  # far past REQUEST_HEAD_SECONDS: without the deadline, held for good
        closed = [await reader.read() for reader, _ in half_open]
    assert closed == [b""] * 50  # closed by the server, no response
    async with httpx.AsyncClient(base_url=web.url) as http:  # a prompt client is served as before
        assert (await http.get("/")).status_code == 200


async def test_ctrl_c_with_streams_open_tells_each_reader_where_to_resume_and_exits_0() -> None:
    own_ports = {"LOCAL_SCHEDULER_PORT": str(free_port()), "LOCAL_REDIS_PORT": str(free_port())}
    port = free_port()
    web = Terminal("web.py", "--port", str(port), env=cli_environment(**own_ports))
    try:
        web.read_until("[web] open http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            streams = [
                http.stream("GET", f"{STREAM}/nobody-writes-{uuid.uuid4().hex}", params={"cursor": "0-0"})
                for _ in range(3)
            ]
            lines = [(await stream.__aenter__()).aiter_lines() for stream in streams]
            for reader in lines:
                while await anext(reader) != "":
                    pass  # until the retry hint's blank line: the response is streaming
            web.press_ctrl_c()
            endings = [[line async for line in reader if line] for reader in lines]
            for stream in streams:
                await stream.__aexit__(None, None, None)
        assert web.wait(timeout=15) == 0, web.output
    finally:
        web.close()

    for lines in endings:  # one event each: why, and where to resume (no entry arrived: the cursor given)
        assert sorted(lines) == ["data: the server is stopping; resume after 0-0", "event: error", "id: 0-0"], lines
    after = web.output.split("^C", 1)[1]
    assert [line for line in after.splitlines() if line.strip()] == ["[web] stopped"], web.output
    assert "ERROR" not in web.output and "Traceback" not in web.output
