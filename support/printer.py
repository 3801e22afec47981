"""Printing a streamed answer: plain text on stdout, or one JSON object per chunk (`--json`).

Status goes to stderr, so stdout stays the answer alone and can be piped. On a terminal a
"waiting" indicator shows until the first token arrives.
"""

from __future__ import annotations

import json
import sys

from redis_stream_response_handler import DONE, ERROR, RESTART, START, StreamChunk
from reliability.run_tracker import QUEUED
from support.console import announce


class ChunkPrinter:
    """Prints the answer to stdout as it streams: plain text, or one JSON object per chunk."""

    def __init__(self, session_key: str, *, as_json: bool) -> None:
        self.session_key = session_key
        self.as_json = as_json
        self.answer = ""  # the current attempt's text, to compare with the durable record
        self._indicator_shown = False

    def waiting(self) -> None:
        if not self.as_json and sys.stderr.isatty():
            print("(waiting for the first token…)", end="", file=sys.stderr, flush=True)
            self._indicator_shown = True

    def print_chunk(self, chunk: StreamChunk) -> None:
        self._clear_indicator()
        if chunk.kind == QUEUED:
            announce("client", f"waiting for a free worker: every run slot of {chunk.worker} is busy")
        if chunk.kind == RESTART:
            self.answer = ""
            reason = f" ({chunk.error})" if chunk.error else ""
            announce("client", f"the answer restarted{reason}; what follows replaces the text above")
        self.answer += chunk.text
        if self.as_json:
            record = {"session": self.session_key, "entry_id": chunk.entry_id, "sequence": chunk.sequence}
            record |= {"text": chunk.text, **self._flags(chunk)}
            self._write(json.dumps(record) + "\n")
        elif chunk.text:
            self._write(chunk.text)

    def print_recovered(self, text: str) -> None:
        """An answer that did not come from the stream, but from the durable record."""
        self.answer = text
        record = {"session": self.session_key, "text": text, "recovered": True, "done": True}
        self._write(json.dumps(record) + "\n" if self.as_json else text + "\n")

    def end_line(self) -> None:
        self._clear_indicator()
        if not self.as_json:
            self._write("\n")

    def _flags(self, chunk: StreamChunk) -> dict[str, object]:
        if chunk.kind in (START, RESTART):
            return {chunk.kind: True}  # the answer (re)starts here: a cursor to replay it from
        if chunk.kind == QUEUED:
            return {"queued": True}  # the run waits for a free worker slot
        if chunk.kind == DONE:
            return {"done": True}
        return {"error": chunk.error} if chunk.kind == ERROR else {}

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def _clear_indicator(self) -> None:
        if self._indicator_shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self._indicator_shown = False
