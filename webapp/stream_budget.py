"""A budget of open streams (SSE and AG-UI readers), and the Redis clients the web app reads and writes with.

Readers hold no Redis connection of their own: the stream hub (webapp/stream_hub.py) reads every
live stream once and fans its entries out. What a reader costs is memory (its buffer, its
generator, the response, two file descriptors), so WEB_MAX_STREAMS caps readers by memory
(default 10,000: docs/benchmarks.md, the fan-out section, measures the bytes per reader). A
stream asked for past the budget is refused at once with 503 and `Retry-After`, which a
browser's EventSource or a script can act on.

Every path that reserves a stream gives it back however the request ends: done, error, the
client gone, or an exception before the response began (`reserved_stream`).

With telemetry on (support/telemetry.py): `agent_stream.readers.connected` (streams open now) and
`agent_stream.streams.refused` (the 503s).

Seen at work: tests/webapp/test_web_guards.py, streams past a budget of two get 503 and runs still start.
"""

from __future__ import annotations

import random
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from redis_stream_response_handler import RedisStreamResponseHandler
from support import telemetry
from support.redis_connection import async_client
from support.redis_quirks import socket_timeout_outlasting
from webapp.stream_hub import StreamHub, hub_client_options

RETRY_AFTER_SECONDS = 5
STOP_GRACE_SECONDS = 0.5  # less than uvicorn's timeout_graceful_shutdown (webapp/server.py)
REQUEST_CONNECTIONS = 16  # the requests' own pool (starting runs, AG-UI records): they wait for one past this


class StreamBudget:
    """How many SSE streams are open, against the most that may be."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def try_open(self) -> bool:
        """Reserve a stream; False when the budget is spent. Pair each True with `close`."""
        if self.open >= self.limit:
            telemetry.streams_refused.add(1)
            return False
        self.open += 1
        telemetry.readers_connected.add(1)
        return True

    def close(self) -> None:
        self.open -= 1
        telemetry.readers_connected.add(-1)


def too_many_streams(budget: StreamBudget) -> JSONResponse:
    """503 with Retry-After: every stream the budget allows is open (nothing was started)."""
    return JSONResponse(
        {"error": f"too many open streams (the limit is {budget.limit}, WEB_MAX_STREAMS); retry shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def stream_hub(redis_url: str, idle_timeout_seconds: float) -> StreamHub:
    """The hub every reader of this web process goes through, on a client of HUB_CONNECTIONS connections."""
    client = async_client(redis_url, wait_for_connection=True, **hub_client_options())
    return StreamHub(client, idle_timeout_seconds)


def request_handler(redis_url: str, idle_timeout_seconds: float) -> RedisStreamResponseHandler:
    """The handler requests use (cursors, AG-UI run records): a bounded pool, so a burst of them waits, not fails."""
    client = async_client(  # Redis or RedisCluster, with Entra ID if configured (support/redis_connection.py)
        redis_url,
        wait_for_connection=True,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout_outlasting(idle_timeout_seconds),
        max_connections=REQUEST_CONNECTIONS,
    )
    return RedisStreamResponseHandler(client, idle_timeout_seconds=idle_timeout_seconds)


class BudgetedEventSourceResponse(EventSourceResponse):
    """An SSE response that gives its reserved stream back however it ends (done, error, disconnect)."""

    def __init__(self, *args: Any, budget: StreamBudget, ping: float, **kwargs: Any) -> None:
        # Readers that connect together (a wall of dashboards, a shared link) would send their keep-alive
        # comments together for ever: 10,000 in one burst, holding up the tokens. 1–1.5× the interval spreads them.
        kwargs["ping"] = ping * random.uniform(1.0, 1.5)
        # On Ctrl+C the hub ends every reader with an error event (webapp/server.py); sse-starlette,
        # which sees the stop too, lets the generator send it before cancelling what is left.
        super().__init__(*args, shutdown_grace_period=STOP_GRACE_SECONDS, **kwargs)
        self._budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._budget.close()
