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
- The re-queued work gets a new completion token. Until it is sent to a worker again, the
  old token still completes it: a worker that stopped gracefully (worker.py drains its runs,
  reliability/drain.py) or merely lost its stream finishes the run it holds, and that result
  counts, once. From the moment it is sent again, a late completion is stale and refused
  (FAILED_PRECONDITION; the base class ignores it silently) instead of overwriting the new
  attempt's result, so the worker knows its answer was not recorded.
- Records are per dispatch (instance id and completion token), so a stream ending can only
  put back work it still holds, never a later dispatch of the same entity to another worker.
- A worker that abandons work (durabletask's `AbandonTaskEntityWorkItem`; a draining worker
  abandons every new item) retires that token, and its stream gets no work for a second, so
  the work goes to another worker instead of straight back.

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
STALE_COMPLETION = "stale completion token: the work was delivered again, or already completed"
ABANDON_REST_SECONDS = (
    1.0  # a stream whose worker abandons work gets none for this long (see AbandonTaskEntityWorkItem)
)


@dataclass(eq=False)
class _Lease:
    """What one worker's GetWorkItems stream holds: instance id -> completion token of the dispatch it got.

    A record counts only while that dispatch is the current one (the instance is in flight with that
    token): a record of work the worker completed, abandoned or lost since is stale, and ignored.
    """

    entities: dict[str, str] = field(default_factory=dict[str, str])
    orchestrations: dict[str, str] = field(default_factory=dict[str, str])
    ended: bool = False
    resting_until: float = 0.0  # it abandoned work: none is sent to it before this (time.monotonic())


