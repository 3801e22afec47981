"""The checker: what must hold for every run of a chaos run, and the table of figures.

For each run it reads the stream (XRANGE) and the durable record (through the scheduler) and checks:

- mismatch: a reader that ended with `done` holds an answer (the newest attempt's text, joined across
  its resumes; the record's when its done marker said tokens were missing) that differs from the
  recorded answer; or the record does not hold the run's request and answer exactly once;
- splice: a reader showed, after its last restart, a token of another attempt than the run's final
  one, or one not signed by the worker whose answer was recorded (every worker signs its words);
- superseded done: the stream holds a `done` of an attempt that is not the final one (a reader could
  have ended there, with an answer that is not the record), or a reader ended on one;
- duplicate execution: the run's tools ran in more than one attempt, and an earlier attempt either
  completed (its done was written: say, during a drain) or ran on a worker no fault hit;
- stuck: a reader that had not ended within the run's time limit;
- clear error: a reader that ended with an error or cancelled marker (not bad in itself: reported).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agent_framework_durabletask import DurableAgentState

from redis_stream_response_handler import CANCELLED, DONE, ERROR, RESTART, START, TOKEN, TOOL_CALL
from tests.chaos.plan import FAULT_KINDS, RunPlan
from tests.chaos.readers import ReaderLog, tokens
from tests.chaos.stack import Stack

Entries = list[tuple[str, dict[str, str]]]

BAD = ("mismatches", "splices", "superseded dones", "duplicate executions", "stuck runs")


@dataclass
class RunResult:
    plan: RunPlan
    session: str
    correlation_id: str
    readers: list[ReaderLog]
    problems: dict[str, list[str]] = field(default_factory=dict[str, list[str]])  # column -> evidence
    executions: int = 0
    recovered: int = 0

    def flag(self, column: str, evidence: str) -> None:
        self.problems.setdefault(column, []).append(evidence)


@dataclass
class Attempt:
    attempt: str
    kind: str  # start, or restart (the host re-ran a failed stream without streaming: same worker)
    worker_pid: int | None
    started: float
    tools: bool = False
    done: bool = False
    signatures: set[str] = field(default_factory=set[str])


def signature_of(text: str) -> str:
    return text.split("~", 1)[0] + "~" if "~" in text else ""


def attempts_of(entries: Entries, correlation_id: str) -> list[Attempt]:
    found: dict[str, Attempt] = {}
    for _, fields in entries:
        if fields.get("correlation_id") != correlation_id:
            continue
        attempt, kind = fields.get("attempt", ""), fields["kind"]
        if kind in (START, RESTART) and attempt not in found:
            worker = fields.get("worker")
            pid = int(worker.rsplit(":", 1)[1]) if worker else None
            found[attempt] = Attempt(attempt, kind, pid, float(fields.get("timestamp", 0)))
        current = found.get(attempt)
        if current is None:
            continue
        current.tools |= kind == TOOL_CALL
        current.done |= kind == DONE
        if kind == TOKEN and fields["text"]:
            current.signatures.add(signature_of(fields["text"]))
    return list(found.values())


def check_run(
    result: RunResult, entries: Entries, state: DurableAgentState | None, record_text: str | None, stack: Stack
) -> None:
    correlation_id, session = result.correlation_id, result.session
    where = f"session {session} run {correlation_id}"
    attempts = attempts_of(entries, correlation_id)
    final = attempts[-1] if attempts else None
    history = state.data.conversation_history if state is not None else []
    recorded_kinds = [type(entry).__name__ for entry in history if entry.correlation_id == correlation_id]
    if recorded_kinds and recorded_kinds != ["DurableAgentStateRequest", "DurableAgentStateResponse"]:
        result.flag("mismatches", f"{where}: the record holds {recorded_kinds}, not the request and answer once")
    record_signature = signature_of(record_text) if record_text else ""
    if final is not None and record_text is not None and final.signatures - {record_signature}:
        result.flag("mismatches", f"{where}: the newest attempt {final.attempt} is signed {final.signatures}, "
                    f"the record {record_signature!r}")  # fmt: skip
    for attempt in attempts[:-1]:
        if attempt.done:
            result.flag(
                "superseded dones",
                f"{where}: attempt {attempt.attempt} wrote done, then {final and final.attempt} began",
            )
    _check_executions(result, attempts, stack, where)
    for reader in result.readers:
        _check_reader(result, reader, final, record_text, record_signature, where)
    if set(result.problems) - {"clear errors"}:
        described = [_describe(attempt, stack) for attempt in attempts]
        recorded = [(type(entry).__name__, entry.correlation_id) for entry in history]
        result.flag("details", f"{where}: attempts {described}; the record holds {recorded}")


def _describe(attempt: Attempt, stack: Stack) -> str:
    worker = stack.by_pid(attempt.worker_pid) if attempt.worker_pid is not None else None
    name = f"{worker.signature} (pid {worker.pid}, faults {worker.faults})" if worker else str(attempt.worker_pid)
    return (
        f"{attempt.attempt} {attempt.kind} at {attempt.started:.3f} on {name} tools={attempt.tools} done={attempt.done}"
    )


def _check_executions(result: RunResult, attempts: list[Attempt], stack: Stack, where: str) -> None:
    executed = [attempt for attempt in attempts if attempt.kind == START and attempt.tools]
    result.executions = len(executed)
    if len(executed) < 2:
        return
    for attempt in executed[:-1]:
        worker = stack.by_pid(attempt.worker_pid) if attempt.worker_pid is not None else None
        hit = worker is not None and any(when >= attempt.started - 1 for when, _ in worker.faults)
        if attempt.done or not hit:
            why = "it completed first" if attempt.done else "no fault hit its worker"
            result.flag("duplicate executions", f"{where}: the tools ran again after attempt {attempt.attempt} ({why})")


def _check_reader(
    result: RunResult, reader: ReaderLog, final: Attempt | None, record_text: str | None, signature: str, where: str
) -> None:
    who = f"{where}, reader {reader.name} ({reader.resumes} resumes)"
    if reader.ended is None:
        result.flag("stuck runs", f"{who}: not ended; last shown {reader.last}")
        return
    if reader.ended in (ERROR, CANCELLED) or reader.ended != DONE:
        result.flag("clear errors", f"{who}: {reader.ended}: {reader.error}")
        return
    last = reader.last
    if final is not None and last is not None and last.kind == DONE and last.attempt not in (None, final.attempt):
        result.flag("superseded dones", f"{who}: ended on the done of attempt {last.attempt}, not {final.attempt}")
    if reader.missing or reader.recovered is not None:
        result.recovered += 1
        if reader.recovered is None:
            reader.recovered = record_text  # as client.py does: the record's answer replaces a stream with gaps
    if record_text is None or reader.answer != record_text:
        got, want = reader.answer, record_text or ""
        result.flag(
            "mismatches", f"{who}: answer {got[:60]!r}... ({len(got)} chars), record {want[:60]!r}... ({len(want)})"
        )
    if reader.recovered is None:
        final_attempt = final.attempt if final is not None else None
        wrong = [
            c
            for c in tokens(reader.since_last_restart)
            if c.attempt != final_attempt or not c.text.startswith(signature)
        ]
        if wrong:
            first = f"{wrong[0].entry_id} {wrong[0].attempt} {wrong[0].text[:40]!r}"
            result.flag("splices", f"{who}: after its last restart, {len(wrong)} tokens not of the final attempt "
                        f"{final_attempt} signed {signature!r}; the first: {first}")  # fmt: skip


@dataclass
class Report:
    seed: int
    runs: list[RunResult]
    faults: Counter[str]
    waves: int
    seconds: float
    notes: list[str] = field(default_factory=list[str])

    def figures(self) -> dict[str, int]:
        readers = [reader for run in self.runs for reader in run.readers]
        columns = {"runs": len(self.runs), "waves": self.waves}
        columns |= {f"faults: {kind}": self.faults[kind] for kind in FAULT_KINDS}
        columns |= {
            "readers": len(readers),
            "client.py readers": sum(reader.name == "client.py" for reader in readers),
            "resumes": sum(reader.resumes for reader in readers),
            "reconnects": sum(reader.reconnects for reader in readers),
            "runs executed again after a worker fault": sum(
                run.executions > 1 and "duplicate executions" not in run.problems for run in self.runs
            ),
            "answers recovered from the record": sum(run.recovered for run in self.runs),
        }
        for column in (*BAD, "clear errors"):
            columns[column] = sum(column in run.problems for run in self.runs)
        return columns

    @property
    def ok(self) -> bool:
        figures = self.figures()
        return all(figures[column] == 0 for column in BAD)

    def table(self) -> str:
        lines = [f"chaos: seed {self.seed}, {len(self.runs)} runs in {self.waves} waves, {self.seconds:.0f} s", "",
                 "| figure | value |", "|---|---:|"]  # fmt: skip
        for column, value in self.figures().items():
            mark = " **(must be 0)**" if column in BAD and value else ""
            lines.append(f"| {column} | {value}{mark} |")
        return "\n".join(lines)

    def evidence(self) -> str:
        lines = [*self.notes]
        for run in self.runs:
            for column, items in run.problems.items():
                lines += [f"[{column}] {item}" for item in items]
        return "\n".join(lines)
