"""Errors that mobitune reports to users as one clear paragraph, without a traceback."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from typing import Any


class MobituneError(Exception):
    """An error caused by the user's input or environment, reported without a traceback.

    The command line prints the message and exits with `exit_code` (2: bad input).
    """

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(MobituneError):
    """A configuration value is invalid: names the key, the value and what is valid."""

    def __init__(self, key: str, value: Any, expected: str, hint: str | None = None) -> None:
        message = f"Invalid value for `{key}`: {value!r}. Expected {expected}."
        if hint:
            message += f" {hint}"
        super().__init__(message)
        self.key = key
        self.value = value


class DataError(MobituneError):
    """The dataset cannot be used as it is (structure, missing folders, no images)."""


def nearest_names(name: str, choices: Iterable[str], count: int = 5) -> list[str]:
    """Return up to `count` choices that look most like `name` (for "did you mean")."""
    return get_close_matches(str(name), list(choices), n=count, cutoff=0.0)


def format_choices(choices: Sequence[str], limit: int = 12) -> str:
    """Format a list of valid choices for an error message, eliding the middle if long."""
    quoted = [f"`{choice}`" for choice in choices]
    if len(quoted) <= limit:
        return ", ".join(quoted)
    head, tail = quoted[: limit // 2], quoted[-(limit // 2) :]
    return ", ".join(head) + f", ... ({len(quoted) - limit} more) ..., " + ", ".join(tail)
