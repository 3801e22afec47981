"""Works around durabletask 1.12.0's in-memory backend, which never re-delivers the work of a worker that died.

`durabletask.testing.InMemoryOrchestrationBackend` marks a work item "in flight"
when it hands it to a worker and waits for its completion forever: if the worker
is killed, the entity stays locked and no later operation on it (no next turn of
the conversation) ever runs. The Durable Task Scheduler (Azure, or its emulator)
re-delivers such work to the next worker. `RedeliveringScheduler` is the local
stand-in that does the same:

- Work belongs to the worker's `GetWorkItems` stream it was sent on. When that
  stream ends (the worker was killed, stopped, or lost its connection), every
  entity or orchestration work item it still holds goes back to the queue, with
  the base class's own abandon steps, and the next worker receives it.
- A worker that hangs (a stopped process, a frozen machine) holds a lease: the
  scheduler pings its connection every `ping_interval` seconds, and a ping not
  answered within `ping_timeout` closes the connection, which ends the stream.
  gRPC answers pings on its own threads, so a busy worker keeps its lease; a
  live process whose run is merely slow is never second-guessed.
- The re-queued work gets a new completion token, so a late completion from the
  lost worker is ignored instead of overwriting the new attempt's result.

What re-delivery means: the whole operation runs again from the entity's state
before it, so the agent answers again (and its tools run again); readers see a
second `start` marker, which they show as a restart. Activities are not
re-delivered (this sample has none; the base class keeps no record of them).

It also binds `host` (loopback by default, not the base class's `[::]`) and
refuses a port another server already holds, instead of sharing it silently.

Seen at work: reliability/crash_demo.py kills a worker mid-answer and watches its run come back
(`sample.py --crash-demo`); README.md, "Workers that come and go", runs several workers by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import cast

import durabletask.internal.orchestrator_service_pb2 as pb
import durabletask.internal.orchestrator_service_pb2_grpc as stubs
import grpc
from durabletask.testing import InMemoryOrchestrationBackend

logger = logging.getLogger(__name__)

LOOPBACK = "localhost"  # 127.0.0.1 and ::1
PING_INTERVAL_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 5.0  # a hung worker's work is re-delivered within about 10 s: under the readers' idle timeout


@dataclass(eq=False)
class _Lease:
    """What one worker's GetWorkItems stream holds: entity and orchestration instance ids."""

    entities: set[str] = field(default_factory=set[str])
    orchestrations: set[str] = field(default_factory=set[str])
    ended: bool = False


