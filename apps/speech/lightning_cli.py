"""The speech app's LightningCLI (fit / validate / test / predict), shared by the console script (:mod:`.cli`) and
the tools that train through it (:mod:`.demo`)."""

from typing import Optional, Sequence

from linmix.shared.cli import LinmixCLI, run_app

from .data import SpeechDataModule
from .lit_module import SpeechLitModule


class SpeechCLI(LinmixCLI):
    links = (("data.n_src", "model.net.n_src"),)


def run_lightning(argv: Optional[Sequence[str]] = None) -> int:
    """``linmix-speech fit|validate|test|predict ...`` without the tools (what the demo calls)."""
    return run_app("linmix-speech", SpeechCLI, SpeechLitModule, SpeechDataModule, argv=argv)
