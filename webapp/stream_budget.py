"""A budget of open SSE streams: each holds one Redis connection, and past the budget the app says 503.

Every SSE reader parks one `XREAD BLOCK` on its own Redis connection for as long as its stream is
open. Before this budget the readers shared redis-py's default pool (100 connections) with the rest
of the app: at 300 open streams `POST /run` failed with 500 and 200 streams died with
`MaxConnectionsError`. Now the readers get their own pool of WEB_MAX_STREAMS connections (default
200), the requests that start runs keep theirs, and a stream asked for past the budget is refused
at once with 503 and `Retry-After`, which a browser's EventSource or a script can act on.

With telemetry on (support/telemetry.py): `agent_stream.readers.connected` (streams open now) and
`agent_stream.streams.refused` (the 503s).

Seen at work: tests/webapp/test_web_guards.py, streams past a budget of two get 503 and runs still start.
"""

from __future__ import annotations

from typing import Any

from sse_starlette import EventSourceResponse
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from redis_stream_response_handler import RedisStreamResponseHandler
from support import telemetry
from support.redis_connection import async_client
from support.redis_quirks import socket_timeout_outlasting

RETRY_AFTER_SECONDS = 5


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


def reader_handler(redis_url: str, budget: StreamBudget, idle_timeout_seconds: float) -> RedisStreamResponseHandler:
    """A stream handler whose pool has exactly one connection per stream the budget allows."""
    client = async_client(  # Redis or RedisCluster, with Entra ID if configured (support/redis_connection.py)
        redis_url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout_outlasting(idle_timeout_seconds),
        max_connections=budget.limit,
    )
    return RedisStreamResponseHandler(client, idle_timeout_seconds=idle_timeout_seconds)


class BudgetedEventSourceResponse(EventSourceResponse):
    """An SSE response that gives its reserved stream back however it ends (done, error, disconnect)."""

    def __init__(self, *args: Any, budget: StreamBudget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._budget.close()
