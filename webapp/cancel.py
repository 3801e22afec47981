"""`POST /agents/TravelPlanner/cancel/{session}`: stop the session's current run (the page's Stop button).

    200 {"session", "correlation_id", "status": "cancelled"}   the worker stopped it; readers got `cancelled`
    202 {"session", "correlation_id", "status": "requested"}   asked, but no worker confirmed it within 5 s,
                                                               or the run waits for a run slot (it will not start)
    404 {"error"}   unknown session (no stream and no recorded conversation)
    409 {"error"}   nothing to stop: no run in progress, or it ended before the stop reached it

Closing an event stream never stops a run; only this does. See reliability/stop_requests.py.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from redis_stream_response_handler import RedisStreamResponseHandler
from reliability.stop_requests import stop_current_run

STATUS_CODES = {"cancelled": 200, "unconfirmed": 202, "will_not_start": 202, "unknown": 404}  # anything else: 409


async def cancel_run(request: Request, session_key: str) -> Response:
    """Ask the worker to stop `session_key`'s current run and say what became of it."""
    handler: RedisStreamResponseHandler = request.app.state.handler
    outcome = await stop_current_run(
        handler,
        request.app.state.client,
        session_key,
        "stopped through POST /agents/TravelPlanner/cancel",
        idle_timeout_seconds=handler.idle_timeout_seconds,
    )
    status_code = STATUS_CODES.get(outcome.status, 409)
    if status_code >= 400:
        return JSONResponse({"error": outcome.message}, status_code=status_code)
    status = "cancelled" if outcome.status == "cancelled" else "requested"
    body = {"session": session_key, "correlation_id": outcome.correlation_id, "status": status}
    return JSONResponse(body, status_code=status_code)
