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
on Redis Cluster. One script call writes every run of a flush that shares a node (a single node:
all of them; a cluster: those of one hash slot), and its runs and entries travel as ONE JSON
argument that Lua's `cjson` unpacks: redis-py encodes each argument of a command in Python, and
an entry's dozen fields as separate arguments were the largest part of a token's cost
(docs/benchmarks.md, section 7).

An attempt's first write CLAIMS the run; every later write of any attempt first checks it still
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

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from redis_stream_response_handler import TOKEN, RedisStreamResponseHandler, entry_fields, stream_key

ATTEMPTS_SUFFIX = ":attempts"
TRACE_SUFFIX = ":trace"  # the attempts hash's field for a run's first traceparent: `{correlation id}:trace`

# KEYS: each run's stream and attempts hash, in turn. ARGV: MAXLEN, TTL seconds, then ONE JSON argument:
# [shapes, runs]. A shape is an entry's field names, in order ([["kind", "text", ...], ...]); the runs, in KEYS'
# order: [[correlation id, fence token, 1 to claim else 0, 1 to refresh the TTLs else 0, entries], ...]. An entry
# is [shape number, value, value, ...] (the names travel once per flush, not once per entry), or a token's
# [text, sequence, microseconds, attempt], whose fields the script fills in. Returns each run's 1 (written) or
# 0 (refused: another attempt owns the run).
_FENCED_XADD = """
local function delivery(fence) return tonumber(string.match(fence, '^dispatch:(%d+)$')) end
local function token_fields(entry, id)  -- the fields `entry_fields` gives a token, in the same order
  local at = entry[3]
  local timestamp = string.format('%d.%06d', math.floor(at / 1000000), at % 1000000)
  return {'kind', 'token', 'text', entry[1], 'sequence', entry[2], 'correlation_id', id, 'timestamp', timestamp,
    'attempt', entry[4]}
end
local payload, owned = cjson.decode(ARGV[3]), {}
local shapes = payload[1]
for r, run in ipairs(payload[2]) do
  local stream, attempts, id, fence, claim = KEYS[2 * r - 1], KEYS[2 * r], run[1], run[2], run[3]
  local owner, ok = redis.call('HGET', attempts, id), true
  if owner ~= fence then
    if owner and (claim ~= 1 or (delivery(fence) or math.huge) < (delivery(owner) or 0)) then
      ok = false
    else
      redis.call('HSET', attempts, id, fence)
      redis.call('EXPIRE', attempts, ARGV[2])
    end
  end
  if ok then
    for _, entry in ipairs(run[5]) do
      local fields
      if type(entry[1]) == 'string' then
        fields = token_fields(entry, id)
      else
        fields = {}
        for i, name in ipairs(shapes[entry[1]]) do
          fields[2 * i - 1], fields[2 * i] = name, entry[i + 1]
        end
      end
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
    end
    if run[4] == 1 then
      redis.call('EXPIRE', stream, ARGV[2])
      redis.call('EXPIRE', attempts, ARGV[2])
    end
  end
  owned[r] = ok and 1 or 0
end
return owned
"""


def attempts_key(session_key: str) -> str:
    return stream_key(session_key) + ATTEMPTS_SUFFIX


@functools.lru_cache(maxsize=4096)
def _script_keys(session_key: str) -> tuple[bytes, bytes]:
    # A run's two keys, checked and encoded once, not on every flush: redis-py encodes each str argument in Python.
    return stream_key(session_key).encode(), attempts_key(session_key).encode()


class Token(NamedTuple):
    """A token as a writer queues it: the script fills in its fields (`entry_fields`'s, see `_FENCED_XADD`).

    A tuple of four instead of a dict of six strings: built on every token's path, and half the JSON to encode.
    """

    text: str
    sequence: int
    microseconds: int  # when it was produced, since the epoch: the entry's `timestamp`
    attempt: str


Entry = Mapping[str, str] | Token  # an entry to write: its fields, or a token's


