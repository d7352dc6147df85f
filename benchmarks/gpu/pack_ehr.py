"""Pack the 20k-patient EHR benchmark cohort for the GPU machine (which has no polars): ``gpu_pack/ehr/``.

    .venv/bin/python benchmarks/gpu/pack_ehr.py            # reads runs/bench/ehr_quality_20000 (benchmarks/ehr_quality.py)

Every model input is produced here by the app's own data path (``EHRDataModule`` -> ``FinetuneDataset.__getitem__`` /
``PretrainDataset.__getitem__``: cut at the prediction time, most-recent truncation, ``[CLS]`` in slot 0), so the GPU job
trains on exactly the arrays the CLI would feed. Inputs shared by several datapoints (mortality and the condition tasks
all read the whole sequence) are stored once, and an input that is a prefix of another of the same patient (a cut
history) is stored as (start, length) into it: training inputs point into the pretraining sequences, tuning and
held-out ones into each patient's longest input (the 60k pack: 30 -> 10.7 MiB, with prediction times kept for
the held-out part only). Output:

- ``gpu_pack/ehr/ehr_pack.npz`` (``np.savez_compressed``): per part ``P`` in ``pre_train`` (pretraining sequences of the
  train split) and ``ft_train``, ``ft_tuning``, ``ft_held_out`` (finetuning datapoints):
  ``P/tokens`` uint8, ``P/token_type`` uint8, ``P/age`` float32 (years), ``P/time`` float32 (days), ``P/visit_order``
  int16, ``P/visit_segment`` uint8 (sequences concatenated), ``P/offsets`` int64 (n_sequences + 1), ``P/subject_id``
  int64 (per sequence); finetuning parts add per input ``P/start`` int64 and ``P/length`` int32 (its tokens are
  ``B/<key>[start:start + length]`` with ``B`` = ``P/base``, a part name: ``pre_train``, or ``P`` itself, whose
  arrays then hold the sequences the inputs point into) and ``P/input_subject_id`` int64, and per datapoint ``P/item``
  int32 (index of its input), ``P/task`` uint8, ``P/label`` uint8 and, in ``ft_held_out`` only (where predictions
  are written), ``P/prediction_time`` int64 (microseconds); a datapoint's subject is its input's.
- ``gpu_pack/ehr/meta.json``: task names and task token ids, vocabulary JSON (lab bins), vocab_size, max_len, the MEDS
  input hash, counts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

KEYS = (("tokens", np.uint8), ("token_type", np.uint8), ("age", np.float32), ("time", np.float32),
        ("visit_order", np.int16), ("visit_segment", np.uint8))


def _pack_items(items: list[dict], prefix: str, out: dict) -> None:
    """Concatenate input arrays of ``items`` under ``prefix/``, checking that the narrow dtypes hold them exactly."""
    lens = np.array([len(it["tokens"]) for it in items], dtype=np.int64)
    out[f"{prefix}/offsets"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    for key, dtype in KEYS:
        full = np.concatenate([np.asarray(it[key]) for it in items])
        narrow = full.astype(dtype)
        if not np.array_equal(narrow.astype(full.dtype), full):
            raise ValueError(f"{prefix}/{key} does not fit {np.dtype(dtype).name}")
        out[f"{prefix}/{key}"] = narrow
    out[f"{prefix}/subject_id"] = np.array([it["subject_id"] for it in items], dtype=np.int64)


def _is_prefix(short: dict, arrays: dict, start: int, room: int) -> bool:
    """Are ``short``'s arrays equal to ``arrays[k][start:start + len]`` (compared in ``short``'s own dtypes)?"""
    n = len(short["tokens"])
    return n <= room and all(np.array_equal(np.asarray(arrays[k][start:start + n]).astype(np.asarray(short[k]).dtype),
                                            np.asarray(short[k])) for k, _ in KEYS)


def _starts_in_base(items: list[dict], subj: np.ndarray, out: dict, base: str) -> np.ndarray | None:
    """Start of each item in the packed part ``base`` (one sequence per subject), or None unless every item is a prefix
    of its subject's sequence there."""
    offsets = out[f"{base}/offsets"]
    row_of = {int(s): r for r, s in enumerate(out[f"{base}/subject_id"])}
    arrays = {k: out[f"{base}/{k}"] for k, _ in KEYS}
    rows = [row_of.get(int(s)) for s in subj]
    if all(r is not None and _is_prefix(it, arrays, offsets[r], offsets[r + 1] - offsets[r])
           for it, r in zip(items, rows)):
        return np.array([offsets[r] for r in rows], dtype=np.int64)
    return None


