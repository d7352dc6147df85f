"""One error contract for every console script.

A :class:`UserError` is a mistake the user can fix (a missing file, a bad flag value, the wrong checkpoint): the
dispatcher (:func:`linmix.shared.cli.run_app`) prints its message in one or two lines and exits with status 2, without a
traceback. Anything else is a bug and keeps its traceback. ``--debug`` on any command (or ``LINMIX_DEBUG=1``) shows
the traceback of user errors too. This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import os

__all__ = ["UserError", "debug_enabled"]


class UserError(Exception):
    """A user's mistake: ``str(err)`` names the file / flag / field and what to do."""


def debug_enabled() -> bool:
    """True when ``LINMIX_DEBUG`` is set to anything but '', '0' or 'false'."""
    return os.environ.get("LINMIX_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
