"""Errors that Ducho reports to users, and the did-you-mean helper they share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DuchoError(Exception):
    """An error with a message meant for the user (no traceback needed)."""


class ConfigError(DuchoError):
    """A configuration key or value that cannot be used; raised before any work starts."""


class ModelNotFoundError(DuchoError):
    """A model that could not be located; the message lists every place that was tried."""


class StrictModeError(DuchoError):
    """A record was skipped while `strict: true` asks to stop at the first one."""


def did_you_mean(value: object, accepted: Iterable[object]) -> str:
    """Return `" (did you mean 'x'?)"` for the closest accepted value, or an empty string."""
    choices = [str(a) for a in accepted]
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        hit = lowered.get(str(value).lower())
        close = [hit] if hit else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def bad_value(key: str, value: object, accepted: Iterable[object], what: str = "value") -> ConfigError:
    """Build the standard message: the key, the bad value, the accepted ones and a did-you-mean."""
    accepted = list(accepted)
    listed = ", ".join(str(a) for a in accepted) if accepted else "none"
    return ConfigError(f"{key}: {what} {value!r} is not accepted; accepted: {listed}{did_you_mean(value, accepted)}")


class RunAbort(DuchoError):
    """A problem of the whole run found while extracting (e.g. an exported graph that disagrees with torch): the
    run stops instead of skipping records one by one."""
