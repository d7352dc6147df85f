"""argparse ``type=`` checks for the console tools' numeric flags, so a bad value is refused at parse time.

``type=at_least(1)`` takes an integer >= 1, ``type=positive_float`` a finite float > 0. A refused value makes argparse
print ``<prog>: error: argument --flag: <why>`` with the usage and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["at_least", "non_negative_float", "positive_float", "add_format_argument", "chosen_formats",
           "export_format_list", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("torchscript", "export", "onnx")


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


def export_format_list(text: str) -> tuple[str, ...]:
    """A ``type=`` for ``--format``: a comma list of export formats (``torchscript``, ``export``, ``onnx``)."""
    names = tuple(t.strip().lower() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in EXPORT_FORMATS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(bad) or repr(text)}; choose from "
                                         f"{', '.join(EXPORT_FORMATS)} (repeat the flag or give a comma list)")
    return names


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--format torchscript|export|onnx`` (repeatable, or a comma list; default all three). Read the result with
    :func:`chosen_formats`."""
    parser.add_argument("--format", dest="formats", action="append", type=export_format_list, metavar="FORMATS",
                        help="torchscript (.pt, TorchScript), export (.pt2, torch.export program), onnx (.onnx, run "
                             "by ONNX Runtime); repeat the flag or give a comma list (default: all three)")


def chosen_formats(values: list[tuple[str, ...]] | None) -> tuple[str, ...]:
    """The parsed ``--format`` values in canonical order; none given -> all three."""
    names = {n for v in values or [] for n in v}
    return tuple(f for f in EXPORT_FORMATS if f in names) or EXPORT_FORMATS
