"""
Converters for C{usage.Options} parameters that name the option in their
errors, shared by the C{twistd} plugins and the C{sockshare} command.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def number(kind: type, option: str, minimum: float, inclusive: bool = True) -> Callable[[str], Any]:
    """
    A converter to C{kind} (C{int} or C{float}) that refuses text that is not
    a finite number, or is below C{minimum} (or equal to it, if not
    C{inclusive}), with a message naming C{--option}.
    """
    relation = ">=" if inclusive else ">"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"--{option} takes a number, not {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"--{option} takes a finite number, not {text!r}")
        if value < minimum or (value == minimum and not inclusive):
            raise ValueError(f"--{option} must be {relation} {minimum}, not {text}")
        return value

    convert.coerceDoc = f"Must be {relation} {minimum}."  # type: ignore[attr-defined]
    return convert


def timeout(option: str) -> Callable[[str], float | None]:
    """
    A converter of seconds (> 0) where C{none} or C{off} mean no limit.
    """

    def convert(text: str) -> float | None:
        if text.lower() in ("none", "off"):
            return None
        value: float = number(float, option, 0, inclusive=False)(text)
        return value

    convert.coerceDoc = "Seconds (> 0), or 'none' to disable."  # type: ignore[attr-defined]
    return convert


def sizeOrNone(option: str, minimum: int) -> Callable[[str], int | None]:
    """
    A converter of a whole number of bytes (>= C{minimum}) where C{none} or
    C{off} mean none.
    """

    def convert(text: str) -> int | None:
        if text.lower() in ("none", "off"):
            return None
        value: int = number(int, option, minimum)(text)
        return value

    convert.coerceDoc = f"Bytes (>= {minimum:,}), or 'none'."  # type: ignore[attr-defined]
    return convert


__all__ = ["number", "timeout", "sizeOrNone"]
