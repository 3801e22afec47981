"""The one exception type for a problem the user fixes: bad usage, input or configuration.

Every entry point turns it into one `error:` line and exit status 2 (`support.console.run_entry_point`).
Anything else that escapes is a run failure (exit 1), so a bug never masquerades as bad usage.
"""


class UsageError(Exception):
    """A usage, input or configuration problem; its message is one line that names the fix."""
