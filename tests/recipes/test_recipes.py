"""The recipes (``recipes/``): every linmix name they use exists, and each recipe rehearses on CPU end to end (tiny data
and budget), is scored by its evaluation and published as a model the app's tool loads with ``--model``."""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(RECIPES))  # the recipes import their shared module as `common`, as when run as scripts


def _linmix_names(path: Path) -> set[str]:
    """Dotted linmix names a recipe imports or names in a string (class paths given to a CLI, ``-c`` strings)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("linmix"):
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("linmix")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names |= set(re.findall(r"\blinmix\.[A-Za-z_][\w.]*[A-Za-z_0-9]", node.value))
    return names


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_linmix_name_in_the_recipes_exists():
    names = {n for p in sorted(RECIPES.glob("*.py")) for n in _linmix_names(p)}
    assert len(names) > 20, names
    missing = sorted(n for n in names if not _resolves(n))
    assert not missing, missing
    configs = {m for p in RECIPES.glob("*.py") for m in re.findall(r"configs/\w+/\w+\.yaml", p.read_text())}
    assert configs and all((ROOT / c).is_file() for c in configs), configs


def test_every_recipe_answers_help(capsys):
    for name in ("ehr", "speech", "physics", "eval_ehr", "eval_speech", "eval_physics"):
        with pytest.raises(SystemExit) as exc:
            importlib.import_module(name).main(["--help"])
        assert exc.value.code == 0 and "usage:" in capsys.readouterr().out, name


def test_ehr_recipe_rehearsal_scores_and_publishes(tmp_path, monkeypatch):
    import ehr
    import eval_ehr

    from linmix.apps.ehr.cli import main as ehr_cli

    monkeypatch.setenv("LINMIX_MODELS", str(tmp_path / "models"))
    out, data = tmp_path / "run", tmp_path / "cohort"
    assert ehr.main(["--smoke", "--accel", "cpu", "--budget", "25", "--patients", "200", "--out", str(out),
                     "--data", str(data)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["phases"]["pretrain"]["steps"] > 0 and run["phases"]["finetune"]["steps"] > 0
    assert run["phases"]["finetune"]["validations"] and set(run["held_out_device"]) == set(
        run["phases"]["finetune"]["validations"][0]) - {"step", "t", "auroc"}
    assert (out / "finetuned_best.ckpt").is_file() and (out / "predictions_held_out.npz").is_file()
    results = tmp_path / "results"
    assert eval_ehr.main(["--from", str(out), "--data", str(data), "--results", str(results), "--name", "ehr_smoke",
                          "--publish", "ehr_smoke"]) == 0
    scored = json.loads((results / "ehr_smoke.json").read_text())
    assert scored["device_vs_cpu"]["max_abs_diff"] < 1e-4 and scored["same_input_hash"]
    assert set(scored["model"]) == set(scored["baseline"]) == set(run["held_out_device"])
    assert "## Data, recipe, hardware" in (tmp_path / "models" / "ehr" / "ehr_smoke.md").read_text()
    rc = ehr_cli(["score", "--model", "ehr_smoke", "--meds", str(data / "meds"), "--limit", "3",
                  "--out", str(tmp_path / "scores.parquet")])
    assert rc == 0 and (tmp_path / "scores.parquet").is_file()


@pytest.mark.slow
def test_physics_recipe_rehearsal_scores_and_publishes(tmp_path, monkeypatch):
    import eval_physics
    import physics

    from linmix.apps.physics.cli import main as physics_cli

    monkeypatch.setenv("LINMIX_MODELS", str(tmp_path / "models"))
    out, data = tmp_path / "run", tmp_path / "darcy"
    assert physics.main(["--smoke", "--accel", "cpu", "--budget", "45", "--out", str(out), "--data", str(data)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["steps"] > 0 and run["device_test"]["test/rel_l2"] > 0 and (out / "model.ckpt").is_file()
    results = tmp_path / "results"
    assert eval_physics.main(["--from", str(out), "--data", str(data), "--results", str(results), "--name", "p",
                              "--work", str(tmp_path / "eval"), "--publish", "gto_smoke"]) == 0
    scored = json.loads((results / "p.json").read_text())
    assert scored["cpu_on_device_meshes"]["abs_diff"] < 1e-4  # the device's test and this one: same meshes, weights
    sample = sorted(data.glob("*.npz"))[0]
    assert physics_cli(["rollout", "--model", "gto_smoke", "--sample", str(sample), "--out", str(tmp_path / "r")]) == 0


@pytest.mark.slow
def test_speech_recipe_rehearsal_scores_and_publishes(tmp_path, monkeypatch):
    import eval_speech
    import speech

    from linmix.apps.speech.cli import main as speech_cli

    monkeypatch.setenv("LINMIX_MODELS", str(tmp_path / "models"))
    out, data = tmp_path / "run", tmp_path / "corpus"
    assert speech.main(["--smoke", "--accel", "cpu", "--budget", "45", "--out", str(out), "--data", str(data)]) == 0
    run = json.loads((out / "run.json").read_text())
    fit = run["fits"]["convtasnet_synth_gpu"]
    assert fit["rc"] == 0 and fit["steps"] > 0 and fit["device_test"]["n_utterances"] == 3
    results = tmp_path / "results"
    assert eval_speech.main(["--from", str(out), "--data", str(data), "--limit", "3", "--results", str(results),
                             "--name", "s", "--work", str(tmp_path / "eval"), "--publish", "tasnet_smoke"]) == 0
    row = json.loads((results / "s.json").read_text())["rows"][0]
    assert row["device_vs_cpu"]["max_abs_diff_db"] < 1e-3  # same audio (one corpus here), same weights
    mix = sorted((data / "Libri2Mix/wav8k/min/test/mix_clean").glob("*.wav"))[0]
    assert speech_cli(["separate", str(mix), "--model", "tasnet_smoke", "--out-dir", str(tmp_path / "sep")]) == 0
