"""Named trained models: ``--model NAME`` as an alternative to ``--ckpt PATH`` in the apps' tools.

A published model is ``<models>/<app>/<name>.ckpt`` with its card ``<name>.md`` beside it (``models/README.md``).
``<models>`` is the folder named by the environment variable ``LINMIX_MODELS`` when it is set, else the ``models/``
folder of the linmix package: the repository's ``models/`` in a source checkout or editable install, the copy shipped
inside the package otherwise. :func:`add_checkpoint_args` gives a tool the two mutually exclusive flags and
:func:`checkpoint_path` turns the parsed flags into the file to load (the tool then loads it weights-only through
:mod:`linmix.shared.checkpoint` as before). Standard library only.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from linmix.shared.errors import UserError

__all__ = ["ENV", "models_root", "available_models", "resolve_model", "add_checkpoint_args", "checkpoint_path"]

ENV = "LINMIX_MODELS"
SUFFIX = ".ckpt"


def models_root() -> Path:
    """The folder holding ``<app>/<name>.ckpt``: ``$LINMIX_MODELS`` if set, else the package's ``models/``."""
    env = os.environ.get(ENV, "").strip()
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "models"


def available_models(app: str, root: Path | None = None) -> list[str]:
    """Names of the published models of ``app`` (sorted; empty when the folder does not exist)."""
    folder = (models_root() if root is None else Path(root)) / app
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}") if p.is_file()) if folder.is_dir() else []


def resolve_model(app: str, name: str, root: Path | None = None) -> Path:
    """``<root>/<app>/<name>.ckpt`` (``name`` with or without ``.ckpt``).

    Raises:
        UserError: ``name`` is not a plain name, or no such model exists; the message lists the available names.
    """
    root = models_root() if root is None else Path(root)
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if not stem or Path(stem).name != stem or stem in (".", ".."):
        raise UserError(f"--model takes a model name, not a path ({name!r}); use --ckpt for a file")
    path = root / app / f"{stem}{SUFFIX}"
    if path.is_file():
        return path
    names = available_models(app, root)
    have = f"available: {', '.join(names)}" if names else "none is published there"
    raise UserError(f"no linmix-{app} model named {stem!r} in {root / app} ({have}); set {ENV} to another models "
                    "folder or pass --ckpt PATH")


def add_checkpoint_args(parser: argparse.ArgumentParser, *, ckpt_help: str) -> None:
    """Add ``--ckpt PATH`` and ``--model NAME`` to ``parser``: exactly one of them is required."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ckpt", help=ckpt_help)
    group.add_argument("--model", metavar="NAME",
                       help=f"a published model by name: <models>/<app>/NAME.ckpt (<models>: ${ENV}, else the "
                            "package's models/ folder)")


def checkpoint_path(args: argparse.Namespace, *, app: str) -> str:
    """The file the parsed ``--ckpt`` / ``--model`` flags name (``--model`` through :func:`resolve_model`)."""
    return args.ckpt if args.ckpt is not None else str(resolve_model(app, args.model))
