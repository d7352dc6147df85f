"""``linmix-ehr``: fit/validate/test/predict (LightningCLI, ``configs/ehr/*.yaml``) plus the synth, ingest, export,
demo and score tools."""

from __future__ import annotations

from linmix.apps.ehr.data import EHRDataModule
from linmix.apps.ehr.lit_module import EHRLitModule
from linmix.apps.ehr.predict_writer import ParquetPredictionWriter
from linmix.shared.cli import LinmixCLI, run_app


class EHRCLI(LinmixCLI):
    links = (("data.vocab_size", "model.net.vocab_size"), ("data.objective", "model.objective"))

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(ParquetPredictionWriter, "predictions")  # `predict` writes --predictions.output


def synth_tool(argv):
    """write a synthetic FHIR R4 cohort (bundle or bulk NDJSON) with oracle.parquet"""
    from linmix.apps.ehr.synth import synth_main
    return synth_main(argv)


def ingest_tool(argv):
    """FHIR R4 Bundles / NDJSON -> MEDS dataset"""
    from linmix.apps.ehr.ingest import ingest_main
    return ingest_main(argv)


def export_tool(argv):
    """TorchScript export of a finetuned checkpoint (tokens + side arrays + task -> probability)"""
    from linmix.apps.ehr.export import export_main
    return export_main(argv)


def demo_tool(argv):
    """synth -> ingest -> pretrain -> finetune -> test -> baseline -> export on a small cohort"""
    from linmix.apps.ehr.demo import demo_main
    return demo_main(argv)


def score_tool(argv):
    """incremental scoring of appended events, reusing the Mamba recurrent state"""
    from linmix.apps.ehr.predict import score_main
    return score_main(argv)


def main(argv=None) -> int:
    tools = {"synth": synth_tool, "ingest": ingest_tool, "export": export_tool, "demo": demo_tool, "score": score_tool}
    return run_app("linmix-ehr", EHRCLI, EHRLitModule, EHRDataModule, tools=tools, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
