"""Pure-numpy featurizer for serving an exported CTR model: raw rows -> the ONNX inputs ``idx``, ``val`` (``seq``).

This file imports only numpy and the standard library: ``linmix-ctr export`` copies it into the exported folder as
``featurize.py`` beside ``vocab.json`` and ``model.onnx``, so a serving process needs ``onnxruntime`` + ``numpy`` and the
folder, nothing of linmix. It applies the encoder's fitted vocabularies exactly as
:meth:`linmix.apps.ctr.encoder.FeatureEncoder.encode_serving` does (tests/ctr/test_ctr_export_formats.py compares the
two): local index layout ``0 = PAD, 1 = OOV, 2 = MISSING, 3.. = tokens``; a bucketed numeric value x becomes the token
``floor(ln(x)^2)`` for x > 2 else ``int(x)``; a normalised numeric one becomes index 3 with value ``(x - mean) / std``.

Usage::

    feats = Featurizer("export/vocab.json")(rows)  # rows: a list of dicts {column: raw value (str / number / None)}
    prob = session.run(None, feats)[0]             # onnxruntime.InferenceSession on export/model.onnx
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

PAD, OOV, MISSING, FIRST = 0, 1, 2, 3


def _empty(x: Any) -> bool:
    return x is None or (isinstance(x, str) and x.strip() == "")


def _text(x: Any) -> str:
    return x if isinstance(x, str) else str(x)


class Featurizer:
    """Raw rows -> ``{"idx": (B, F) int64, "val": (B, F) float32[, "seq": (B, S, L) int64]}`` from ``vocab.json``.

    Raises ``ValueError`` for a missing column, a non-numeric / NaN / inf value in a numeric field, or a negative value
    where the field's log bucketing rejects it (the rows the training encoder also rejects)."""

    def __init__(self, vocab_path: str) -> None:
        with open(vocab_path, encoding="utf-8") as fh:
            d = json.load(fh)
        self.fields = [f for f in d["schema"]["fields"] if f.get("type", "categorical") != "sequence"]
        self.seq_fields = [f for f in d["schema"]["fields"] if f.get("type", "categorical") == "sequence"]
        self.vocabs = d["vocabs"]
        self.seq_len = int(d.get("seq_len", 0))
        self.lookup = {name: {t: FIRST + i for i, t in enumerate(v["tokens"])} for name, v in self.vocabs.items()}

    def _numeric(self, f: Mapping[str, Any], raw: Any, row: int) -> Optional[float]:
        if _empty(raw):
            return None
        try:
            x = float(str(raw).strip())
        except ValueError:
            raise ValueError(f"field {f['name']}: non-numeric value {raw!r} at row {row}") from None
        if not math.isfinite(x):
            raise ValueError(f"field {f['name']}: NaN/inf value at row {row}")
        if f.get("numeric", "bucket") == "bucket" and x < 0:
            negative = f.get("negative", "reject")
            if negative == "reject":
                raise ValueError(f"field {f['name']}: negative value {x} at row {row} (log bucketing needs >= 0)")
            if negative == "missing":
                return None
        return x

    def _categorical(self, f: Mapping[str, Any], raw: Any) -> Optional[str]:
        if _empty(raw):
            return None
        s = _text(raw)
        if f.get("preprocess") == "hour_of_day":
            s = s[6:8]
        elif f.get("preprocess") == "weekday":
            try:
                s = str(datetime.datetime.strptime(s[:6], "%y%m%d").isoweekday())
            except ValueError:
                return None
        return s or None

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
        n = len(rows)
        idx = np.zeros((n, len(self.fields)), np.int64)
        val = np.ones((n, len(self.fields)), np.float32)
        for j, f in enumerate(self.fields):
            col, v, table = f.get("column") or f["name"], self.vocabs[f["name"]], self.lookup[f["name"]]
            for i, row in enumerate(rows):
                if col not in row:
                    raise ValueError(f"row {i} lacks column {col!r}")
                if f.get("type") == "numeric":
                    x = self._numeric(f, row[col], i)
                    if v["type"] == "normalize":
                        idx[i, j], val[i, j] = (MISSING, 1.0) if x is None else (FIRST, (x - v["mean"]) / v["std"])
                        continue
                    tok = None if x is None else str(int(math.floor(math.log(x) ** 2)) if x > 2 else int(x))
                else:
                    tok = self._categorical(f, row[col])
                idx[i, j] = MISSING if tok is None else table.get(tok, OOV)
        out = {"idx": idx, "val": val}
        if self.seq_fields:
            seq = np.zeros((n, len(self.seq_fields), self.seq_len), np.int64)
            for j, f in enumerate(self.seq_fields):
                col, table = f.get("column") or f["name"], self.lookup[f["name"]]
                for i, row in enumerate(rows):
                    raw = row.get(col)
                    toks: List[str] = [] if _empty(raw) else [t for t in _text(raw).split(f.get("splitter", "^")) if t]
                    ids = [table.get(t, OOV) for t in toks][: int(f.get("max_len", 8))] or [MISSING]
                    seq[i, j, : len(ids)] = ids
            out["seq"] = seq
        return out
