"""Azure's managed identity endpoint, played on loopback: the test double for Microsoft Entra ID.

In Azure App Service (and Functions, Container Apps), a managed identity gets
its tokens from a local HTTP endpoint named by IDENTITY_ENDPOINT and
IDENTITY_HEADER. `DefaultAzureCredential` finds it there. This fake serves that
endpoint on 127.0.0.1: each request returns a fresh, short-lived JWT whose
`oid` claim is the identity's object id, and, as Azure Managed Redis does for
an access policy assignment, makes that token the password of the Redis ACL
user named after the object id. A token stops being accepted when it expires,
so a client that does not renew its token fails on its next new connection.

Everything else is real: azure-identity, redis-entraid, redis-py's AUTH and re-AUTH.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import jwt
import redis

OBJECT_ID = "5f2b6c1e-7a43-4d0e-9a51-0c3f8e2d4b7a"


class AclAdmin(Protocol):
    """What sets the ACL user's password: one Redis (`redis_for_entra_id`), or every node of a cluster."""

    def execute_command(self, *args: Any) -> Any: ...


class FakeManagedIdentity:
    """Issues tokens for `OBJECT_ID` and keeps the Redis ACL user's password in step with them."""

    def __init__(self, admin: AclAdmin | None, *, lifetime_seconds: int = 3600) -> None:
        self.admin = admin  # None: this host has no identity, and the endpoint says so
        self.lifetime_seconds = lifetime_seconds
        self.header_secret = uuid.uuid4().hex
        self.issued: list[str] = []
        self.issued_at: list[float] = []  # time.monotonic() of each token
        self._expiry: dict[str, float] = {}
        self.resources: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())

    @property
    def environment(self) -> dict[str, str]:
        """The variables App Service sets, which send DefaultAzureCredential here."""
        return {
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{self._server.server_port}/msi/token",
            "IDENTITY_HEADER": self.header_secret,
        }

    def issue(self, resource: str) -> dict[str, Any]:
        assert self.admin is not None
        with self._lock:
            now = int(time.time())
            claims = {"oid": OBJECT_ID, "aud": resource, "iat": now, "exp": now + self.lifetime_seconds}
            token = jwt.encode({**claims, "jti": uuid.uuid4().hex}, self.header_secret, algorithm="HS256")
            expired = [f"<{old}" for old, expiry in self._expiry.items() if expiry <= now]
            self.admin.execute_command("ACL", "SETUSER", OBJECT_ID, "on", f">{token}", *expired, "~*", "&*", "+@all")
            self._expiry = {old: expiry for old, expiry in self._expiry.items() if expiry > now}
            self._expiry[token] = claims["exp"]
            self.issued.append(token)
            self.issued_at.append(time.monotonic())
            self.resources.append(resource)
        return {"access_token": token, "expires_on": str(claims["exp"]), "resource": resource, "token_type": "Bearer"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        identity = self

        class TokenEndpoint(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("X-IDENTITY-HEADER") != identity.header_secret:
                    self.send_error(401)
                    return
                resource = parse_qs(urlsplit(self.path).query).get("resource", [""])[0]
                if identity.admin is None:  # what App Service answers when no identity is assigned
                    answer, status = {"statusCode": 400, "message": "No managed identity found"}, 400
                else:
                    answer, status = identity.issue(resource), 200
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return TokenEndpoint

    def __enter__(self) -> FakeManagedIdentity:
        threading.Thread(target=self._server.serve_forever, name="fake-managed-identity", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def redis_for_entra_id(port: int) -> Iterator[redis.Redis]:
    """Lock the Redis on `port` down like Azure: no default user; an admin user stands in for the control plane."""
    password = uuid.uuid4().hex
    with redis.Redis(port=port) as bootstrap:
        bootstrap.execute_command("ACL", "SETUSER", "control-plane", "on", f">{password}", "~*", "&*", "+@all")
        bootstrap.execute_command("ACL", "SETUSER", "default", "off")
    with redis.Redis(port=port, username="control-plane", password=password) as admin:
        yield admin
