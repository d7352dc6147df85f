"""argparse ``type=`` checks for the console tools' numeric flags, so a bad value is refused at parse time.

``type=at_least(1)`` takes an integer >= 1, ``type=positive_float`` a finite float > 0. A refused value makes argparse
print ``<prog>: error: argument --flag: <why>`` with the usage and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["at_least", "non_negative_float", "positive_float"]


def at_least(low: int) -> Callable[[str], int]:
    """A ``type=`` for integers >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _finite(text: str, ok, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number {what}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be a finite number {what}, got {text}")
    return value


def positive_float(text: str) -> float:
    """A ``type=`` for finite floats > 0."""
    return _finite(text, lambda v: v > 0, "> 0")


def non_negative_float(text: str) -> float:
    """A ``type=`` for finite floats >= 0."""
    return _finite(text, lambda v: v >= 0, ">= 0")
