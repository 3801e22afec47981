"""Benchmarks for the streaming pattern: latency, throughput, TTFT, scaling and Redis footprint.

Run them all (a private redis-server is started on a free port; nothing else is touched):

    uv run python -m benchmarks --quick        # < 1 minute, the CI smoke run
    uv run --group bench python -m benchmarks --full --plots docs   # the figures in docs/benchmarks.md

One module per measurement: `delivery_latency`, `write_throughput`,
`time_to_first_token`, `scaling`, `footprint`. `naive_pattern` is the baseline
the pattern is compared with; `common` holds statistics and server helpers.
`process_scaling` (section 6) and `streaming_cost` (section 7: the worker's CPU per token with and without
streaming, against `variant_worker`, a worker.py changed for the comparison) run the deployment shape.
"""
