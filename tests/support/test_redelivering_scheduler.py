"""The embedded scheduler: loopback only unless told otherwise, and a hung worker's work is delivered again.

The workers here are minimal clients of the real gRPC protocol (`GetWorkItems`), so a test can
freeze one (SIGSTOP) and see exactly which work item reaches whom. The whole worker and client
are exercised in tests/reliability/test_worker_crash.py.

Run it: `uv run pytest tests/support/test_redelivering_scheduler.py`
"""

from __future__ import annotations

import ipaddress
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
import pytest
from durabletask.client import TaskHubGrpcClient
from durabletask.entities import EntityInstanceId
from google.protobuf.wrappers_pb2 import StringValue

from scheduler_server import parse_arguments
from support.ports import free_port, port_answers
from support.redelivering_scheduler import LOOPBACK, RedeliveringScheduler
from support.services import embedded_scheduler
from tests.conftest import ROOT, cli_environment
from tests.support.test_scale_out import SchedulerProcess

ENTITY = EntityInstanceId("counter", "k1")


def non_loopback_address() -> str:
    """An address of this machine that is not loopback, or a skip saying there is none."""
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    for text in found:
        if not ipaddress.ip_address(text.split("%")[0]).is_loopback:
            return text
    pytest.skip(f"this machine has no non-loopback address (`hostname -I` printed {found!r}), so none to probe")


def test_the_embedded_scheduler_is_not_reachable_on_a_non_loopback_address() -> None:
    address, port = non_loopback_address(), free_port()
    with embedded_scheduler(port):
        assert port_answers("127.0.0.1", port) and port_answers("localhost", port)
        assert not port_answers(address, port), f"the scheduler answers on {address}:{port}"


def test_scheduler_server_binds_loopback_only(tmp_path: Path) -> None:
    address, env = non_loopback_address(), cli_environment(REDIS_CONNECTION_STRING="redis://127.0.0.1:1")
    server = SchedulerProcess(port := free_port(), tmp_path / "scheduler.log", env)
    try:
        assert port_answers("localhost", port) and not port_answers(address, port)
        assert "(loopback only)" in server.log.read_text()
    finally:
        assert server.stop() == 0


def test_exposing_the_scheduler_takes_an_explicit_host() -> None:
    assert parse_arguments([], 8080).host == LOOPBACK
    address, port = non_loopback_address(), free_port()
    with embedded_scheduler(port, parse_arguments(["--host", "0.0.0.0"], port).host):
        assert port_answers(address, port)


# A worker that takes work items and never completes them; the test freezes it with SIGSTOP.
_SILENT_WORKER = """
import sys, grpc
import durabletask.internal.orchestrator_service_pb2 as pb, durabletask.internal.orchestrator_service_pb2_grpc as stubs
stub = stubs.TaskHubSidecarServiceStub(grpc.insecure_channel(sys.argv[1]))
for item in stub.GetWorkItems(pb.GetWorkItemsRequest()):
    print(item.entityRequestV2.instanceId, item.completionToken, flush=True)
"""


@pytest.fixture
def scheduler() -> Iterator[str]:
    port = free_port()
    backend = RedeliveringScheduler(port, ping_interval=0.5, ping_timeout=0.5)  # short lease: a quick test
    backend.start()
    yield f"localhost:{port}"
    backend.stop(grace=0)


def test_the_work_of_a_hung_worker_goes_to_the_next_worker_once_its_lease_expires(scheduler: str) -> None:
    command = [sys.executable, "-c", _SILENT_WORKER, scheduler]
    hung = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=cli_environment())
    client = TaskHubGrpcClient(host_address=scheduler)
    try:
        time.sleep(0.5)  # let it connect, so the signal goes to it
        client.signal_entity(ENTITY, "add", 1)
        assert hung.stdout is not None
        first_entity, first_token = hung.stdout.readline().split()
        assert first_entity == str(ENTITY)
        hung.send_signal(signal.SIGSTOP)  # alive, connected, silent: only the lease can tell

        items, channel = _take_work(scheduler)
        item = items.get(timeout=10)  # the lease is 1 s; without re-delivery nothing ever comes
        assert item.entityRequestV2.instanceId == str(ENTITY)
        assert [event.entityOperationSignaled.operation for event in item.entityRequestV2.operationRequests] == ["add"]
        assert item.completionToken != first_token

        # The hung worker's late completion is ignored; the new worker's counts.
        stub = stubs.TaskHubSidecarServiceStub(channel)
        stub.CompleteEntityTask(_result(first_token, "99"))
        stub.CompleteEntityTask(_result(item.completionToken, "1"))
        entity = client.get_entity(ENTITY)
        assert entity is not None and entity.get_state() == "1"
        channel.close()
    finally:
        hung.kill()
        hung.wait()
        client.close()


def _take_work(address: str) -> tuple[queue.Queue[pb.WorkItem], grpc.Channel]:
    """A second worker: its work items arrive on the returned queue."""
    items: queue.Queue[pb.WorkItem] = queue.Queue()
    channel = grpc.insecure_channel(address)
    stream = stubs.TaskHubSidecarServiceStub(channel).GetWorkItems(pb.GetWorkItemsRequest())

    def pump() -> None:
        try:
            for item in stream:
                items.put(item)
        except grpc.RpcError:
            pass  # the channel closed at the end of the test

    threading.Thread(target=pump, daemon=True).start()
    return items, channel


def _result(token: str, state: str) -> pb.EntityBatchResult:
    return pb.EntityBatchResult(
        completionToken=token,
        entityState=StringValue(value=state),
        results=[pb.OperationResult(success=pb.OperationResultSuccess())],
    )
