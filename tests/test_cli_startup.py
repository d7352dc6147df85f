"""Console scripts start at once: ``linmix-<app> --help`` and the tools that need no model import neither torch nor
Lightning (checked in a fresh interpreter after each command, the real work included); training subcommands do, and
print no third-party noise (FLOPs column of zeros, upsell tips, dependencies' deprecation warnings)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = ("ehr", "ctr", "speech", "physics", "lm")
HEAVY = ("torch", "pytorch_lightning", "torch_geometric")

PROBE = """
import contextlib, io, json, sys
from linmix.apps.{app}.cli import main
rows = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc = main(argv)
    except SystemExit as e:
        rc = e.code
    rows.append({{"argv": argv, "rc": rc, "stdout": out.getvalue(),
                 "heavy": [m for m in {heavy!r} if m in sys.modules]}})
with open(sys.argv[2], "w") as f:
    json.dump(rows, f)
"""


def probe(app: str, steps: list[list[str]], tmp_path: Path) -> list[dict]:
    """Run ``linmix-<app>`` with each argv of ``steps`` in turn, in one fresh interpreter; one row per step with its
    exit status, stdout and the heavy modules loaded so far."""
    result = tmp_path / f"probe_{app}.json"
    code = PROBE.format(app=app, heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code, json.dumps(steps), str(result)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.parametrize("app", APPS)
def test_app_help_imports_no_torch(app, tmp_path):
    spec = importlib.import_module(f"linmix.apps.{app}.cli").APP
    (row,) = probe(app, [["--help"]], tmp_path)
    assert row["rc"] == 0 and row["heavy"] == [], row
    for command in ("fit", "test", *spec.tools):
        assert f"  {command} " in row["stdout"], (command, row["stdout"])


@pytest.mark.parametrize("app", APPS)
def test_every_tool_help_imports_no_torch(app, tmp_path):
    """Tools that load a model too (export, score, separate, rollout, demo) read their arguments first: --help
    answers without torch."""
    spec = importlib.import_module(f"linmix.apps.{app}.cli").APP
    rows = probe(app, [[tool, "--help"] for tool in spec.tools], tmp_path)
    for row in rows:
        assert row["rc"] == 0 and row["heavy"] == [], (row["argv"], row["heavy"])


# Each tool that needs no model: its --help, then a small real run, all without torch / Lightning / PyG.
TOOL_RUNS = {
    "ehr": [["synth", "--help"], ["ingest", "--help"],
            ["synth", "--patients", "4", "--out", "fhir"], ["ingest", "fhir", "--out", "meds", "--quiet"]],
    "ctr": [["encode", "--help"], ["synth", "--help"], ["synth", "--rows", "400", "--out", "clicks"],
            ["encode", "--format", "schema", "--schema", "clicks/schema.yaml", "--train", "clicks/train.parquet",
             "--val", "clicks/val.parquet", "--out", "encoded"]],
    "physics": [["synth", "--help"],
                ["synth", "--problem", "darcy", "--samples", "2", "--workers", "1", "--out", "darcy"]],
    "speech": [["synth", "--help"],
               ["synth", "--out", "corpus", "--n-train", "2", "--n-dev", "1", "--n-test", "1", "--n-speakers", "16"]],
}
TOOL_OUTPUTS = {"ehr": "meds/data/train/0.parquet", "ctr": "encoded/report.json", "physics": "darcy/synth_summary.json",
                "speech": "corpus/Libri2Mix/wav8k/min/metadata/mixture_test_mix_clean.csv"}


@pytest.mark.parametrize("app", sorted(TOOL_RUNS))
def test_tools_without_a_model_run_without_torch(app, tmp_path):
    rows = probe(app, TOOL_RUNS[app], tmp_path)
    for row in rows:
        assert row["rc"] == 0, row
        assert row["heavy"] == [], (row["argv"], row["heavy"])
    assert rows[0]["stdout"].startswith(f"usage: linmix-{app} {TOOL_RUNS[app][0][0]}")
    assert (tmp_path / TOOL_OUTPUTS[app]).is_file()


def test_fit_help_imports_lightning(tmp_path):
    (row,) = probe("lm", [["fit", "--help"]], tmp_path)
    assert row["rc"] == 0 and "--trainer.max_steps" in row["stdout"]
    assert "pytorch_lightning" in row["heavy"] and "torch" in row["heavy"]


@pytest.mark.parametrize("app", APPS)
def test_declared_targets_resolve(app):
    from linmix.shared.cli import load
    from linmix.shared.lightning_cli import LinmixCLI

    module = importlib.import_module(f"linmix.apps.{app}.cli")
    spec = module.APP
    for target, summary in spec.tools.values():
        assert callable(load(target)) and summary.strip(), target
    assert isinstance(load(spec.model), type) and isinstance(load(spec.datamodule), type)
    cls = getattr(module, spec.cli_name)
    assert issubclass(cls, LinmixCLI) and cls is spec.cli_class() and cls.links == spec.links and cls.links
    with pytest.raises(AttributeError):
        module.NoSuchCLI  # noqa: B018


def test_fit_prints_no_third_party_noise(tmp_path):
    """A real ``fit`` with extra ``sys.argv`` (as when main() is called from Python): no FLOPs column, no upsell tip,
    no dependency deprecation warning, no LightningCLI args warning; the model summary is still there."""
    code = ("import sys; sys.argv = ['linmix-lm', 'extra']; from linmix.apps.lm.cli import main; "
            f"sys.exit(main(['fit', '-c', {str(ROOT / 'configs/lm/tiny.yaml')!r}, '--trainer.max_steps', '2', "
            "'--trainer.limit_val_batches', '0', '--trainer.logger.init_args.save_dir', 'runs']))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    assert "Total params" in text and "MixerLM" in text
    for noise in ("FLOPs", "Flops", "💡", "litlogger", "litmodels", "FutureWarning", "DeprecationWarning",
                  "is deprecated", "args parameter"):
        assert noise not in text, (noise, text[-3000:])
