"""``linmix-lm``: the tiny mixer LM (fit/validate/test/predict, export, demo).

A declaration only (import strings, no torch): see :mod:`linmix.shared.cli`.
"""

from __future__ import annotations

from linmix.shared.cli import App, run_app

APP = App(
    name="lm",
    cli_name="LMCLI",
    model="linmix.apps.lm.lit_module:LMLitModule",
    datamodule="linmix.apps.lm.data:LMDataModule",
    links=(("data.vocab_size", "model.net.vocab_size"),),
    tools={
        "export": ("linmix.apps.lm.tools:export_main",
                   "Export a checkpoint's network to TorchScript, torch.export and ONNX (config embedded), "
                   "round-trip checked."),
        "demo": ("linmix.apps.lm.tools:demo_main",
                 "Train the tiny Mamba2 LM on the built-in additions corpus for about a minute, then test and "
                 "export."),
    },
)


def main(argv=None) -> int:
    return run_app(APP, argv)


__getattr__ = APP.module_getattr(__name__)  # <module>.LMCLI: the LightningCLI subclass


if __name__ == "__main__":
    raise SystemExit(main())
