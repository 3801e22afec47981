"""The embedded scheduler: loopback only unless told otherwise, and a hung worker's work is delivered again.

The workers here are minimal clients of the real gRPC protocol (`GetWorkItems`), so a test can
freeze one (SIGSTOP) and see exactly which work item reaches whom. The lease races are driven
directly (`_Stream`: the servicer method, called as gRPC's server calls it), so each interleaving
is the one named, every time. The whole worker and client are exercised in
tests/reliability/test_worker_crash.py and tests/reliability/test_drain.py.

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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

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

        # The hung worker's late completion is refused, and it is told so; the new worker's counts.
        stub = stubs.TaskHubSidecarServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CompleteEntityTask(_result(first_token, "99"))
        assert cast(grpc.Call, refused.value).code() == grpc.StatusCode.FAILED_PRECONDITION
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


class _Stream:
    """The server side of one worker's GetWorkItems stream, driven by the test: the scheduler is the real one.

    Calling the servicer method directly (as gRPC's server does) lets a test decide exactly which
    stream is handed which work item, and when a stream ends: the races below, without sleeps.
    """

    def __init__(self, backend: RedeliveringScheduler) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._active = True
        self._items = backend.GetWorkItems(pb.GetWorkItemsRequest(), cast(grpc.ServicerContext, self))
        self.received: queue.Queue[pb.WorkItem] = queue.Queue()

    def is_active(self) -> bool:
        return self._active

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._callbacks.append(callback)
        return True

    def next_item(self, timeout: float = 10) -> pb.WorkItem | None:
        """The next work item the scheduler sends on this stream; None if none comes within `timeout`."""

        def take() -> None:
            item = next(self._items, None)
            if item is not None:
                self.received.put(item)

        threading.Thread(target=take, daemon=True).start()
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            return None

    def end(self) -> None:
        """The worker is gone: what gRPC does when a stream ends (the callbacks, then no more items)."""
        self._active = False
        for callback in self._callbacks:
            callback()


@pytest.fixture
def backend() -> Iterator[RedeliveringScheduler]:
    running = RedeliveringScheduler(free_port())
    running.start()
    yield running
    running.stop(grace=0)


def _signal(backend: RedeliveringScheduler, operation: str = "add") -> None:
    request = pb.SignalEntityRequest(instanceId=str(ENTITY), name=operation, requestId=uuid.uuid4().hex)
    backend.SignalEntity(request, cast(grpc.ServicerContext, None))


class _RefusedError(Exception):  # what gRPC's `context.abort` does: end the call with a status
    pass


class _Call:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _RefusedError(code, details)


def _complete(backend: RedeliveringScheduler, token: str, state: str) -> None:
    backend.CompleteEntityTask(_result(token, state), cast(grpc.ServicerContext, _Call()))


def _state(backend: RedeliveringScheduler) -> str | None:
    return backend._entities[str(ENTITY)].serialized_state  # pyright: ignore[reportPrivateUsage]


def test_a_stream_that_ends_after_its_work_went_elsewhere_leaves_the_new_holders_lease_alone(
    backend: RedeliveringScheduler,
) -> None:
    # Worker A runs the entity's first operation; the second goes to worker B. A's stream still
    # records the entity (a stale record) when A stops: that must not cost B its lease on it.
    a, b = _Stream(backend), _Stream(backend)
    _signal(backend)
    first = a.next_item()
    assert first is not None
    _complete(backend, first.completionToken, "1")
    _signal(backend)
    second = b.next_item()
    assert second is not None and second.completionToken != first.completionToken
    a.end()  # A stops: B still runs the second operation
    b.end()  # B dies mid-run: its work must go to the next worker
    c = _Stream(backend)
    again = c.next_item(timeout=5)  # without the fix: never, the entity stays locked, the session is stuck
    assert again is not None and again.entityRequestV2.instanceId == str(ENTITY)
    assert again.completionToken not in (first.completionToken, second.completionToken)
    c.end()


@pytest.mark.parametrize("sent_again", [False, True])
def test_a_late_completion_counts_until_the_work_is_sent_again(
    backend: RedeliveringScheduler, sent_again: bool
) -> None:
    # A worker that stops gracefully ends its stream, and then finishes the run it holds.
    a = _Stream(backend)
    _signal(backend)
    item = a.next_item()
    assert item is not None
    a.end()  # its work is back in the queue
    b = _Stream(backend)
    if sent_again:
        again = b.next_item()
        assert again is not None and again.completionToken != item.completionToken
        with pytest.raises(_RefusedError) as refused:  # stale: another worker runs it now, and the late one is told
            _complete(backend, item.completionToken, "99")
        assert refused.value.args[0] == grpc.StatusCode.FAILED_PRECONDITION and _state(backend) is None
        _complete(backend, again.completionToken, "1")
        assert _state(backend) == "1"
    else:
        _complete(backend, item.completionToken, "1")  # nobody has it yet: this result counts, once
        assert _state(backend) == "1"
        _signal(backend, "next")
        after = b.next_item()
        assert after is not None  # the next operation only: the completed one is not delivered again
        operations = [op.entityOperationSignaled.operation for op in after.entityRequestV2.operationRequests]
        assert operations == ["next"]
    b.end()


def test_an_abandoned_token_is_retired_and_the_abandoning_stream_rests(backend: RedeliveringScheduler) -> None:
    a = _Stream(backend)
    _signal(backend)
    item = a.next_item()
    assert item is not None
    backend.AbandonTaskEntityWorkItem(
        pb.AbandonEntityTaskRequest(completionToken=item.completionToken), cast(grpc.ServicerContext, None)
    )
    with pytest.raises(_RefusedError):  # the worker gave it up: what it sends later is stale
        _complete(backend, item.completionToken, "99")
    assert _state(backend) is None
    a_took = a.next_item(timeout=0)  # A asks for work again (the answer lands in its queue)...
    b = _Stream(backend)
    again = b.next_item()  # ...but rests: B gets the work, however the two streams race for it
    assert a_took is None and again is not None and again.completionToken != item.completionToken
    assert a.received.empty()  # A never saw it
    a.end()
    b.end()
