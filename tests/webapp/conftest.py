"""The web app on a free port with an in-process demo worker, and an HTTP client for it (module-scoped server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.webapp.test_web import Server, demo_worker, serve


@pytest.fixture(scope="module")
def web(redis_url: str) -> Iterator[Server]:
    with serve(redis_url, demo_worker()) as server:
        yield server


@pytest.fixture
async def http(web: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as client:
        yield client
