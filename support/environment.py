"""Every variable of `.env.example` checked at once, before an entry point starts anything.

`support.config.load_settings` reads the settings the services need; the model's variables
(providers, DEMO_MODEL_*) are read where the model is built, after Redis and the scheduler have
started. `check_environment` checks both first, so a bad value of any variable is one `error:` line
naming it (exit 2) on every entry point, with nothing started.

Try it:

    DEMO_MODEL_FAIL_STREAM_ONLY=maybe uv run worker.py
    # error: DEMO_MODEL_FAIL_STREAM_ONLY must be 1 (on) or 0 (off) (got 'maybe'); fix it or unset it
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from support.config import Settings, load_settings
from support.providers import check_model_settings


def check_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The validated settings; raises `UsageError` for the first bad variable of any kind."""
    settings = load_settings(environ)  # with no argument, this also loads `.env` into os.environ
    check_model_settings(environ if environ is not None else os.environ)
    return settings
