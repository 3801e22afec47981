"""Fencing: a superseded attempt at a run can no longer write to its stream.

The scheduler delivers a run again when it thinks its worker died. A worker that was only frozen
(a GC pause, a VM live migration, SIGSTOP) wakes up still running the old attempt, and without a
fence it would keep appending tokens and its own `done` to the same stream as the new attempt.

Every attempt's writer holds a fence token: the scheduler's delivery number, `dispatch:<n>`, when the
scheduler numbers its deliveries (reliability/dispatch.py), else the id of its start marker's attempt.
The run's current owner is kept in a hash beside the stream:

    agent-stream:{session}            the stream
    agent-stream:{session}:attempts   correlation id -> fence token of the attempt that owns the run

Both keys carry the session key as a hash tag (`{...}`), so they live in one cluster hash slot and
one Lua script may touch both: the check and the XADDs are one atomic step, on a single node or
on Redis Cluster. An attempt's first write CLAIMS the run; every later write of any attempt first checks it still
owns the run, and writes nothing if not. The writer that is refused learns it was superseded and
stops its run (write_behind.py). Which claim wins:

- LATER DELIVERY WINS, when both fences are delivery numbers: a claim from an earlier delivery than
  the owner's is refused. This is what catches a worker that was handed the run, froze (or lost its
  connection) before its first write, and woke up after the scheduler delivered the run again: its
  claim comes last, but its delivery is older. Before it, such a stale claim took the run from the
  current attempt, which was cancelled, and readers got an answer the record never held (the chaos
  run, tests/chaos, found it).
- otherwise NEWEST START WINS (a worker without reliability/dispatch.py, e.g. the tutorial's copied
  callback on a bare worker, or a scheduler whose tokens are not numbers): the claim that comes last.

The same hash keeps the trace context of the run's FIRST attempt (`{correlation id}:trace`, telemetry only:
support/telemetry.py): an attempt's claiming write reads it and sets it if absent, in the same round trip, so
a re-delivered attempt learns the first one's span and links to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from redis_stream_response_handler import RedisStreamResponseHandler, stream_key

ATTEMPTS_SUFFIX = ":attempts"
TRACE_SUFFIX = ":trace"  # the attempts hash's field for a run's first traceparent: `{correlation id}:trace`

# KEYS: the stream, its attempts hash. ARGV: correlation id, fence token, "1" to claim, MAXLEN,
# TTL seconds, then each entry as its number of field/value items followed by the items.
_FENCED_XADD = """
local function delivery(fence) return tonumber(string.match(fence, '^dispatch:(%d+)$')) end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner ~= ARGV[2] then
  if owner and ARGV[3] ~= '1' then return 0 end
  if owner and (delivery(ARGV[2]) or math.huge) < (delivery(owner) or 0) then return 0 end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
local ids, i = {}, 6
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return ids
"""


def attempts_key(session_key: str) -> str:
    return stream_key(session_key) + ATTEMPTS_SUFFIX


@dataclass(frozen=True)
class FencedBatch:
    """One run's pending entries, written only while `fence` owns the run (or claims it)."""

    session_key: str
    correlation_id: str
    fence: str
    claim: bool  # the attempt's first write: take the run over from any older attempt
    entries: Sequence[Mapping[str, str]]
    trace: str = ""  # telemetry: the attempt's traceparent; a claim keeps the run's first one (see the docstring)


class Fenced(NamedTuple):
    owned: bool  # False: a newer attempt owns the run, nothing was written
    first_trace: str | None = None  # a claim with a `trace`: the run's first attempt's traceparent, if one was kept


async def write_fenced(
    handler: RedisStreamResponseHandler, batches: Sequence[FencedBatch], expire: Sequence[str] = ()
) -> list[Fenced]:
    """Write every batch in ONE round trip (a pipeline of scripts); `owned` is False where the attempt was superseded.

    `expire`: session keys whose stream TTL is due for a refresh (with the final marker, or every few minutes).
    """
    traced = [batch for batch in batches if batch.claim and batch.trace]
    async with handler.redis.pipeline(transaction=False) as pipe:
        for batch in traced:  # read, then keep if absent, the run's first trace context: before the claim
            field = batch.correlation_id + TRACE_SUFFIX
            pipe.hget(attempts_key(batch.session_key), field)
            pipe.hsetnx(attempts_key(batch.session_key), field, batch.trace)
        for batch in batches:
            items = [str(item) for fields in batch.entries for item in (len(fields) * 2, *_flat(fields))]
            keys = [stream_key(batch.session_key), attempts_key(batch.session_key)]
            claim = "1" if batch.claim else "0"
            args = [batch.correlation_id, batch.fence, claim, handler.max_length, handler.ttl_seconds, *items]
            pipe.eval(_FENCED_XADD, 2, *keys, *args)  # type: ignore[arg-type]
        for session_key in expire:
            pipe.expire(stream_key(session_key), handler.ttl_seconds)
            pipe.expire(attempts_key(session_key), handler.ttl_seconds)
        results = await pipe.execute()
    first_traces = {id(batch): results[2 * i] for i, batch in enumerate(traced)}
    scripts = results[2 * len(traced) : 2 * len(traced) + len(batches)]
    return [Fenced(result != 0, first_traces.get(id(batch))) for batch, result in zip(batches, scripts, strict=True)]


def _flat(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]