@dataclass(frozen=True)
class _Orphan:
    """An entity's work whose stream ended: back in the queue, but its worker may still complete it."""

    token: str  # the completion token that worker holds
    operations: int  # how many of the entity's pending operations (the first ones) are that work


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
        self._leases: set[_Lease] = set()  # the open GetWorkItems streams
        self._orphans: dict[str, _Orphan] = {}  # entity id -> its lost worker's work, until dispatched again

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
        with self._lock:
            self._leases.add(lease)
        if not context.add_callback(lambda: self._release(lease)):  # called however the stream ends
            self._release(lease)
            return  # it has ended already
        for item in super().GetWorkItems(request, context):
            taken = self._hold(lease, item)
            if taken is None:
                return  # the stream ended
            if taken:
                yield item
            else:  # its worker abandons work: it stops taking any (a drain), so give it none for a while
                while context.is_active() and time.monotonic() < lease.resting_until:
                    if self._shutdown_event.wait(0.1):
                        return

    def _hold(self, lease: _Lease, item: pb.WorkItem) -> bool | None:
        """Record `item` as held by `lease`: True to send it, False if put back (the lease rests), None if it ended.

        The base class has just dispatched `item` (marked it in flight) and released its lock: the
        stream may have ended or its worker started abandoning work meanwhile. Either way the item
        goes back to the queue here, under the lock, so it can never be left on a lease that no one
        will release again.
        """
        with self._lock:
            self._forget_finished(lease)
            held = self._records_of(lease, item)
            if held is None:
                return True  # an activity: not re-delivered (this sample has none)
            records, instance_id = held
            records[instance_id] = item.completionToken
            if item.HasField("entityRequestV2"):
                self._orphans.pop(instance_id, None)  # dispatched again: the lost worker's completion is stale now
            if lease.ended:  # the stream ended between the dispatch and this line
                self._release(lease)
                return None
            if time.monotonic() < lease.resting_until:
                self._put_back(lease, item)
                return False
            return True

    @staticmethod
    def _records_of(lease: _Lease, item: pb.WorkItem) -> tuple[dict[str, str], str] | None:
        if item.HasField("entityRequestV2"):
            return lease.entities, item.entityRequestV2.instanceId
        if item.HasField("orchestratorRequest"):
            return lease.orchestrations, item.orchestratorRequest.instanceId
        return None

    def _put_back(self, lease: _Lease, item: pb.WorkItem) -> None:
        """Undo the dispatch of `item`, which its worker never saw, for the next worker."""
        if item.HasField("entityRequestV2"):
            instance_id = item.entityRequestV2.instanceId
            lease.entities.pop(instance_id, None)
            entity = self._entities.get(instance_id)
            if entity is not None and instance_id in self._entity_in_flight:
                entity.pending_operations = entity.dispatched_operations + entity.pending_operations
                entity.dispatched_operations = []
                self._entity_in_flight.discard(instance_id)
                self._enqueue_entity(instance_id)
        else:
            instance_id = item.orchestratorRequest.instanceId
            lease.orchestrations.pop(instance_id, None)
            instance = self._instances.get(instance_id)
            if instance is not None and instance_id in self._orchestration_in_flight:
                instance.pending_events = instance.dispatched_events + instance.pending_events
                instance.dispatched_events = []
                self._orchestration_in_flight.discard(instance_id)
                self._enqueue_orchestration(instance_id)

    def _release(self, lease: _Lease) -> None:
        """The stream ended: put back the work it still holds (and only that: see `_Lease`)."""
        with self._lock:
            lease.ended = True
            self._leases.discard(lease)
            for entity_id, token in lease.entities.items():
                if self._entity_token(entity_id) == token:
                    self._requeue_entity(entity_id)
            for instance_id, token in lease.orchestrations.items():
                if self._orchestration_token(instance_id) == token:
                    self._requeue_orchestration(instance_id)
            lease.entities.clear()
            lease.orchestrations.clear()

    def _forget_finished(self, lease: _Lease) -> None:
        """Drop the stale records of `lease`, so a long-lived stream's records stay small."""
        for entity_id, token in list(lease.entities.items()):
            if self._entity_token(entity_id) != token:
                del lease.entities[entity_id]
        for instance_id, token in list(lease.orchestrations.items()):
            if self._orchestration_token(instance_id) != token:
                del lease.orchestrations[instance_id]

    def _entity_token(self, entity_id: str) -> str | None:
        """The completion token of the entity's current dispatch; None when it is not out with a worker."""
        entity = self._entities.get(entity_id)
        return str(entity.completion_token) if entity is not None and entity_id in self._entity_in_flight else None

    def _orchestration_token(self, instance_id: str) -> str | None:
        instance = self._instances.get(instance_id)
        in_flight = instance is not None and instance_id in self._orchestration_in_flight
        return str(instance.completion_token) if in_flight and instance is not None else None

    def _requeue_entity(self, entity_id: str) -> None:
        """Its stream ended: the work goes back to the queue; its worker may complete it until it is sent again."""
        entity = self._entities[entity_id]
        old_token = str(entity.completion_token)
        operations = len(entity.dispatched_operations)
        entity.pending_operations = entity.dispatched_operations + entity.pending_operations
        entity.dispatched_operations = []
        entity.completion_token = self._new_completion_token()
        self._orphans[entity_id] = _Orphan(old_token, operations)
        self._entity_in_flight.discard(entity_id)
        self._enqueue_entity(entity_id)
        logger.warning("re-delivering entity %s: the worker it was sent to is gone", entity_id)

    def _requeue_orchestration(self, instance_id: str) -> None:
        instance = self._instances[instance_id]
        instance.pending_events = instance.dispatched_events + instance.pending_events
        instance.dispatched_events = []
        instance.completion_token = self._new_completion_token()
        self._orchestration_in_flight.discard(instance_id)
        self._enqueue_orchestration(instance_id)
        logger.warning("re-delivering orchestration %s: the worker it was sent to is gone", instance_id)

    def CompleteEntityTask(  # noqa: N802 - the gRPC method's name
        self, request: pb.EntityBatchResult, context: grpc.ServicerContext
    ) -> pb.CompleteTaskResponse:
        """The base class's, plus: a worker whose stream ended may still complete its work, until it is sent again.

        A worker that stops gracefully ends its stream, yet finishes the run it holds. Its work is in
        the queue by then (nothing says the worker will finish), under a new token; while no worker
        has been sent it again, the late completion is taken as the one it is: the work leaves the
        queue and the result counts. Once it is out again, the late completion is stale and refused.
        """
        with self._lock:
            entity_id = next((e for e, o in self._orphans.items() if o.token == request.completionToken), None)
            if entity_id is not None:
                orphan, entity = self._orphans.pop(entity_id), self._entities[entity_id]
                entity.dispatched_operations = entity.pending_operations[: orphan.operations]
                entity.pending_operations = entity.pending_operations[orphan.operations :]
                accepted = pb.EntityBatchResult()
                accepted.CopyFrom(request)
                accepted.completionToken = str(entity.completion_token)
                logger.warning("entity %s: its worker completed it after all; not re-delivering it", entity_id)
                return super().CompleteEntityTask(accepted, context)
            if not any(self._entity_token(e) == request.completionToken for e in self._entity_in_flight):
                # The base class ignores it silently; the worker must know its answer was not recorded
                # (reliability/dispatch.py then drops the run's done marker).
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, STALE_COMPLETION)
            return super().CompleteEntityTask(request, context)

    def AbandonTaskEntityWorkItem(  # noqa: N802 - the gRPC method's name
        self, request: pb.AbandonEntityTaskRequest, context: grpc.ServicerContext
    ) -> pb.AbandonEntityTaskResponse:
        """The base class's, plus: the abandoned token is retired, and the abandoning stream rests.

        A worker abandons what it will not run (a draining worker abandons every new work item): a
        completion it sends later for that token is stale, and its stream gets no work for
        `ABANDON_REST_SECONDS`, instead of the same work straight back.
        """
        with self._lock:
            entity_id = next(
                (e for e in self._entity_in_flight if self._entity_token(e) == request.completionToken), None
            )
            response = super().AbandonTaskEntityWorkItem(request, context)
            if entity_id is not None and entity_id not in self._entity_in_flight:  # the base class put it back
                self._entities[entity_id].completion_token = self._new_completion_token()
                for lease in self._leases:
                    if lease.entities.pop(entity_id, None) == request.completionToken:
                        lease.resting_until = time.monotonic() + ABANDON_REST_SECONDS
            return response

    def _new_completion_token(self) -> int:
        token = self._next_completion_token
        self._next_completion_token += 1
        return token