def fields_of(entry: Entry, correlation_id: str) -> Mapping[str, str]:
    """The fields Redis stores for `entry`: a Token's as the script writes them."""
    if not isinstance(entry, Token):
        return entry
    seconds, microseconds = divmod(entry.microseconds, 1_000_000)
    fields = entry_fields(TOKEN, correlation_id, entry.sequence, entry.text)
    return fields | {"timestamp": f"{seconds}.{microseconds:06d}", "attempt": entry.attempt}


class FencedBatch(NamedTuple):  # a tuple, not a dataclass: one per run per flush, so on every token's path
    """One run's pending entries, written only while `fence` owns the run (or claims it)."""

    session_key: str
    correlation_id: str
    fence: str
    claim: bool  # the attempt's first write: take the run over from any older attempt
    entries: Sequence[Entry]
    trace: str = ""  # telemetry: the attempt's traceparent; a claim keeps the run's first one (see the docstring)
    expire: bool = False  # refresh the TTLs of the run's stream and attempts hash (when due: not on every flush)


class Fenced(NamedTuple):
    owned: bool  # False: a newer attempt owns the run, nothing was written
    first_trace: str | None = None  # a claim with a `trace`: the run's first attempt's traceparent, if one was kept


async def write_fenced(handler: RedisStreamResponseHandler, batches: Sequence[FencedBatch]) -> list[Fenced]:
    """Write every batch in ONE round trip (a pipeline of scripts); `owned` is False where an attempt was superseded."""
    traced = [batch for batch in batches if batch.claim and batch.trace]
    groups = _by_slot(batches) if isinstance(handler.redis, RedisCluster) else [list(batches)] if batches else []
    if len(groups) == 1 and not traced:  # the usual flush: one script call, no pipeline to build
        return [
            Fenced(bool(ok)) for ok in await handler.redis.eval(_FENCED_XADD, *_script_arguments(handler, groups[0]))
        ]
    async with handler.redis.pipeline(transaction=False) as pipe:
        for batch in traced:  # read, then keep if absent, the run's first trace context: before the claim
            field = batch.correlation_id + TRACE_SUFFIX
            pipe.hget(attempts_key(batch.session_key), field)
            pipe.hsetnx(attempts_key(batch.session_key), field, batch.trace)
        for group in groups:
            pipe.eval(_FENCED_XADD, *_script_arguments(handler, group))
        results = await pipe.execute()
    first_traces = {id(batch): results[2 * i] for i, batch in enumerate(traced)}
    scripts = results[2 * len(traced) : 2 * len(traced) + len(groups)]
    owned = {
        id(batch): bool(ok)
        for group, oks in zip(groups, scripts, strict=True)
        for batch, ok in zip(group, oks, strict=True)
    }
    return [Fenced(owned[id(batch)], first_traces.get(id(batch))) for batch in batches]


def _script_arguments(handler: RedisStreamResponseHandler, group: Sequence[FencedBatch]) -> list[Any]:
    """The script's key count, KEYS and ARGV for one group of runs (see `_FENCED_XADD`)."""
    keys = [key for batch in group for key in _script_keys(batch.session_key)]
    shapes: dict[tuple[str, ...], int] = {}  # an entry's field names -> its shape's number (Lua counts from 1)
    runs = [[b.correlation_id, b.fence, int(b.claim), int(b.expire), _shaped(b.entries, shapes)] for b in group]
    payload = json.dumps([list(shapes), runs], ensure_ascii=False, separators=(",", ":"))
    return [len(keys), *keys, handler.max_length, handler.ttl_seconds, payload]


def _by_slot(batches: Sequence[FencedBatch]) -> list[list[FencedBatch]]:
    # One script touches one cluster hash slot: a session's keys share theirs ({session}), different sessions rarely do.
    slots: dict[int, list[FencedBatch]] = {}
    for batch in batches:
        slots.setdefault(key_slot(_script_keys(batch.session_key)[0]), []).append(batch)
    return list(slots.values())


def _shaped(entries: Sequence[Entry], shapes: dict[tuple[str, ...], int]) -> list[Any]:
    # A token as it is; other entries as [shape number, values...]: their names would be half of their JSON.
    return [
        entry if isinstance(entry, Token) else [shapes.setdefault(tuple(entry), len(shapes) + 1), *entry.values()]
        for entry in entries
    ]
