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

Try it: `uv run python scheduler.py http://localhost:8080`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential


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


def scheduler_connection(endpoint: str, taskhub: str) -> SchedulerConnection:
    """Channel security follows the endpoint's scheme: https means TLS and a credential."""
    secure = urlsplit(endpoint).scheme == "https"
    return SchedulerConnection(host_address=endpoint, taskhub=taskhub, secure_channel=secure)


if __name__ == "__main__":
    print(scheduler_connection(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8080", "default"))
