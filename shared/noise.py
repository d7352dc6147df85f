"""The one place that decides which third-party output linmix's console scripts keep off the terminal.

:func:`quiet_dependencies` is applied by the dispatcher (:func:`linmix.shared.cli.run_app`) before any command runs.
It hides only what a user of linmix cannot act on:

* ``DeprecationWarning`` / ``PendingDeprecationWarning`` / ``FutureWarning`` attributed to a dependency's own module
  (one dependency calling another's deprecated API, e.g. Lightning's use of ``torch.utils._pytree.LeafSpec``). The
  filter matches the warning's module, so the same warnings raised from linmix's modules stay visible.
  This covers ``torch.jit``: TorchScript is deprecated upstream and linmix's export path
  (:mod:`linmix.shared.export`) still scripts with it, so its deprecation notice is known and deliberately not shown.
* Lightning's ``LightningCLI's args parameter ...`` warning: the dispatcher hands LightningCLI the argv it was given
  (tests and demos call ``main([...])`` while ``sys.argv`` holds their own arguments).
* Upsell tips Lightning logs at INFO level (``💡 Tip: ... litlogger / litmodels``).

Lightning's own ``LightningDeprecationWarning`` (about arguments a user passes), every ``UserWarning`` of a dependency
(e.g. too few dataloader workers) and everything linmix itself warns or logs are left alone. The model summary's
FLOPs column is handled where the summary is made (:mod:`linmix.shared.lightning_cli`). Standard library only.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["DEPENDENCIES", "UPSELL_PREFIXES", "quiet_dependencies"]

DEPENDENCIES = ("torch", "torchaudio", "torchmetrics", "torch_geometric", "pytorch_lightning", "lightning_fabric",
                "lightning_utilities", "jsonargparse", "skfem")
"""Top-level modules whose deprecation / future warnings are not shown (their submodules included)."""

UPSELL_PREFIXES = ("💡 Tip:",)
"""Log messages dropped from Lightning's ``rank_zero`` loggers (advertisements for Lightning's cloud services)."""

_MODULES = "(?:" + "|".join(DEPENDENCIES) + r")(?:\.|$)"
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class _DropUpsell(logging.Filter):
    """Drops records whose message starts with one of :data:`UPSELL_PREFIXES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(UPSELL_PREFIXES)


def quiet_dependencies() -> None:
    """Install the filters above (idempotent; imports nothing beyond the standard library)."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_MODULES)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)  # the logger Lightning's rank_zero_info writes to, created here if need be
        if not any(isinstance(f, _DropUpsell) for f in logger.filters):
            logger.addFilter(_DropUpsell())
