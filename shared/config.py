"""Network configs: a dataclass in YAML and code, a plain dict in checkpoints.

Every app's LightningModule takes ``net: <App>Config`` (a ``@dataclass`` in the app's model code) by keyword and saves
it with :meth:`linmix.shared.lightning.LinmixModule.save_net_hyperparameters`, which stores ``dataclasses.asdict(net)``:
a checkpoint's ``hyper_parameters`` then hold only primitives, lists and dicts and load with
``torch.load(weights_only=True)`` without allow-listing any class. :func:`as_config` turns such a dict (or a namespace,
or the dataclass itself) back into the dataclass, so ``load_from_checkpoint`` and LightningCLI's ``--ckpt_path`` hand
the constructor something it accepts.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Type, TypeVar

__all__ = ["as_config"]

T = TypeVar("T")


def _tuple_fields(cls: type) -> set:
    """Names of the fields annotated ``tuple[...]`` (YAML and checkpoints give lists)."""
    hints = typing.get_type_hints(cls)
    out = set()
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name)
        if tp is tuple or typing.get_origin(tp) is tuple:
            out.add(f.name)
    return out


def as_config(cls: Type[T], value: Any) -> T:
    """``value`` (a ``cls`` instance, a dict such as a checkpoint's ``hyper_parameters["net"]``, or a namespace) as a
    ``cls`` instance. Lists become tuples where the field is a tuple. A key that is no field of ``cls`` raises
    ``ValueError`` naming it and the fields ``cls`` has."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if isinstance(value, dict):
        d: Dict[str, Any] = dict(value)
    elif hasattr(value, "as_dict"):  # jsonargparse Namespace
        d = value.as_dict()
    elif hasattr(value, "__dict__"):
        d = dict(vars(value))
    else:
        raise TypeError(f"{cls.__name__}: expected a {cls.__name__}, a dict or a namespace, got {type(value).__name__}")
    d = {k: v for k, v in d.items() if not k.startswith("__")}  # jsonargparse's __path__ of a nested config file
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; its fields are {names}")
    for k in _tuple_fields(cls) & set(d):
        if isinstance(d[k], list):
            d[k] = tuple(d[k])
    return cls(**d)
