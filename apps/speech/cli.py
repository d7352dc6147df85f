"""``linmix-speech``: LightningCLI fit/validate/test/predict plus the synth, separate, export and demo tools."""

from linmix.shared.cli import run_app

from .data import SpeechDataModule
from .lightning_cli import SpeechCLI
from .lit_module import SpeechLitModule


def main(argv=None) -> int:
    from .demo import main as demo_main
    from .export import main as export_main
    from .separate import main as separate_main
    from .synth import main as synth_main

    tools = {"synth": synth_main, "separate": separate_main, "export": export_main, "demo": demo_main}
    return run_app("linmix-speech", SpeechCLI, SpeechLitModule, SpeechDataModule, tools=tools, argv=argv)
