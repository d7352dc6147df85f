"""``linmix-ctr``: fit/validate/test/predict (LightningCLI, configs/ctr/*.yaml) and tools.

Field counts are linked from the data module; vocabulary sizes are known only after encoding, so the module fills them
in ``setup``. A declaration only (import strings, no torch): see :mod:`linmix.shared.cli`.
"""

from __future__ import annotations

from linmix.shared.cli import App, run_app

APP = App(
    name="ctr",
    cli_name="CTRCLI",
    model="linmix.apps.ctr.lit_module:CTRLitModule",
    datamodule="linmix.apps.ctr.data:CTRDataModule",
    links=(("data.n_fields", "model.n_fields"), ("data.n_seq_fields", "model.n_seq_fields")),
    tools={
        "synth": ("linmix.apps.ctr.synth:synth_main",
                  "Write a synthetic click log (planted 2nd-4th order interactions) with its true click probability."),
        "encode": ("linmix.apps.ctr.tools:encode_main",
                   "Encode click-log files (Criteo/Avazu/libfm/schema) into a cached dataset with rejects and a "
                   "report."),
        "export": ("linmix.apps.ctr.tools:export_main",
                   "Export a trained checkpoint (encoded idx/val -> probability) as TorchScript, torch.export and "
                   "ONNX with its vocabularies and a pure-numpy featurizer."),
        "demo": ("linmix.apps.ctr.tools:demo_main",
                 "End-to-end demo on small synthetic data: synth -> fit FCN and DCNv2 -> test -> export -> "
                 "summary.json."),
    },
)


def main(argv=None) -> int:
    return run_app(APP, argv)


__getattr__ = APP.module_getattr(__name__)  # <module>.CTRCLI: the LightningCLI subclass


if __name__ == "__main__":
    raise SystemExit(main())
