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


def positive_float(text: str) -> float:
    """A ``type=`` for finite floats > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A ``type=`` for finite floats >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value