def _pack_prefixes(items: list[dict], prefix: str, out: dict, base: str | None = None) -> int:
    """Store ``items`` as (start, length) into sequences: those of the packed part ``base`` (one per subject) when every
    item is a prefix of its subject's sequence there, else into sequences of ``prefix`` itself (each subject's longest
    item, plus any item that is not a prefix of one already kept). Returns the number of tokens stored for ``prefix``."""
    subj = np.array([it["subject_id"] for it in items], dtype=np.int64)
    starts = _starts_in_base(items, subj, out, base) if base is not None else None
    stored = 0
    if starts is None:
        base = prefix
        kept: list[dict] = []  # sequences of this part
        where = np.zeros(len(items), dtype=np.int64)  # index into kept
        by_subject: dict[int, list[int]] = {}
        for i in sorted(range(len(items)), key=lambda i: -len(items[i]["tokens"])):  # longest first
            cands = by_subject.setdefault(int(subj[i]), [])
            for c in cands:
                if _is_prefix(items[i], kept[c], 0, len(kept[c]["tokens"])):
                    where[i] = c
                    break
            else:
                where[i] = len(kept)
                cands.append(len(kept))
                kept.append(items[i])
        _pack_items(kept, prefix, out)
        starts, stored = out[f"{prefix}/offsets"][where], int(out[f"{prefix}/offsets"][-1])
    out[f"{prefix}/base"] = np.array(base)
    out[f"{prefix}/start"] = starts
    out[f"{prefix}/length"] = np.array([len(it["tokens"]) for it in items], dtype=np.int32)
    out[f"{prefix}/input_subject_id"] = subj
    return stored


def pack_finetune(ds, prefix: str, out: dict, base: str | None = None, keep_times: bool = True) -> dict:
    """Finetuning datapoints of one split: unique inputs (as prefixes, ``_pack_prefixes``) + per-datapoint (item,
    task, label and, with ``keep_times``, prediction time)."""
    items, index, item_of = [], {}, np.zeros(len(ds), dtype=np.int32)
    for i in range(len(ds)):
        it = ds[i]
        key = (int(ds.rows[i]), len(it["tokens"]))
        j = index.get(key)
        if j is None:
            j = index[key] = len(items)
            items.append(it)
        else:  # same patient, same cut length: the input must be identical
            ref = items[j]
            if not all(np.array_equal(np.asarray(ref[k]), np.asarray(it[k])) for k, _ in KEYS):
                raise AssertionError(f"datapoint {i}: inputs with the same (patient, length) differ")
        item_of[i] = j
    stored = _pack_prefixes(items, prefix, out, base)
    out[f"{prefix}/item"] = item_of
    out[f"{prefix}/task"] = ds.task.astype(np.uint8)
    lab = ds.label
    if not np.isin(lab, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    out[f"{prefix}/label"] = lab.astype(np.uint8)
    if not np.array_equal(out[f"{prefix}/input_subject_id"][item_of], ds.subject):
        raise AssertionError(f"{prefix}: a datapoint's subject differs from its input's")
    if keep_times:  # read only where predictions are written (held-out); 2 MiB of the 60k pack's train part
        out[f"{prefix}/prediction_time"] = ds.pred_us.astype(np.int64)
    return {"datapoints": len(ds), "inputs": len(items), "tokens": int(out[f"{prefix}/length"].sum()),
            "tokens_stored": stored, "base": str(out[f"{prefix}/base"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/bench/ehr_quality_20000", help="benchmark run folder with meds/ and cache/")
    p.add_argument("--out", default="gpu_pack/ehr")
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=512)
    args = p.parse_args(argv)
    from linmix.apps.ehr import sequences as S
    from linmix.apps.ehr.data import EHRDataModule

    t0 = time.perf_counter()
    run = Path(args.run)
    kw = dict(meds_dir=str(run / "meds"), cache_dir=str(run / "cache"), vocab_size=args.vocab_size,
              max_len=args.max_len, batch_size=128)
    ft = EHRDataModule(objective="finetune", **kw)
    ft.prepare_data()  # a no-op when the cache exists
    ft.setup("fit")
    pre = EHRDataModule(objective="pretrain", **kw)
    pre.setup("fit")
    out: dict[str, np.ndarray] = {}
    counts = {}
    pre_ds = pre.datasets["train"]
    _pack_items([pre_ds[i] for i in range(len(pre_ds))], "pre_train", out)
    counts["pre_train"] = {"inputs": len(pre_ds), "tokens": int(out["pre_train/offsets"][-1])}
    for split in ("train", "tuning", "held_out"):
        counts[f"ft_{split}"] = pack_finetune(ft.datasets[split], f"ft_{split}", out,
                                              base="pre_train" if split == "train" else None,
                                              keep_times=split == "held_out")
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "ehr_pack.tmp.npz"
    np.savez_compressed(tmp, **out)
    tmp.replace(dest / "ehr_pack.npz")
    meta = {"source_run": str(run), "input_hash": S.input_hash(run / "meds", ft.settings),
            "task_names": ft.task_names, "task_token_ids": [int(x) for x in ft.task_token_ids],
            "vocab_size": args.vocab_size, "max_len": args.max_len, "n_token_types": S.N_TOKEN_TYPES,
            "vocab_json": ft.vocab.to_json(), "counts": counts}
    (dest / "meta.json").write_text(json.dumps(meta, indent=1))
    size = sum(f.stat().st_size for f in dest.iterdir())
    print(json.dumps(counts, indent=1))
    print(f"packed {dest}: {size / 2**20:.2f} MiB in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