class RedeliveringScheduler(InMemoryOrchestrationBackend):
    """The in-memory backend, plus re-delivery of a lost worker's work, bound to `host` only."""

    def __init__(
        self,
        port: int,
        host: str = LOOPBACK,
        *,
        ping_interval: float = PING_INTERVAL_SECONDS,
        ping_timeout: float = PING_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(port=port)
        self.host = host
        self._options = [
            ("grpc.keepalive_time_ms", int(ping_interval * 1000)),
            ("grpc.http2.ping_timeout_ms", int(ping_timeout * 1000)),  # (grpc.keepalive_timeout_ms does not close it)
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging a worker that receives no work
            ("grpc.so_reuseport", 0),  # a second server on the port is an error, not a silent share
        ]
        self._holders: dict[tuple[str, str], _Lease] = {}  # ("entity" | "orchestration", instance id) -> lease

    def start(self) -> str:
        """The base class's start, with our bind address and server options."""
        self._shutdown_event.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=10), options=self._options)
        add_servicer = cast(
            Callable[[InMemoryOrchestrationBackend, grpc.Server], None],
            stubs.add_TaskHubSidecarServiceServicer_to_server,  # pyright: ignore[reportUnknownMemberType]
        )
        add_servicer(self, server)
        server.add_insecure_port(f"{self.host}:{self._port}")  # raises RuntimeError when it cannot bind
        server.start()
        self._server = server
        return f"{self.host}:{self._port}"

    def wait_until_idle(self, timeout: float) -> bool:
        """True once no work is out with a worker, within `timeout` seconds.

        A reader sees a run's done marker a moment before the worker reports the run complete. A
        process that stops its own worker right after reading it (the benchmarks) waits here, so the
        stop does not cut off that report and turn a finished run into one to deliver again.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._entity_in_flight and not self._orchestration_in_flight:
                    return True
            time.sleep(0.01)
        return False

    def GetWorkItems(  # noqa: N802 - the gRPC method's name
        self, request: pb.GetWorkItemsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WorkItem]:
        lease = _Lease()
        if not context.add_callback(lambda: self._release(lease)):  # called however the stream ends
            return  # it has ended already
        for item in super().GetWorkItems(request, context):
            if not self._hold(lease, item):
                return
            yield item

    def _hold(self, lease: _Lease, item: pb.WorkItem) -> bool:
        """Record `item` as held by `lease`; False if the stream already ended (the item is then re-queued)."""
        with self._lock:
            self._forget_finished(lease)
            if item.HasField("entityRequestV2"):
                lease.entities.add(item.entityRequestV2.instanceId)
                self._holders["entity", item.entityRequestV2.instanceId] = lease
            elif item.HasField("orchestratorRequest"):
                lease.orchestrations.add(item.orchestratorRequest.instanceId)
                self._holders["orchestration", item.orchestratorRequest.instanceId] = lease
            if lease.ended:  # the stream ended between the dispatch and this line
                self._release(lease)
            return not lease.ended

    def _release(self, lease: _Lease) -> None:
        """The stream ended: put back every item it still holds."""
        with self._lock:
            lease.ended = True
            for entity_id in lease.entities:
                if self._holders.pop(("entity", entity_id), None) is lease:
                    self._requeue_entity(entity_id)
            for instance_id in lease.orchestrations:
                if self._holders.pop(("orchestration", instance_id), None) is lease:
                    self._requeue_orchestration(instance_id)
            lease.entities.clear()
            lease.orchestrations.clear()

    def _forget_finished(self, lease: _Lease) -> None:
        """Drop what `lease` held and the worker completed, so a long-lived stream's records stay small."""
        for entity_id in [e for e in lease.entities if e not in self._entity_in_flight]:
            lease.entities.discard(entity_id)
            if self._holders.get(("entity", entity_id)) is lease:
                del self._holders["entity", entity_id]
        for instance_id in [i for i in lease.orchestrations if i not in self._orchestration_in_flight]:
            lease.orchestrations.discard(instance_id)
            if self._holders.get(("orchestration", instance_id)) is lease:
                del self._holders["orchestration", instance_id]

    def _requeue_entity(self, entity_id: str) -> None:
        entity = self._entities.get(entity_id)
        if entity is None or entity_id not in self._entity_in_flight:
            return  # completed (or abandoned by the worker itself) before its stream ended
        entity.pending_operations = entity.dispatched_operations + entity.pending_operations
        entity.dispatched_operations = []
        entity.completion_token = self._new_completion_token()
        self._entity_in_flight.discard(entity_id)
        self._enqueue_entity(entity_id)
        logger.warning("re-delivering entity %s: the worker it was sent to is gone", entity_id)

    def _requeue_orchestration(self, instance_id: str) -> None:
        instance = self._instances.get(instance_id)
        if instance is None or instance_id not in self._orchestration_in_flight:
            return
        instance.pending_events = instance.dispatched_events + instance.pending_events
        instance.dispatched_events = []
        instance.completion_token = self._new_completion_token()
        self._orchestration_in_flight.discard(instance_id)
        self._enqueue_orchestration(instance_id)
        logger.warning("re-delivering orchestration %s: the worker it was sent to is gone", instance_id)

    def _new_completion_token(self) -> int:
        token = self._next_completion_token
        self._next_completion_token += 1
        return token
