"""configs/ehr/pretrain.yaml and finetune.yaml build the same network: both name the shared configs/ehr/net.yaml as
``model.net`` and link the same vocabulary size from the data, so a pretraining checkpoint always fits finetuning."""

from __future__ import annotations

from pathlib import Path

import yaml

from linmix.apps.ehr.cli import EHRCLI
from linmix.apps.ehr.data import EHRDataModule
from linmix.apps.ehr.lit_module import EHRLitModule

EHR = Path(__file__).resolve().parents[2] / "configs" / "ehr"


def _cli(name: str, *extra: str) -> EHRCLI:
    return EHRCLI(EHRLitModule, EHRDataModule, args=["-c", str(EHR / f"{name}.yaml"), *extra], run=False, app="ehr")


def test_pretrain_and_finetune_resolve_to_the_same_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the net file is found relative to the config, not the working directory
    pre, fine = _cli("pretrain"), _cli("finetune")
    assert pre.model.objective == "pretrain" and fine.model.objective == "finetune"
    assert pre.model.hparams["net"] == fine.model.hparams["net"]
    shared = yaml.safe_load((EHR / "net.yaml").read_text())
    assert {k: pre.model.hparams["net"][k] for k in shared} == shared
    assert pre.model.hparams["net"]["vocab_size"] == pre.datamodule.vocab_size
    shapes = [{k: v.shape for k, v in m.net.state_dict().items()} for m in (pre.model, fine.model)]
    assert shapes[0] == shapes[1]
    for name in ("pretrain", "finetune"):
        assert "net: net.yaml" in (EHR / f"{name}.yaml").read_text()


def test_command_line_overrides_a_field_of_the_shared_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _cli("finetune", "--model.net.n_layers", "3")
    assert cli.model.hparams["net"]["n_layers"] == 3 and len(cli.model.net.backbone.blocks) == 3
    assert cli.model.hparams["net"]["d_model"] == yaml.safe_load((EHR / "net.yaml").read_text())["d_model"]


def test_task_count_flows_from_the_data_to_the_readouts(tmp_path, monkeypatch):
    """--data.task_heads true: one readout per task the data asks for (3 base + n_conditions, or --data.tasks)."""
    monkeypatch.chdir(tmp_path)
    assert _cli("finetune").model.net.cfg.n_tasks == 0  # default: one shared task logit
    cli = _cli("finetune", "--data.task_heads", "true", "--data.n_conditions", "4")
    assert cli.model.hparams["net"]["n_tasks"] == 7 and cli.model.net.cls_head[1].out_features == 7
    cli = _cli("finetune", "--data.task_heads", "true", "--data.tasks", "[mortality,los]")
    assert cli.model.net.cls_head[1].out_features == 2
