"""A chaos run that proves exactly-once: real processes, faults injected at random, every run checked.

    uv run python -m tests.chaos --runs 200 --seed 7           # about 9 minutes on a busy 2-core machine
    uv run python -m tests.chaos --runs 12 --seed 1 --wave 6   # about a minute: the default suite's
                                                               # tests/reliability/test_chaos.py

The stack, every part its own process on loopback (stack.py): a `redis-server` with
`appendonly yes` + `appendfsync always` in a temporary folder (a restart keeps the streams), the
embedded scheduler as `scheduler_server.py` (it re-delivers the runs of a worker that dies or stops
answering its pings for 10 s), three `worker.py` processes whose demo models sign every word
differently (`w1~Day`, `w2~Day`, ...) at 40 ms a word, and many readers: per run, an in-process
`read_run` reader that follows it to the end, one that is cut and resumes from its cursor, and for
about a third of the runs a `client.py --json` process, SIGKILLed and started again with
`--session S --cursor C` (readers.py).

Runs go in waves (`--wave`, default 20 at once). Once a wave's runs all stream, the wave's faults
strike (run.py): a worker SIGKILLed (a replacement starts), SIGSTOPped for 11-14 s (past its lease)
then SIGCONTinued, SIGTERMed (it stops; its unfinished runs end wherever the stopping worker leaves
them; a replacement starts), Redis's connections dropped (`CLIENT KILL TYPE normal`), Redis killed
and restarted on the same port and files; and the readers' cuts. Worker faults pick a worker that
serves a run of the wave. The checker (check.py) then holds every run to: the readers' answers equal
the durable record, no reader showed a token of a superseded attempt after its last restart, no
superseded `done`, no run's tools executed twice unless a fault hit the worker of the earlier
attempt (and never after that attempt completed), no reader stuck past the run's time limit.

It prints a table of the figures and, for any bad figure, the evidence (session, run, entries), and
exits 1 if any bad figure is not 0. It stops by itself: every run has a time limit, and it stops
every process it started.

Reproducible: the seed fixes the plan (plan.py): each run's question, its readers and where they are
cut, each wave's faults, their order, their moments, which busy worker they pick, how long a freeze
lasts. Not deterministic: timing. Where in an answer a fault lands, which worker serves which run (so
which runs a worker fault hits), how many tokens a stopped or frozen worker wrote, and so the exact
figures of the table, vary from one run to the next on a shared machine.
"""
