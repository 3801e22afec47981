"""Connecting to a Durable Task scheduler: the emulator, Azure, or the embedded one.

`ENDPOINT` decides the channel: an `http://` endpoint (the local emulator, or
the embedded in-memory scheduler) gets a plaintext gRPC channel and no
credential; an `https://` endpoint (Azure Durable Task Scheduler) gets TLS and
an Azure credential (`DefaultAzureCredential`: `az login` on a laptop, a
managed identity in Azure; set AZURE_CLIENT_ID to pick a user-assigned one).

Connection strings: the Azure portal also shows the scheduler as
"Endpoint=https://...;Authentication=DefaultAzure;TaskHub=...". The installed
durabletask-azuremanaged SDK (1.12) has no parser for that form (its worker
and client take `host_address`, `taskhub` and `token_credential` only), so
this sample takes the endpoint URL in ENDPOINT and the hub in TASKHUB instead.

Before using an endpoint, `scheduler_problem` sends it the protocol's `Hello`
call: something else listening there (a web server on 8080 is common) is then
one clear configuration error, not a gRPC failure on the first real request or
a worker that retries forever.

Try it: `uv run python -m support.scheduler` says whether a scheduler answers at ENDPOINT (else localhost:8080).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
from azure.core.credentials import TokenCredential
from durabletask.azuremanaged.client import DurableTaskSchedulerClient
from durabletask.internal.orchestrator_service_pb2_grpc import TaskHubSidecarServiceStub
from google.protobuf.empty_pb2 import Empty

# What a gRPC call to something that is not a gRPC server ends with (an HTTP/1
# server, a Redis port, a TLS mismatch), or to a gRPC server of another kind.
_NOT_A_SCHEDULER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class SchedulerConnection:
    """How the worker and the client reach one task hub."""

    host_address: str
    taskhub: str
    secure_channel: bool

    def credential(self) -> TokenCredential | None:
        if not self.secure_channel:
            return None
        # Imported here: only Azure endpoints need azure-identity's credential chain.
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def arguments(self) -> dict[str, Any]:
        """What `DurableTaskSchedulerWorker` and `DurableTaskSchedulerClient` take to reach the hub."""
        return {
            "host_address": self.host_address,
            "secure_channel": self.secure_channel,
            "taskhub": self.taskhub,
            "token_credential": self.credential(),
        }


def scheduler_connection(endpoint: str, taskhub: str) -> SchedulerConnection:
    """Channel security follows the endpoint's scheme: https means TLS and a credential."""
    secure = urlsplit(endpoint).scheme == "https"
    return SchedulerConnection(host_address=endpoint, taskhub=taskhub, secure_channel=secure)


def connect_client(endpoint: str, taskhub: str) -> DurableTaskSchedulerClient:
    """A scheduler client for `endpoint`: it starts runs and reads the entities' recorded state."""
    arguments = scheduler_connection(endpoint, taskhub).arguments()
    return DurableTaskSchedulerClient(**arguments, logger=logging.getLogger("durabletask.client"))


def scheduler_problem(endpoint: str, taskhub: str, timeout: float = 5.0) -> str | None:
    """Why `endpoint` does not answer as a Durable Task scheduler, or None when it does.

    Any other gRPC status (UNAUTHENTICATED from Azure, which this call sends no
    token to, for one) still proves a scheduler is there; the worker and the
    client authenticate with their own calls.
    """
    secure = scheduler_connection(endpoint, taskhub).secure_channel
    parts = urlsplit(endpoint)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname  # an IPv6 literal
    target = f"{host}:{parts.port or (443 if secure else 80)}"
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if secure else grpc.insecure_channel(target)
    with channel:
        try:
            TaskHubSidecarServiceStub(channel).Hello(Empty(), timeout=timeout, metadata=[("taskhub", taskhub)])
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
            if code in _NOT_A_SCHEDULER:
                details: str = error.details() or ""  # type: ignore[attr-defined]
                # "failed to connect to all addresses; last error: UNAVAILABLE: ...": the last error says why.
                return details.rsplit("last error: ", 1)[1] if "last error: " in details else f"{code.name}: {details}"
    return None


if __name__ == "__main__":
    from support.config import load_settings

    settings = load_settings()
    configured = settings.endpoint or f"http://localhost:{settings.local_scheduler_port}"
    endpoint = sys.argv[1] if len(sys.argv) > 1 else configured
    print(scheduler_connection(endpoint, settings.taskhub))
    print(scheduler_problem(endpoint, settings.taskhub) or "a Durable Task scheduler answers there")
