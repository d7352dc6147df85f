"""``linmix-speech``: LightningCLI fit/validate/test/predict plus the synth, separate, export and demo tools.

A declaration only (import strings, no torch): see :mod:`linmix.shared.cli`.
"""

from __future__ import annotations

from linmix.shared.cli import App, run_app

APP = App(
    name="speech",
    cli_name="SpeechCLI",
    model="linmix.apps.speech.lit_module:SpeechLitModule",
    datamodule="linmix.apps.speech.data:SpeechDataModule",
    links=(("data.n_src", "model.net.n_src"),),
    tools={
        "synth": ("linmix.apps.speech.synth:main",
                  "generate an espeak-ng two/three-speaker corpus in the LibriMix layout (no download)"),
        "separate": ("linmix.apps.speech.separate:main",
                     "separate audio files into one wav per source (chunked overlap-add, any rate/length)"),
        "export": ("linmix.apps.speech.export:main",
                   "export a checkpoint to TorchScript, torch.export and ONNX (waveform in, sources out), round-trip checked"),
        "demo": ("linmix.apps.speech.demo:main",
                 "end-to-end demo on the synthetic corpus: synth, fit tiny, test, separate, stream, export"),
    },
)


def main(argv=None) -> int:
    return run_app(APP, argv)


__getattr__ = APP.module_getattr(__name__)  # <module>.SpeechCLI: the LightningCLI subclass


if __name__ == "__main__":
    raise SystemExit(main())
