"""Data schemas for click logs: which columns are label, categorical, numeric and sequence fields.

A schema is a small YAML file (or one of the built-ins for Criteo, Avazu, libfm and the synthetic log)::

    format: csv            # csv | tsv | parquet | libfm
    separator: ","
    has_header: true
    label: click
    group: user            # optional column for gAUC
    min_count: 2           # default for every field
    fields:
      - {name: user, type: categorical}
      - {name: price, type: numeric, numeric: bucket}        # floor(ln(x)^2) for x > 2, else int(x)
      - {name: age, type: numeric, numeric: normalize}       # (x - mean) / std fitted on train
      - {name: history, type: sequence, splitter: "^", max_len: 10}
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml

from linmix.shared.errors import UserError

FieldType = Literal["categorical", "numeric", "sequence"]


class SchemaError(UserError, ValueError):
    """A schema that cannot describe the data (unknown keys, missing columns, bad types)."""


@dataclass
class FieldSpec:
    """One input field.

    Args:
        name: field name (the encoded feature name).
        type: ``categorical`` (token -> index), ``numeric`` (bucketed or normalised) or ``sequence``
            (multi-valued, split by ``splitter``, padded to ``max_len`` and pooled in the model).
        column: source column (default: ``name``).
        min_count: tokens seen fewer times in train become OOV (None = the schema default).
        numeric: ``bucket`` = floor(ln(x)^2) for x > 2 else int(x) (Criteo winners, FuxiCTR
            ``convert_to_bucket``), then a vocabulary; ``normalize`` = (x - mean) / std times one learned vector.
        negative: what bucketing does with x < 0: ``reject`` the row, ``token`` (keep int(x) as FuxiCTR does)
            or ``missing``.
        splitter: separator of sequence tokens.
        max_len: sequence length after truncation / padding.
        preprocess: optional derived value: ``hour_of_day`` / ``weekday`` from Avazu's YYMMDDHH ``hour``.
    """

    name: str
    type: FieldType = "categorical"
    column: Optional[str] = None
    min_count: Optional[int] = None
    numeric: Literal["bucket", "normalize"] = "bucket"
    negative: Literal["reject", "token", "missing"] = "reject"
    splitter: str = "^"
    max_len: int = 8
    preprocess: Optional[Literal["hour_of_day", "weekday"]] = None

    @property
    def source(self) -> str:
        return self.column or self.name


@dataclass
class DataSchema:
    """Layout of one click log.

    Args:
        fields: the input fields, in model order (scalar fields first is not required).
        label: label column; values must be 0/1 (libfm also accepts -1/+1).
        format: ``csv``, ``tsv``, ``parquet`` or ``libfm`` (``label idx:val ...``, field = position).
        separator: delimiter for csv/tsv.
        has_header: whether the first line names the columns.
        columns: column names when there is no header (required then, except for libfm).
        group: optional group column (e.g. user id) for gAUC.
        min_count: default vocabulary threshold.
        passthrough: extra numeric columns copied to the encoded cache (e.g. ``p_true`` of synthetic data).
        quote: quote character of csv/tsv (RFC 4180: quoted fields may hold the separator, newlines and doubled
            quotes); None reads every quote character as text.
        encoding: text encoding of csv/tsv/libfm files (a UTF-8 byte-order mark is stripped); a byte that is not
            valid in it stops the read with the line named, never a replacement character.
    """

    fields: list[FieldSpec] = field(default_factory=list)
    label: str = "label"
    format: Literal["csv", "tsv", "parquet", "libfm"] = "csv"
    separator: str = ","
    has_header: bool = True
    columns: Optional[list[str]] = None
    group: Optional[str] = None
    min_count: int = 1
    passthrough: list[str] = field(default_factory=list)
    quote: Optional[str] = '"'
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        if not self.fields:
            raise SchemaError("schema has no fields")
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"schema names fields more than once: {dup}")
        for f in self.fields:
            if f.type not in ("categorical", "numeric", "sequence"):
                raise SchemaError(f"field {f.name!r}: unknown type {f.type!r} (categorical|numeric|sequence)")
            if f.numeric not in ("bucket", "normalize"):
                raise SchemaError(f"field {f.name!r}: numeric must be bucket|normalize, got {f.numeric!r}")
            if f.type == "sequence" and f.max_len < 1:
                raise SchemaError(f"field {f.name!r}: max_len must be >= 1")
        if self.format not in ("csv", "tsv", "parquet", "libfm"):
            raise SchemaError(f"unknown format {self.format!r} (csv|tsv|parquet|libfm)")
        if self.format == "tsv":
            self.separator = "\t"
        if self.quote is not None and (len(self.quote) != 1 or self.quote == self.separator):
            raise SchemaError(f"quote must be one character other than the separator, got {self.quote!r}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise SchemaError(f"unknown encoding {self.encoding!r} (e.g. utf-8, latin-1, cp1252)") from None

    @property
    def scalar_fields(self) -> list[FieldSpec]:
        """Fields encoded as one (index, value) pair per row: categorical and numeric."""
        return [f for f in self.fields if f.type != "sequence"]

    @property
    def sequence_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.type == "sequence"]

    def min_count_of(self, f: FieldSpec) -> int:
        return self.min_count if f.min_count is None else f.min_count

    def required_columns(self) -> list[str]:
        cols = [self.label] + [f.source for f in self.fields] + list(self.passthrough)
        if self.group:
            cols.append(self.group)
        return list(dict.fromkeys(cols))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSchema:
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SchemaError(f"unknown schema keys {unknown}; known: {sorted(known)}")
        fkeys = set(FieldSpec.__dataclass_fields__)
        fields = []
        for i, fd in enumerate(d.pop("fields", []) or []):
            if isinstance(fd, str):
                fd = {"name": fd}
            bad = sorted(set(fd) - fkeys)
            if bad:
                raise SchemaError(f"field #{i} ({fd.get('name')!r}): unknown keys {bad}; known: {sorted(fkeys)}")
            if "name" not in fd:
                raise SchemaError(f"field #{i} has no name")
            fields.append(FieldSpec(**fd))
        return cls(fields=fields, **d)


def load_schema(path: str | Path) -> DataSchema:
    """Read a YAML schema file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise SchemaError(f"schema file {p} does not exist")
    d = yaml.safe_load(p.read_text())
    if not isinstance(d, dict):
        raise SchemaError(f"schema file {p} must hold a mapping, got {type(d).__name__}")
    return DataSchema.from_dict(d)


