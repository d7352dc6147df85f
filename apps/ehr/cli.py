"""``linmix-ehr``: fit/validate/test/predict (LightningCLI, ``configs/ehr/*.yaml``) plus the synth, ingest, export,
demo and score tools.

A declaration only (import strings, no torch): ``linmix-ehr --help`` answers at once and each tool imports just what
it needs (:mod:`linmix.shared.cli`).
"""

from __future__ import annotations

from linmix.shared.cli import App, run_app

APP = App(
    name="ehr",
    cli_name="EHRCLI",
    model="linmix.apps.ehr.lit_module:EHRLitModule",
    datamodule="linmix.apps.ehr.data:EHRDataModule",
    links=(("data.vocab_size", "model.net.vocab_size"), ("data.objective", "model.objective"),
           ("data.n_task_readouts", "model.net.n_tasks")),
    # `predict` writes --predictions.output
    class_args={"predictions": "linmix.apps.ehr.predict_writer:ParquetPredictionWriter"},
    tools={
        "synth": ("linmix.apps.ehr.synth:synth_main",
                  "write a synthetic FHIR R4 cohort (bundle or bulk NDJSON) with oracle.parquet"),
        "ingest": ("linmix.apps.ehr.ingest:ingest_main", "FHIR R4 Bundles / NDJSON -> MEDS dataset"),
        "export": ("linmix.apps.ehr.export:export_main",
                   "TorchScript, torch.export and ONNX export of a finetuned checkpoint (tokens + side arrays + "
                   "task -> probability)"),
        "demo": ("linmix.apps.ehr.demo:demo_main",
                 "synth -> ingest -> pretrain -> finetune -> test -> baseline -> export on a small cohort"),
        "score": ("linmix.apps.ehr.score:score_main",
                  "incremental scoring of appended events, reusing the Mamba recurrent state"),
    },
)


def main(argv=None) -> int:
    return run_app(APP, argv)


__getattr__ = APP.module_getattr(__name__)  # <module>.EHRCLI: the LightningCLI subclass


if __name__ == "__main__":
    raise SystemExit(main())
