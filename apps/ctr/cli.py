"""``linmix-ctr``: fit/validate/test/predict (LightningCLI, configs/ctr/*.yaml) and tools."""

from __future__ import annotations

from linmix.apps.ctr.data import CTRDataModule
from linmix.apps.ctr.lit_module import CTRLitModule
from linmix.apps.ctr.synth import synth_main
from linmix.apps.ctr.tools import demo_main, encode_main, export_main
from linmix.shared.cli import LinmixCLI, run_app


class CTRCLI(LinmixCLI):
    """Field counts are linked from the data module; vocabulary sizes are known only after encoding, so the
    module fills them in ``setup``."""

    links = (("data.n_fields", "model.n_fields"), ("data.n_seq_fields", "model.n_seq_fields"))


def main(argv=None) -> int:
    return run_app("linmix-ctr", CTRCLI, CTRLitModule, CTRDataModule, argv=argv,
                   tools={"synth": synth_main, "encode": encode_main, "export": export_main, "demo": demo_main})


if __name__ == "__main__":
    raise SystemExit(main())
