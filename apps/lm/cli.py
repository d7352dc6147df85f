"""``linmix-lm``: the tiny mixer LM (fit/validate/test/predict, export, demo)."""

from __future__ import annotations

from linmix.apps.lm.data import LMDataModule
from linmix.apps.lm.lightning_cli import LMCLI
from linmix.apps.lm.lit_module import LMLitModule
from linmix.apps.lm.tools import demo_main, export_main
from linmix.shared.cli import run_app


def main(argv=None) -> int:
    return run_app("linmix-lm", LMCLI, LMLitModule, LMDataModule, {"export": export_main, "demo": demo_main}, argv)
