"""Reliability: what keeps the stream fast and truthful when things go wrong.

Write-behind batching, following one run through repeats, restarts and gaps, ending every stream
even when the run fails, and the durable record the stream mirrors. The tutorial files call into
these modules by name.
"""
