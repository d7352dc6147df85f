"""Feature encoder: vocabularies fitted on the training split, then every split encoded to (index, value) pairs.

Per scalar field (categorical or numeric) the local index layout is ``0 = PAD``, ``1 = OOV`` (rare or unseen
at training time), ``2 = MISSING`` (empty value, its own embedding), ``3.. = tokens`` sorted by (-count, token)
with ``count >= min_count`` (train only, as FuxiCTR does). A bucketed numeric value x becomes the token
``floor(ln(x)^2)`` for x > 2 else ``int(x)``; a normalised numeric field has one token whose value is
``(x - mean) / std``. Sequence fields are split, encoded with the same layout and padded with ``0`` to
``max_len``; the model pools the non-pad tokens.

Encoded rows: ``idx`` (N, F) int64 local indices, ``val`` (N, F) float32 multipliers (1 for categorical),
``seq`` (N, S, L) int64, ``label`` (N,) float32. All encoding is polars expressions on a ``LazyFrame``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import polars as pl

from linmix.apps.ctr.readers import categorical_expr
from linmix.apps.ctr.schema import DataSchema, FieldSpec

PAD, OOV, MISSING, FIRST = 0, 1, 2, 3


@dataclass
class FieldVocab:
    """Fitted state of one field: tokens (index FIRST + position), or mean/std for a normalised numeric."""

    name: str
    type: str
    tokens: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    has_value: bool = False

    @property
    def size(self) -> int:
        return FIRST + len(self.tokens)


def merge_counts(parts: list[dict[str, pl.DataFrame]]) -> dict[str, pl.DataFrame]:
    """Token counts of several parts of a split summed per field (exact: integer sums, then thresholded once)."""
    names = {k for p in parts for k in p}
    return {k: pl.concat([p[k] for p in parts if k in p]).group_by("token").agg(pl.col("len").sum()) for k in names}


def bucket_expr(x: pl.Expr) -> pl.Expr:
    """floor(ln(x)^2) for x > 2, else int(x) (FuxiCTR ``convert_to_bucket``), as a string token."""
    return (pl.when(x > 2).then((x.log() ** 2).floor()).otherwise(x).cast(pl.Int64).cast(pl.String))


class FeatureEncoder:
    """Fit on validated training rows (see ``readers``), then encode any split or raw serving rows.

    Args:
        schema: the data schema (fields, label, group, passthrough columns).
    """

    def __init__(self, schema: DataSchema) -> None:
        self.schema = schema
        self.vocabs: dict[str, FieldVocab] = {}

    # ------------------------------------------------------------------ fitting
    def _token(self, f: FieldSpec) -> pl.Expr:
        if f.type == "numeric":
            return bucket_expr(pl.col(f.name))
        return pl.col(f.name)

    def fit(self, train: pl.LazyFrame) -> FeatureEncoder:
        """Fit vocabularies / scalers on the (good rows of the) training split only."""
        return self.fit_counts(self.count_tokens(train), self.normalize_stats(train),
                               set(train.collect_schema().names()))

    def count_tokens(self, train: pl.LazyFrame) -> dict[str, pl.DataFrame]:
        """Per token field: ``token``, ``len`` (Int64) over ``train``; counts of several parts of one split add up
        (:func:`merge_counts`) to the counts of the whole."""
        sc = self.schema
        counts: dict[str, pl.DataFrame] = {}
        for f in sc.scalar_fields:  # one streaming group-by per field: memory ~ vocabulary, not rows
            if f.type == "numeric" and f.numeric == "normalize":
                continue
            counts[f.name] = (train.select(self._token(f).alias("token")).drop_nulls("token")
                              .group_by("token").len().collect(engine="streaming"))
        for f in sc.sequence_fields:
            counts[f.name] = (train.select(pl.col(f.name).str.split(f.splitter).explode().alias("token"))
                              .filter(pl.col("token").str.len_bytes() > 0).group_by("token").len()
                              .collect(engine="streaming"))
        return {k: v.with_columns(pl.col("len").cast(pl.Int64)) for k, v in counts.items()}

    def normalize_stats(self, train: pl.LazyFrame) -> dict:
        norm = [f for f in self.schema.scalar_fields if f.type == "numeric" and f.numeric == "normalize"]
        if not norm:
            return {}
        row = train.select([e for f in norm for e in (pl.col(f.name).mean().alias(f"{f.name}__m"),
                                                      pl.col(f.name).std().alias(f"{f.name}__s"))]
                           ).collect(engine="streaming")
        return row.row(0, named=True)

    def fit_counts(self, counts: dict[str, pl.DataFrame], stats: dict, val_cols: set[str]) -> FeatureEncoder:
        """Vocabularies from token counts (kept when ``count >= min_count``, sorted by (-count, token)) and the
        normalised fields' mean / std."""
        sc = self.schema
        self.vocabs = {}
        for f in sc.fields:
            if f.type == "numeric" and f.numeric == "normalize":
                m, s = stats[f"{f.name}__m"], stats[f"{f.name}__s"]
                m = 0.0 if m is None or not math.isfinite(m) else float(m)
                s = 1.0 if s is None or not math.isfinite(s) or s <= 0 else float(s)
                self.vocabs[f.name] = FieldVocab(f.name, "normalize", ["__VALUE__"], [0], m, s, True)
                continue
            c = counts.get(f.name)
            toks, cnts = [], []
            if c is not None and c.height:
                c = c.filter(pl.col("len") >= sc.min_count_of(f)).sort(["len", "token"], descending=[True, False])
                toks, cnts = c["token"].to_list(), c["len"].to_list()
            kind = "sequence" if f.type == "sequence" else ("bucket" if f.type == "numeric" else "categorical")
            self.vocabs[f.name] = FieldVocab(f.name, kind, toks, cnts, has_value=f"{f.name}__val" in val_cols)
        return self

    # ------------------------------------------------------------------ sizes
    @property
    def field_sizes(self) -> list[int]:
        return [self.vocabs[f.name].size for f in self.schema.scalar_fields]

    @property
    def seq_sizes(self) -> list[int]:
        return [self.vocabs[f.name].size for f in self.schema.sequence_fields]

    @property
    def seq_len(self) -> int:
        return max([f.max_len for f in self.schema.sequence_fields], default=0)

    # ------------------------------------------------------------------ encoding
    def _lookup(self, s: pl.Expr, v: FieldVocab) -> pl.Expr:
        if not v.tokens:
            return pl.lit(OOV, dtype=pl.Int32)
        return s.replace_strict(v.tokens, list(range(FIRST, FIRST + len(v.tokens))), default=OOV,
                                return_dtype=pl.Int32)

    def encode_exprs(self) -> list[pl.Expr]:
        """Polars expressions producing ``idx_<f>`` (Int32), ``val_<f>`` (Float32, only where not constant 1)
        and ``seq_<f>`` (Array[Int32, L]) from validated columns."""
        out: list[pl.Expr] = []
        for f in self.schema.scalar_fields:
            v = self.vocabs[f.name]
            x = pl.col(f.name)
            if v.type == "normalize":
                out.append(pl.when(x.is_null()).then(MISSING).otherwise(FIRST).cast(pl.Int32).alias(f"idx_{f.name}"))
                out.append(pl.when(x.is_null()).then(1.0).otherwise((x - v.mean) / v.std).cast(pl.Float32)
                           .alias(f"val_{f.name}"))
                continue
            tok = self._token(f)
            out.append(pl.when(tok.is_null()).then(pl.lit(MISSING, pl.Int32)).otherwise(self._lookup(tok, v))
                       .alias(f"idx_{f.name}"))
            if v.has_value:
                out.append(pl.col(f"{f.name}__val").fill_null(1.0).cast(pl.Float32).alias(f"val_{f.name}"))
        L = self.seq_len
        for f in self.schema.sequence_fields:
            v = self.vocabs[f.name]
            toks = pl.col(f.name).str.split(f.splitter).list.eval(
                pl.element().filter(pl.element().str.len_bytes() > 0))
            enc = toks.list.eval(self._lookup(pl.element(), v)).list.head(f.max_len)
            enc = pl.when(enc.list.len().fill_null(0) == 0).then(pl.concat_list([pl.lit(MISSING, pl.Int32)])
                                                                 ).otherwise(enc)
            padded = pl.concat_list([enc] + [pl.lit(PAD, pl.Int32)] * L).list.head(L).list.to_array(L)
            out.append(padded.alias(f"seq_{f.name}"))
        return out

    def transform(self, rows: pl.LazyFrame) -> pl.LazyFrame:
        """Encode validated good rows: ``label`` (Float32), idx/val/seq columns, ``group`` and passthrough."""
        sc = self.schema
        cols = [pl.col(sc.label).cast(pl.Float32).alias("label"), *self.encode_exprs()]
        if sc.group:
            cols.append((pl.col("_group").hash(seed=0) // 2).cast(pl.Int64).alias("group"))
        cols += [pl.col(c).cast(pl.Float32) for c in sc.passthrough]
        return rows.select(cols)

    def arrays(self, df: pl.DataFrame) -> dict[str, np.ndarray]:
        """Encoded frame -> ``idx`` (N, F) int64, ``val`` (N, F) float32, ``seq`` (N, S, L) int64, ``label``..."""
        sc = self.schema
        n = df.height
        idx = np.stack([df[f"idx_{f.name}"].to_numpy() for f in sc.scalar_fields], 1).astype(np.int64) \
            if sc.scalar_fields else np.zeros((n, 0), np.int64)
        val = np.ones(idx.shape, np.float32)
        for j, f in enumerate(sc.scalar_fields):
            if f"val_{f.name}" in df.columns:
                val[:, j] = df[f"val_{f.name}"].to_numpy()
        L = self.seq_len
        seq = np.zeros((n, len(sc.sequence_fields), L), np.int64)
        for j, f in enumerate(sc.sequence_fields):
            seq[:, j] = df[f"seq_{f.name}"].to_numpy()
        out = {"idx": idx, "val": val, "seq": seq}
        if "label" in df.columns:
            out["label"] = df["label"].to_numpy().astype(np.float32)
        if "group" in df.columns:
            out["group"] = df["group"].to_numpy()
        for c in sc.passthrough:
            if c in df.columns:
                out[c] = df[c].to_numpy().astype(np.float32)
        return out

    def encode_serving(self, raw: pl.DataFrame) -> dict[str, np.ndarray]:
        """Encode raw rows at serving time (no label needed); NaN/inf/non-numeric inputs raise ``ValueError``."""
        sc = self.schema
        missing = [f.source for f in sc.fields if f.source not in raw.columns]
        if missing:
            raise ValueError(f"serving rows lack column(s) {missing}")
        exprs, problems = [], []
        for f in sc.fields:
            s = pl.col(f.source)
            if f.type == "numeric":
                x = s.cast(pl.Float64, strict=False)
                bad = raw.select(((x.is_nan() | x.is_infinite()) | (x.is_null() & s.is_not_null()
                                  & (s.cast(pl.String).str.len_bytes() > 0))).alias("b"))["b"]
                if bad.any():
                    rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
                    problems.append(f"field {f.name}: NaN/inf or non-numeric value at row(s) {rows}")
                if f.numeric == "bucket" and f.negative == "reject" and raw.select((x < 0).any()).item():
                    problems.append(f"field {f.name}: negative value (log bucketing needs >= 0)")
                if f.numeric == "bucket" and f.negative == "missing":
                    x = pl.when(x < 0).then(None).otherwise(x)
                exprs.append(x.alias(f.name))
            else:
                exprs.append(categorical_expr(f, s.cast(pl.String)).alias(f.name))
        if problems:
            raise ValueError("invalid serving input: " + "; ".join(problems))
        df = raw.lazy().select(exprs).select(self.encode_exprs()).collect()
        return self.arrays(df)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"schema": self.schema.to_dict(), "layout": {"PAD": PAD, "OOV": OOV, "MISSING": MISSING,
                                                           "FIRST": FIRST},
                "field_sizes": self.field_sizes, "seq_sizes": self.seq_sizes, "seq_len": self.seq_len,
                "vocabs": {k: asdict(v) for k, v in self.vocabs.items()}}

    def save(self, path: str | Path) -> Path:
        """Write ``vocab.json`` atomically."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path, schema: Optional[DataSchema] = None) -> FeatureEncoder:
        d = json.loads(Path(path).read_text())
        enc = cls(schema or DataSchema.from_dict(d["schema"]))
        enc.vocabs = {k: FieldVocab(**v) for k, v in d["vocabs"].items()}
        return enc