def criteo_schema(min_count: int = 10) -> DataSchema:
    """Criteo DAC: tab-separated ``label, I1..I13 (integers, bucketed), C1..C26 (hashed)``, empty = missing."""
    ints = [FieldSpec(f"I{i}", "numeric") for i in range(1, 14)]
    cats = [FieldSpec(f"C{i}") for i in range(1, 27)]
    cols = ["label"] + [f.name for f in ints + cats]
    return DataSchema(fields=ints + cats, label="label", format="tsv", has_header=False, columns=cols,
                      min_count=min_count)


AVAZU_COLUMNS = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
                 "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21")


def avazu_schema(min_count: int = 2) -> DataSchema:
    """Avazu CSV with header; ``hour`` (YYMMDDHH) becomes hour-of-day and weekday; ``id`` is dropped."""
    cols = AVAZU_COLUMNS.split(",")
    fields = [FieldSpec("hour_of_day", column="hour", preprocess="hour_of_day"),
              FieldSpec("weekday", column="hour", preprocess="weekday")]
    fields += [FieldSpec(c) for c in cols[3:]]
    return DataSchema(fields=fields, label="click", format="csv", has_header=True, min_count=min_count)


def libfm_schema(n_fields: int, min_count: int = 1) -> DataSchema:
    """libfm/libsvm ``label idx:val ...`` with exactly ``n_fields`` pairs per line (field = position)."""
    return DataSchema(fields=[FieldSpec(f"f{i}") for i in range(n_fields)], label="label", format="libfm",
                      has_header=False, min_count=min_count)
