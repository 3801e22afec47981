"""The readers of a chaos run: in-process `read_run` readers and `client.py --json` processes.

Each reader is cut after the numbers of chunks the plan gives it and resumes from the last entry
id it showed, as a user's would: an in-process reader stops iterating (its read is closed) and
calls `read_run` again from its cursor; a `client.py` reader is SIGKILLed and started again as
`client.py --session S --cursor C --json`. A reader whose read fails because Redis is away for a
moment (restarting, connections dropped) tries again from its cursor: a reconnect, counted apart.
Everything a reader showed, across its resumes, is kept for the checker (check.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from redis.exceptions import RedisError

from redis_stream_response_handler import (
    DONE,
    MARKERS_THAT_END_A_RUN,
    RESTART,
    START,
    START_OF_STREAM,
    TOKEN,
    RedisStreamResponseHandler,
    StreamChunk,
)
from reliability.run_tracker import read_run
from tests.conftest import ROOT

RECONNECT_PAUSE_SECONDS = 0.5
CLIENT_START_ATTEMPTS = 5  # a client.py that found no Redis (it was restarting) is started again


@dataclass(frozen=True)
class Shown:
    """One chunk a reader showed (printed, or yielded to its caller)."""

    kind: str
    text: str
    attempt: str | None
    entry_id: str


@dataclass
class ReaderLog:
    name: str
    shown: list[Shown] = field(default_factory=list[Shown])
    resumes: int = 0
    reconnects: int = 0
    ended: str | None = None  # done, error, cancelled; None: it never ended (stuck)
    error: str = ""
    missing: int = 0  # tokens its done marker said it never received: the answer is then the record's
    recovered: str | None = None  # the record's answer, printed by client.py instead of the stream's

    @property
    def since_last_restart(self) -> list[Shown]:
        begins = [index for index, chunk in enumerate(self.shown) if chunk.kind in (START, RESTART)]
        return self.shown[begins[-1] if begins else 0 :]

    @property
    def answer(self) -> str:
        """The text of the newest attempt it showed, joined across its resumes."""
        return self.recovered if self.recovered is not None else "".join(c.text for c in self.since_last_restart)

    @property
    def last(self) -> Shown | None:
        return self.shown[-1] if self.shown else None


async def read_in_process(
    handler: RedisStreamResponseHandler,
    session: str,
    correlation_id: str | None,
    cuts: tuple[int, ...],
    name: str,
    first_chunk: asyncio.Event | None = None,
) -> ReaderLog:
    """Follow the run with `read_run`, cut after each of `cuts` chunks in all, resuming from the cursor."""
    log, cursor, pending = ReaderLog(name), START_OF_STREAM, list(cuts)
    while True:
        try:
            async with aclosing(
                cast(AsyncGenerator[StreamChunk], read_run(handler, session, cursor, correlation_id))
            ) as chunks:
                async for chunk in chunks:
                    log.shown.append(Shown(chunk.kind, chunk.text, chunk.attempt, chunk.entry_id))
                    cursor = chunk.entry_id
                    if first_chunk is not None:
                        first_chunk.set()
                    if chunk.kind in MARKERS_THAT_END_A_RUN:
                        log.ended, log.error, log.missing = chunk.kind, chunk.error or "", chunk.missing
                        return log
                    if pending and len(log.shown) >= pending[0]:
                        pending.pop(0)
                        log.resumes += 1
                        break  # the reader goes away; it comes back with its cursor
        except RedisError:
            log.reconnects += 1
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)


async def read_with_client(env: dict[str, str], session: str, cuts: tuple[int, ...], logs: Path) -> ReaderLog:
    """`client.py --session S --cursor C --json`, SIGKILLed after each of `cuts` lines it printed, then resumed."""
    log, cursor, pending, failed_starts = ReaderLog("client.py"), START_OF_STREAM, list(cuts), 0
    while True:
        stderr_path = logs / f"client-{session}-{log.resumes + log.reconnects}.log"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "client.py", "--session", session, "--cursor", cursor, "--json", cwd=ROOT, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            )  # fmt: skip
        assert process.stdout is not None
        printed, killed = 0, False
        try:
            while line := await process.stdout.readline():
                if not line.endswith(b"\n"):
                    break  # cut by the kill: never printed whole
                record = json.loads(line)
                printed += 1
                if record.get("recovered"):
                    log.recovered = str(record["text"])
                else:
                    shown = Shown(record["kind"], record["text"], record.get("attempt"), record["entry_id"])
                    log.shown.append(shown)
                    cursor = shown.entry_id
                if pending and printed >= pending[0] and record["kind"] not in MARKERS_THAT_END_A_RUN:
                    pending.pop(0)
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    break
        finally:
            if (process.returncode is None and not killed) or killed:
                await process.wait()
        stderr_text = stderr_path.read_text(errors="replace")
        if killed:
            log.resumes += 1
            continue
        last = log.last
        if process.returncode == 0:
            log.ended = DONE
            return log
        if printed == 0 and failed_starts < CLIENT_START_ATTEMPTS and "redis" in stderr_text.lower():
            # It could not reach Redis (restarting): a user would run it again. Any case: the start-up check says
            # "nothing usable answers at redis://… (REDIS_CONNECTION_STRING)" when the port refuses.
            failed_starts += 1
            log.reconnects += 1
            await asyncio.sleep(1.0)
            continue
        log.ended = last.kind if last is not None and last.kind in MARKERS_THAT_END_A_RUN else "error"
        log.error = f"exit {process.returncode}: {stderr_text.strip()[-400:]}"
        return log


def tokens(chunks: list[Shown]) -> list[Shown]:
    return [chunk for chunk in chunks if chunk.kind == TOKEN]
