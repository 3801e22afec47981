"""Printing a streamed answer: plain text on stdout, or one JSON object per chunk (`--json`).

Status goes to stderr, so stdout stays the answer alone and can be piped: one `[tool]` line per
tool call (cli/tool_status.py), and how a run ended when it did not complete. On a terminal
a transient line shows what the run is waiting for (the first token, a running tool).

A `--json` line is one chunk: `kind`, `session`, `entry_id` (a cursor), `sequence`, `text`, `attempt`
(the attempt at the answer that wrote it; null on a `queued` notice; only the newest attempt is ever
printed), and its kind's fields named as in the stream (the entry kinds and fields:
redis_stream_response_handler.py), except: start, queued, restart and done carry a flag named after
their kind (`"start": true`) instead of their marker fields (done keeps `usage`, as an object); a
failed tool's message is `tool_error` (`error` means the run failed). An answer recovered from the
durable record is one line with `"kind": "done", "recovered": true` and the whole `text`.
"""

from __future__ import annotations

import json
import sys

from cli.tool_status import ToolStatus
from redis_stream_response_handler import (
    CANCELLED,
    DONE,
    ERROR,
    QUEUED,
    RESTART,
    START,
    TOOL_CALL,
    TOOL_RESULT,
    StreamChunk,
)
from support.console import announce


class ChunkPrinter:
    """Prints the answer to stdout as it streams: plain text, or one JSON object per chunk."""

    def __init__(self, session_key: str, *, as_json: bool) -> None:
        self.session_key = session_key
        self.as_json = as_json
        self.answer = ""  # the current attempt's text, to compare with the durable record
        self.tools = ToolStatus()
        self._indicator_shown = False

    def waiting(self) -> None:
        self._show_indicator("(waiting for the first token…)")

    def print_chunk(self, chunk: StreamChunk) -> None:
        self._clear_indicator()
        if chunk.kind == QUEUED:
            announce("client", f"waiting for a free worker: every run slot of {chunk.worker} is busy")
        if chunk.kind == RESTART:
            if self.answer and not self.answer.endswith("\n") and not self.as_json:  # the partial answer's line
                self._write("\n")  # ends: the new answer, and on a terminal the line below, each start a line
            self.answer, self.tools = "", ToolStatus()
            reason = f" ({chunk.error})" if chunk.error else ""
            announce("client", f"the answer restarted{reason}; what follows replaces the text above")
        self._show_activity(chunk)
        self.answer += chunk.text
        if self.as_json:
            record = {"session": self.session_key, "kind": chunk.kind, "entry_id": chunk.entry_id}
            record |= {"sequence": chunk.sequence, "text": chunk.text, "attempt": chunk.attempt, **self._fields(chunk)}
            self._write(json.dumps(record) + "\n")
        elif chunk.text:
            self._write(chunk.text)

    def print_recovered(self, text: str) -> None:
        """An answer that did not come from the stream, but from the durable record."""
        self.answer = text
        record = {"session": self.session_key, "kind": DONE, "text": text, "recovered": True, "done": True}
        self._write(json.dumps(record) + "\n" if self.as_json else text + "\n")

    def end_line(self) -> None:
        self._clear_indicator()
        for line in self.tools.unanswered():
            print(line, file=sys.stderr, flush=True)
        if not self.as_json:
            self._write("\n")

    def print_end(self, final: StreamChunk) -> None:
        """How a run that did not complete ended: cancelled, or an error (one line on stderr)."""
        if final.kind == CANCELLED:
            reason = f" ({final.reason})" if final.reason else ""
            announce("client", f"the run was cancelled{reason}")
        else:
            print(f"error: {final.error}", file=sys.stderr)

    def _show_activity(self, chunk: StreamChunk) -> None:
        if chunk.kind == TOOL_CALL:
            self.tools.called(chunk)
        elif chunk.kind == TOOL_RESULT:
            print(self.tools.returned(chunk), file=sys.stderr, flush=True)
        else:
            return
        waiting = None if self.answer else "(waiting for the first token…)"
        self._show_indicator(self.tools.running() or waiting)

    def _fields(self, chunk: StreamChunk) -> dict[str, object]:
        if chunk.kind in (START, RESTART):
            return {chunk.kind: True}  # the answer (re)starts here: a cursor to replay it from
        if chunk.kind == TOOL_CALL:
            return {"name": chunk.name, "call_id": chunk.call_id, "arguments": chunk.arguments}
        if chunk.kind == TOOL_RESULT:
            failed = {"tool_error": chunk.error} if chunk.error is not None else {}
            return {"call_id": chunk.call_id, "name": chunk.name, "result": chunk.result, **failed}
        if chunk.kind == QUEUED:
            return {"queued": True}  # the run waits for a free worker slot
        if chunk.kind == DONE:
            return {"done": True, **({"usage": json.loads(chunk.usage)} if chunk.usage else {})}
        if chunk.kind == CANCELLED:
            return {"reason": chunk.reason}
        return {"error": chunk.error} if chunk.kind == ERROR else {}

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def _show_indicator(self, text: str | None) -> None:
        if text and not self.as_json and sys.stderr.isatty():
            print(text, end="", file=sys.stderr, flush=True)
            self._indicator_shown = True

    def _clear_indicator(self) -> None:
        if self._indicator_shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self._indicator_shown = False
