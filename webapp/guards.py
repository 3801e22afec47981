"""Request guards for the web app: a Host allow-list, same-origin writes, and a body size limit.

One pure ASGI middleware, in front of every route:

- Host allow-list (against DNS rebinding: a page on evil.example whose name a DNS server later
  points at 127.0.0.1 would otherwise be "same origin" with this app). A request whose `Host` is
  not in WEB_ALLOWED_HOSTS (default: localhost, 127.0.0.1, ::1) gets 400.
- Same-origin state-changing requests (POST and friends): a body must be JSON
  (`Content-Type: application/json`, 415 otherwise; no body, no type is fine), which a cross-site
  HTML form or a "simple" fetch cannot send without a CORS preflight this app never grants; and an `Origin` or
  `Sec-Fetch-Site: cross-site` that names another site gets 403. Clients that send neither (curl,
  scripts) are not browsers acting for another site, and pass.
- Bodies over MAX_BODY_BYTES get 413 without being kept in memory: a `Content-Length` over the
  limit is refused before a byte of the body is read, and a chunked body is counted as it arrives.

Seen at work: tests/webapp/test_web_guards.py, one request per refusal, each with its status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support.config import DEFAULT_WEB_ALLOWED_HOSTS

# A travel request is at most 32,000 characters; JSON may escape each as \uXXXX (12 bytes for an emoji).
MAX_BODY_BYTES = 512 * 1024
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
DRAIN_FACTOR = 8  # a refused chunked body is read and dropped up to 8 times the limit, then the connection closes


class RequestGuard:
    """ASGI middleware: refuses, with one JSON `error` line, what the app must never process."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is None and scope["method"] not in SAFE_METHODS:
            body = await _read_body(receive, self.max_body_bytes, headers.get("content-length"))
            if body is None:
                refusal = 413, f"the request body is over the limit of {self.max_body_bytes} bytes"
            else:
                receive = _replay(body, receive)
        if refusal is not None:
            await _send_error(send, *refusal)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        allowed = _allowed_hosts(scope)
        if host_name(host) not in allowed:
            return 400, f"this app answers only to {', '.join(allowed)} (Host: {host!r}); see WEB_ALLOWED_HOSTS"
        if scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"{scope.get('scheme', 'http')}://{host}".lower():
            return 403, f"cross-origin request refused (Origin: {origin!r})"
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site request refused (Sec-Fetch-Site: cross-site)"
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        bodiless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
        if media_type != "application/json" and not (media_type == "" and bodiless):  # POST /cancel has no body
            return 415, "the body must be JSON, sent with Content-Type: application/json"
        return None


def host_name(host_header: str) -> str:
    """The host of a `Host` header, without its port: `[::1]:8000` -> `::1`, `LocalHost:80` -> `localhost`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.split(":", 1)[0]


def _allowed_hosts(scope: Scope) -> Sequence[str]:
    settings = getattr(scope["app"].state, "settings", None) if "app" in scope else None
    return settings.web_allowed_hosts if settings is not None else DEFAULT_WEB_ALLOWED_HOSTS


async def _read_body(receive: Receive, limit: int, content_length: str | None) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` (read no further)."""
    declared = content_length if content_length is not None and content_length.isascii() else ""
    if declared.isdigit() and int(declared) > limit:
        return None  # refused before a single byte of it is read
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app sees an empty body and the disconnect after it
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            # Drop (never keep) what is left, up to a bound, so that the client reads the 413
            # instead of a connection reset from closing with its body still arriving.
            while message.get("more_body", False) and size <= DRAIN_FACTOR * limit:
                message = await receive()
                size += len(message.get("body", b""))
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then whatever the client sends next."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body was never read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
