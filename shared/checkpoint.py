"""Reading checkpoints a user hands to a console script, without ever running code from them.

Every loader in linmix goes through :func:`read_checkpoint` or :func:`load_lit`: ``torch.load(weights_only=True)``
(PyTorch's restricted unpickler: tensors, containers and primitive types, plus the few classes an app lists in its
``checkpoint_globals``), never plain unpickling. A file that is not what the command needs (a TorchScript export, a
checkpoint of another app, a file that is no checkpoint at all, one holding arbitrary Python objects) raises
:class:`linmix.shared.errors.UserError` with one line that says what it is and what the command needs.

Each linmix LightningModule stamps its checkpoints with ``checkpoint["linmix"] = {"app": ...}``
(:meth:`linmix.shared.lightning.LinmixModule.on_save_checkpoint`), which is how a checkpoint of another app is recognised.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Sequence

import torch

from linmix.shared.errors import UserError

__all__ = ["read_checkpoint", "load_lit", "load_lit_checkpoint", "is_torchscript", "checkpoint_app"]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (a zip with ``constants.pkl`` and ``code/``), as ``torch.jit.save`` writes."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def checkpoint_app(ckpt: Dict[str, Any]) -> str | None:
    """The app a loaded checkpoint was written by (its ``linmix`` stamp), or None for an unstamped one."""
    stamp = ckpt.get("linmix")
    return str(stamp.get("app")) if isinstance(stamp, dict) and stamp.get("app") else None


def read_checkpoint(path: str | Path, *, app: str, safe_globals: Sequence[type] = ()) -> Dict[str, Any]:
    """Load a Lightning checkpoint of ``linmix-<app>`` with weights-only unpickling.

    Args:
        path: the file the user named.
        app: the app that needs it (``"speech"``); a checkpoint stamped by another app is refused.
        safe_globals: classes the restricted unpickler may rebuild besides tensors and primitives (config dataclasses).

    Raises:
        UserError: missing file, folder, TorchScript archive, not a torch file, objects outside the allow-list,
            not a Lightning checkpoint, another app's checkpoint.
    """
    p = Path(path)
    need = f"linmix-{app} needs a Lightning checkpoint (.ckpt) written by `linmix-{app} fit`"
    if not p.exists():
        raise UserError(f"{p}: no such file; {need}")
    if p.is_dir():
        raise UserError(f"{p} is a folder; {need}")
    if is_torchscript(p):
        raise UserError(f"{p} is a TorchScript export, not a checkpoint; {need}")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = _GLOBAL.search(str(e))
        if m is None:  # not an object the allow-list refused: the bytes are no pickle torch can read
            raise UserError(f"{p} is not a checkpoint (unreadable pickle); {need}") from None
        what = f" ({m.group(1)})"
        raise UserError(f"{p} holds Python objects{what} that linmix does not load: unpickling them could run code. "
                        f"{need}") from None
    except Exception as e:  # noqa: BLE001 - any other failure to read means "not a checkpoint"
        raise UserError(f"{p} is not a checkpoint (torch.load: {type(e).__name__}); {need}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"{p} is not a Lightning checkpoint (no state_dict); {need}")
    other = checkpoint_app(ckpt)
    if other is not None and other != app:
        raise UserError(f"{p} is a linmix-{other} checkpoint; {need}")
    return ckpt


def load_lit(cls: type, path: str | Path, *, app: str) -> Any:
    """``cls.load_from_checkpoint`` on CPU, weights-only, after :func:`read_checkpoint` has vetted the file.

    ``cls`` may list extra allowed classes in a ``checkpoint_globals`` attribute. A checkpoint whose hyperparameters or
    weights do not fit ``cls`` (an unstamped checkpoint of another app) raises :class:`UserError`.
    """
    return load_lit_checkpoint(cls, path, app=app)[0]


def load_lit_checkpoint(cls: type, path: str | Path, *, app: str) -> tuple[Any, Dict[str, Any]]:
    """:func:`load_lit` plus the vetted checkpoint dict itself (for what the module does not keep, e.g. the data
    module's hyperparameters), without reading the file a third time."""
    allowed = list(getattr(cls, "checkpoint_globals", ()))
    ckpt = read_checkpoint(path, app=app, safe_globals=allowed)
    try:
        with torch.serialization.safe_globals(allowed):
            return cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True), ckpt
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} does not fit linmix-{app}'s model ({first}); linmix-{app} needs a checkpoint "
                        f"written by `linmix-{app} fit`") from None
