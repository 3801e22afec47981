"""Redacting URLs: the one routine for every URL the sample prints, so no password reaches a log."""

from __future__ import annotations

import re

# What may follow the '@' that ends a URL's user:password part: a host[:port], then the path or the end.
_AFTER_USERINFO = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=\[\]:-]*(?:[/?#]|\Z)")
# Query parameters that carry secrets (?password=..., ?token=..., ?api_key=...): their values are hidden.
_SECRET_PARAMETER = re.compile(
    # Not plain `auth`: REDIS_CONNECTION_STRING's `?auth=entra-id` names a method, not a secret.
    r"([?&;][^=&;#]*(?:pass|pwd|secret|token|key|credential|authoriz|sig)[^=&;#]*=)[^&;#]*",
    re.I,
)


def redact_url(url: str) -> str:
    """`url` with its password, and the values of secret query parameters, replaced by `***`.

    The ONE routine for every URL the sample prints, including URLs it cannot parse: the user
    name stays, everything between its ':' and the '@' before the host goes, even a password with
    an unencoded '/', '@', '?' or '#' in it (`rediss://user:se/cret@host:6380`).
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    at = _end_of_userinfo(rest)
    if at is not None:
        user, colon, _ = rest[:at].partition(":")
        rest = (f"{user}:***" if colon else "***") + rest[at:]
    return scheme + separator + _SECRET_PARAMETER.sub(r"\1***", rest)


def _end_of_userinfo(rest: str) -> int | None:
    """Where the '@' that ends `user:password` is in `rest` (a URL after its `scheme://`), if anywhere."""
    for at in reversed([index for index, char in enumerate(rest) if char == "@"]):
        if _AFTER_USERINFO.match(rest, at + 1):
            return at
    return None
