"""How support/scheduler.py reaches a task hub: the channel and credential follow ENDPOINT's scheme.

No Azure calls: creating `DefaultAzureCredential` is local; only asking it for a
token would reach out.

Run it: `uv run pytest tests/support/test_scheduler.py`
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from azure.identity import DefaultAzureCredential

from support.ports import free_port
from support.scheduler import SchedulerConnection, scheduler_connection, scheduler_problem
from tests.conftest import ROOT


@pytest.mark.parametrize("endpoint", ["http://localhost:8080", "http://127.0.0.1:18080", "HTTP://localhost:8080"])
def test_http_endpoints_get_a_plaintext_channel_and_no_credential(endpoint: str) -> None:
    connection = scheduler_connection(endpoint, "default")

    assert connection == SchedulerConnection(host_address=endpoint, taskhub="default", secure_channel=False)
    assert connection.credential() is None


def test_https_endpoints_get_tls_and_the_default_azure_credential() -> None:
    endpoint = "https://my-scheduler.westus2.durabletask.io"
    connection = scheduler_connection(endpoint, "travel-hub")

    assert connection == SchedulerConnection(host_address=endpoint, taskhub="travel-hub", secure_channel=True)
    assert isinstance(connection.credential(), DefaultAzureCredential)


def test_each_call_gets_its_own_credential() -> None:
    # The worker and the client each own (and may close) the credential they were given.
    connection = scheduler_connection("https://my-scheduler.westus2.durabletask.io", "default")

    assert connection.credential() is not connection.credential()


def test_docker_compose_runs_the_emulator_and_redis_with_health_checks() -> None:
    # No Docker engine in CI: this checks what the file says, not that the images start.
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    assert services["dts-emulator"]["image"].startswith("mcr.microsoft.com/dts/dts-emulator")
    assert {"8080:8080", "8082:8082"} <= set(services["dts-emulator"]["ports"])
    assert "6379:6379" in services["redis"]["ports"]
    assert all("test" in service["healthcheck"] for service in services.values())


def test_the_embedded_scheduler_passes_the_hello_check(scheduler_endpoint: str) -> None:
    assert scheduler_problem(scheduler_endpoint, "default") is None


def test_a_redis_port_is_not_a_scheduler(redis_url: str) -> None:
    problem = scheduler_problem(redis_url.replace("redis://", "http://"), "default")

    assert problem is not None and "Failed parsing HTTP/2" in problem


@pytest.fixture
def grpc_server_without_services() -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_a_grpc_server_of_another_kind_is_not_a_scheduler(grpc_server_without_services: str) -> None:
    assert scheduler_problem(grpc_server_without_services, "default") == "UNIMPLEMENTED: Method not found!"
