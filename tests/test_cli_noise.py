"""What the console scripts keep off the terminal (linmix.shared.noise, the model summary) and what they keep."""

from __future__ import annotations

import logging
import warnings

import pytest

from linmix.shared.noise import quiet_dependencies


def _shown(category: type, module: str) -> list:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_dependencies()
        warnings.warn_explicit("old API", category, f"{module.replace('.', '/')}.py", 1, module=module)
    return seen


@pytest.mark.parametrize("category", [FutureWarning, DeprecationWarning, PendingDeprecationWarning])
@pytest.mark.parametrize("module", ["torch.jit._script", "pytorch_lightning.utilities._pytree", "torch",
                                    "torch_geometric.typing", "jsonargparse._core"])
def test_dependency_deprecations_are_hidden(category, module):
    assert _shown(category, module) == []


@pytest.mark.parametrize("module", ["linmix.shared.export", "linmix.apps.ehr.data", "__main__", "torchvision",
                                    "mytorch"])
def test_other_modules_keep_their_deprecations(module):
    assert len(_shown(FutureWarning, module)) == 1


def test_dependency_user_warnings_are_kept():
    assert len(_shown(UserWarning, "pytorch_lightning.trainer.connectors.data_connector")) == 1


def test_upsell_tips_are_dropped_and_other_info_kept():
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    quiet_dependencies()
    quiet_dependencies()  # idempotent: one filter
    assert sum(type(f).__name__ == "_DropUpsell" for f in logger.filters) == 1
    tip = logger.makeRecord(logger.name, logging.INFO, "x.py", 1, "💡 Tip: For seamless cloud uploads", (), None)
    info = logger.makeRecord(logger.name, logging.INFO, "x.py", 1, "GPU available: False", (), None)
    assert not logger.filter(tip) and logger.filter(info)


SUMMARY = [(" ", ["0"]), ("Name", ["net"]), ("Type", ["MixerLM"]), ("Params", ["105 K"]), ("Mode", ["train"]),
           ("FLOPs", ["0"])]


def test_rich_summary_drops_zero_flops(capsys):
    from linmix.shared.lightning_cli import RichSummaryWithoutFlops

    RichSummaryWithoutFlops.summarize(SUMMARY, 105_000, 105_000, 0.42, {"train": 32, "eval": 0}, 0)
    out = capsys.readouterr().out
    assert "MixerLM" in out and "Total params" in out and "Mode" in out
    assert "FLOPs" not in out
    RichSummaryWithoutFlops.summarize([*SUMMARY[:-1], ("FLOPs", ["3.1 M"])], 105_000, 105_000, 0.42,
                                      {"train": 32, "eval": 0}, 3_100_000)
    assert "3.1 M" in capsys.readouterr().out  # counted FLOPs (a module with example_input_array) stay


def test_text_summary_drops_zero_flops(monkeypatch):
    import pytorch_lightning.callbacks.model_summary as ms

    from linmix.shared.lightning_cli import SummaryWithoutFlops

    lines = []
    monkeypatch.setattr(ms.log, "info", lambda msg, *a, **k: lines.append(msg))
    SummaryWithoutFlops.summarize(SUMMARY, 105_000, 105_000, 0.42, {"train": 32, "eval": 0}, 0)
    (text,) = lines
    assert "MixerLM" in text and "Modules in eval mode" in text
    assert "FLOPs" not in text and "Flops" not in text


def test_summary_swap_keeps_depth():
    from pytorch_lightning.callbacks import ModelCheckpoint, ModelSummary, RichModelSummary

    from linmix.shared.lightning_cli import RichSummaryWithoutFlops, SummaryWithoutFlops, _without_flops

    swapped = _without_flops(RichModelSummary(max_depth=2))
    assert type(swapped) is RichSummaryWithoutFlops and swapped._max_depth == 2
    assert type(_without_flops(ModelSummary())) is SummaryWithoutFlops
    ckpt = ModelCheckpoint()
    assert _without_flops(ckpt) is ckpt
