"""The LM app's LightningCLI (fit / validate / test / predict), shared by the console script
(:mod:`linmix.apps.lm.cli`) and the demo (:mod:`linmix.apps.lm.tools`), which trains through it."""

from __future__ import annotations

from typing import Optional, Sequence

from linmix.apps.lm.data import LMDataModule
from linmix.apps.lm.lit_module import LMLitModule
from linmix.shared.cli import LinmixCLI, run_app


class LMCLI(LinmixCLI):
    links = (("data.vocab_size", "model.net.vocab_size"),)


def run_lightning(argv: Optional[Sequence[str]] = None) -> int:
    """``linmix-lm fit|validate|test|predict ...`` without the tools (what the demo calls)."""
    return run_app("linmix-lm", LMCLI, LMLitModule, LMDataModule, argv=argv)
