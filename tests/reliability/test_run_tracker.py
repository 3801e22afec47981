"""RunTracker: what a reader makes of one run's raw entries: gaps counted, repeats dropped, restarts begun afresh.

Pure logic, no Redis: each test feeds entries in the order XREAD returns them. `missing` on the
done chunk is what makes a client replace a stream with gaps by the durable record.
"""

from __future__ import annotations

from redis_stream_response_handler import DONE, HEARTBEAT, RESTART, START, TOKEN, StreamChunk, entry_fields
from reliability.run_tracker import RunTracker


def entries(*specs: tuple[str, int] | tuple[str, int, str]) -> list[StreamChunk]:
    """Stream chunks of run-1 from (kind, sequence[, attempt]) specs, with increasing entry ids."""
    chunks = []
    for number, (kind, sequence, *attempt) in enumerate(specs, start=1):
        extra: dict[str, str | int] = {}
        if kind in (START, RESTART):
            extra["attempt"] = attempt[0] if attempt else "a1"
        if kind == DONE:
            extra["chunks"] = sequence
        text = f"t{sequence} " if kind == TOKEN else ""
        chunks.append(StreamChunk.from_entry(f"{number}-0", entry_fields(kind, "run-1", sequence, text, **extra)))
    return chunks


def read(chunks: list[StreamChunk], correlation_id: str | None = "run-1") -> list[StreamChunk]:
    tracker = RunTracker(correlation_id)
    return [visible for chunk in chunks if (visible := tracker.accept(chunk)) is not None]


def test_a_token_missing_in_the_middle_is_counted_on_the_done_chunk() -> None:
    visible = read(entries((START, 0), (TOKEN, 0), (TOKEN, 1), (TOKEN, 3), (TOKEN, 4), (DONE, 5)))

    assert [c.sequence for c in visible if c.kind == TOKEN] == [0, 1, 3, 4]
    assert visible[-1].is_done and visible[-1].missing == 1


def test_tokens_missing_at_the_end_are_counted_from_the_done_marker() -> None:
    visible = read(entries((START, 0), (TOKEN, 0), (TOKEN, 1), (DONE, 4)))

    assert visible[-1].is_done and visible[-1].missing == 2


def test_gaps_add_up() -> None:
    visible = read(entries((START, 0), (TOKEN, 0), (TOKEN, 2), (TOKEN, 5), (DONE, 7)))

    assert visible[-1].missing == 1 + 2 + 1


def test_a_batch_written_twice_is_read_once_and_is_not_a_gap() -> None:
    raw = entries((START, 0), (TOKEN, 0), (TOKEN, 1), (START, 0), (TOKEN, 0), (TOKEN, 1), (TOKEN, 2), (DONE, 3))

    visible = read(raw)

    assert [(c.kind, c.sequence) for c in visible] == [(START, 0), (TOKEN, 0), (TOKEN, 1), (TOKEN, 2), (DONE, 3)]
    assert visible[-1].missing == 0


def test_a_new_attempt_restarts_the_answer_and_its_count() -> None:
    raw = entries((START, 0, "a1"), (TOKEN, 0), (TOKEN, 2), (START, 0, "a2"), (TOKEN, 0), (TOKEN, 1), (DONE, 2))

    visible = read(raw)

    assert [c.kind for c in visible] == [START, TOKEN, TOKEN, RESTART, TOKEN, TOKEN, DONE]
    assert visible[-1].missing == 0  # the gap was in the abandoned attempt, whose text the reader discards


def test_heartbeats_and_other_runs_neither_show_nor_count() -> None:
    other = StreamChunk.from_entry("2-1", entry_fields(TOKEN, "run-2", 7, "other "))
    beat = StreamChunk.from_entry("2-2", entry_fields(HEARTBEAT, "run-1", 1))
    raw = entries((START, 0), (TOKEN, 0), (TOKEN, 1), (DONE, 2))

    visible = read([*raw[:2], other, beat, *raw[2:]])

    assert [c.correlation_id for c in visible] == ["run-1"] * 4
    assert HEARTBEAT not in [c.kind for c in visible] and visible[-1].missing == 0
