"""CTR feature pipeline: readers, vocabularies, bucketing, caching, and every bad-input case the pipeline handles."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import polars as pl
import pytest

from linmix.apps.ctr.encoder import FIRST, MISSING, OOV, FeatureEncoder
from linmix.apps.ctr.pipeline import encode_dataset
from linmix.apps.ctr.readers import EmptyFileError, scan_source
from linmix.apps.ctr.schema import (
    DataSchema,
    SchemaError,
    avazu_schema,
    criteo_schema,
    libfm_schema,
    load_schema,
)


def criteo_line(rng: random.Random, label: str | None = None, ints=None, cats=None) -> str:
    ints = ints if ints is not None else [str(rng.randint(0, 50)) if rng.random() > 0.2 else "" for _ in range(13)]
    cats = cats if cats is not None else [f"{rng.randint(0, 5):08x}" if rng.random() > 0.1 else "" for _ in range(26)]
    return "\t".join([label if label is not None else str(rng.randint(0, 1))] + ints + cats)


@pytest.fixture()
def criteo_files(tmp_path):
    rng = random.Random(0)
    train = [criteo_line(rng) for _ in range(120)]
    good = [criteo_line(rng) for _ in range(30)]
    bad = {
        "label": criteo_line(rng, label="2"),
        "text": criteo_line(rng, ints=["1", "2", "abc"] + ["3"] * 10),
        "negative": criteo_line(rng, ints=["1", "-5"] + ["3"] * 11),
        "count": "\t".join(criteo_line(rng).split("\t")[:-3]),
        "delim": criteo_line(rng).replace("\t", ","),
        "nan": criteo_line(rng, ints=["nan"] + ["3"] * 12),
    }
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(good + list(bad.values())) + "\n")
    return tmp_path, bad


def test_criteo_rejects_have_line_and_reason_and_reconcile(criteo_files):
    d, bad = criteo_files
    rep = encode_dataset({"train": d / "train.txt", "val": d / "val.txt"}, criteo_schema(min_count=1), d / "enc")
    v = rep["splits"]["val"]
    assert (v["read"], v["written"], v["rejected"]) == (36, 30, 6)
    assert v["read"] == v["written"] + v["rejected"]
    rej = pl.read_csv(d / "enc" / "rejects_val.csv")
    by_line = dict(zip(rej["line"].to_list(), rej["reason"].to_list()))
    assert set(by_line) == set(range(31, 37))  # the six bad lines, 1-based
    assert by_line[31] == "label '2' is not 0/1"
    assert by_line[32] == "non-numeric text 'abc' in numeric field I3"
    assert by_line[33] == "negative value -5 in field I2 (log bucketing needs >= 0)"
    assert by_line[34].startswith("wrong column count: expected 40 tab-separated columns, found 37")
    assert "wrong delimiter?" in by_line[35]
    assert by_line[36] == "non-finite value 'nan' in numeric field I1"
    assert rej["raw"][0] == bad["label"]  # the raw record is kept, nothing lost
    assert sum(v["rejects_by_reason"].values()) == 6
    assert pl.read_parquet(d / "enc" / "val.parquet").height == 30


def test_negative_policy_token_keeps_fuxictr_behaviour(tmp_path):
    sc = DataSchema.from_dict({"format": "csv", "label": "y", "fields": [
        {"name": "x", "type": "numeric", "negative": "token"}, {"name": "z", "type": "numeric",
                                                               "negative": "missing"}]})
    (tmp_path / "a.csv").write_text("y,x,z\n1,-3,-3\n0,5,5\n")
    v = scan_source(tmp_path / "a.csv", sc).collect()
    assert v["_reason"].null_count() == 2
    assert v["z"].to_list() == [None, 5.0]


def test_vocab_fitted_on_train_only_with_min_count_oov_and_missing(tmp_path):
    (tmp_path / "train.csv").write_text("y,c\n1,a\n0,a\n1,a\n0,b\n1,b\n0,rare\n1,\n")
    (tmp_path / "test.csv").write_text("y,c\n1,a\n0,unseen\n1,rare\n0,\n1,b\n")
    sc = DataSchema.from_dict({"label": "y", "min_count": 2, "fields": ["c"]})
    rep = encode_dataset({"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}, sc, tmp_path / "e")
    enc = FeatureEncoder.load(tmp_path / "e" / "vocab.json")
    assert enc.vocabs["c"].tokens == ["a", "b"]  # sorted by (-count, token); 'rare' below min_count
    assert enc.field_sizes == [FIRST + 2]
    idx = pl.read_parquet(tmp_path / "e" / "test.parquet")["idx_c"].to_list()
    assert idx == [FIRST, OOV, OOV, MISSING, FIRST + 1]
    assert rep["splits"]["test"]["oov"]["c"] == 2  # unseen + rare, counted
    assert rep["splits"]["test"]["missing"]["c"] == 1


def test_log_bucketing_and_normalisation(tmp_path):
    vals = [0, 1, 2, 3, 10, 100, 1000]
    rows = "\n".join(f"1,{v},{v}" for v in vals)
    (tmp_path / "t.csv").write_text("y,b,n\n" + rows + "\n0,,\n")
    sc = DataSchema.from_dict({"label": "y", "fields": [{"name": "b", "type": "numeric"},
                                                        {"name": "n", "type": "numeric", "numeric": "normalize"}]})
    rep = encode_dataset({"train": tmp_path / "t.csv"}, sc, tmp_path / "e")
    enc = FeatureEncoder.load(tmp_path / "e" / "vocab.json")
    expect = {str(v if v <= 2 else math.floor(math.log(v) ** 2)) for v in vals}
    assert set(enc.vocabs["b"].tokens) == expect  # floor(ln(x)^2) for x > 2, else x
    a = enc.arrays(pl.read_parquet(tmp_path / "e" / "train.parquet"))
    mean, std = np.mean(vals), np.std(vals, ddof=1)
    np.testing.assert_allclose(a["val"][:7, 1], (np.array(vals) - mean) / std, rtol=1e-5)
    assert a["idx"][7].tolist() == [MISSING, MISSING] and a["val"][7, 1] == 1.0
    assert rep["splits"]["train"]["missing"] == {"b": 1, "n": 1}


def test_cache_is_reused_and_invalidated(criteo_files):
    d, _ = criteo_files
    src = {"train": d / "train.txt"}
    encode_dataset(src, criteo_schema(min_count=1), d / "enc")
    t = (d / "enc" / "train.parquet").stat().st_mtime_ns
    encode_dataset(src, criteo_schema(min_count=1), d / "enc")
    assert (d / "enc" / "train.parquet").stat().st_mtime_ns == t  # cached: not rewritten
    encode_dataset(src, criteo_schema(min_count=3), d / "enc")
    assert (d / "enc" / "train.parquet").stat().st_mtime_ns != t  # schema changed: re-encoded


def test_avazu_hour_features_and_libfm(tmp_path):
    cols = avazu_schema().fields
    header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category," \
             "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
    row = ",".join(["1", "0", "14102113"] + ["x"] * 21)
    (tmp_path / "a.csv").write_text(header + "\n" + row + "\n" + row.replace("14102113", "1410211") + "\n")
    v = scan_source(tmp_path / "a.csv", avazu_schema()).collect()
    assert v["hour_of_day"][0] == "13" and v["weekday"][0] == "2"  # 2014-10-21 was a Tuesday
    assert "is not YYMMDDHH" in v["_reason"][1]
    assert len(cols) == 23
    (tmp_path / "f.libfm").write_text("1 3:1 10:0.5\n-1 4:1 11:1\n2 4:1 11:1\n1 4:1\n0 4 11:1\n")
    v = scan_source(tmp_path / "f.libfm", libfm_schema(2)).collect()
    assert v["label"].to_list()[:2] == [1, 0]
    assert v["f1__val"][0] == 0.5
    reasons = v["_reason"].to_list()
    assert reasons[:2] == [None, None]
    assert "label '2'" in reasons[2] and "wrong column count" in reasons[3] and "malformed pair" in reasons[4]


def test_schema_csv_and_parquet_with_sequence_field(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "format: csv\nlabel: clk\ngroup: user\nfields:\n  - user\n  - {name: hist, type: sequence, max_len: 3}\n")
    sc = load_schema(tmp_path / "s.yaml")
    (tmp_path / "t.csv").write_text("clk,user,hist\n1,u1,a^b\n0,u2,b^c^d^e\n1,u1,\n")
    rep = encode_dataset({"train": tmp_path / "t.csv"}, sc, tmp_path / "e")
    enc = FeatureEncoder.load(tmp_path / "e" / "vocab.json")
    a = enc.arrays(pl.read_parquet(tmp_path / "e" / "train.parquet"))
    assert a["seq"].shape == (3, 1, 3)
    assert (a["seq"][0, 0, 2], a["seq"][2, 0].tolist()) == (0, [MISSING, 0, 0])  # padded; empty = missing
    assert a["group"][0] == a["group"][2] != a["group"][1]
    assert rep["seq_sizes"] == [FIRST + 5]
    pl.read_csv(tmp_path / "t.csv").write_parquet(tmp_path / "t.parquet")
    sc_pq = DataSchema.from_dict(dict(sc.to_dict(), format="parquet"))
    rep2 = encode_dataset({"train": tmp_path / "t.parquet"}, sc_pq, tmp_path / "e2")
    assert rep2["splits"]["train"]["written"] == 3


def test_empty_files_and_missing_schema_columns(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(EmptyFileError, match="empty"):
        encode_dataset({"train": tmp_path / "empty.txt"}, criteo_schema(), tmp_path / "e")
    (tmp_path / "hdr.csv").write_text("y,c\n")
    with pytest.raises(EmptyFileError, match="no data rows"):
        encode_dataset({"train": tmp_path / "hdr.csv"}, DataSchema.from_dict({"label": "y", "fields": ["c"]}),
                       tmp_path / "e")
    (tmp_path / "t.csv").write_text("y,c\n1,a\n")
    with pytest.raises(SchemaError, match=r"\['price'\] not found"):
        scan_source(tmp_path / "t.csv", DataSchema.from_dict({"label": "y", "fields": ["c", "price"]}))
    with pytest.raises(SchemaError, match="unknown keys"):
        DataSchema.from_dict({"label": "y", "fields": [{"name": "c", "kind": "x"}]})
    (tmp_path / "t.tsv").write_text("y\tc\n1\ta\n")
    with pytest.raises(SchemaError, match="separator"):
        scan_source(tmp_path / "t.tsv", DataSchema.from_dict({"label": "y", "fields": ["c"]}))


def test_serving_rejects_nan_and_inf(criteo_files):
    d, _ = criteo_files
    encode_dataset({"train": d / "train.txt"}, criteo_schema(min_count=1), d / "enc")
    enc = FeatureEncoder.load(d / "enc" / "vocab.json")
    raw = {f"I{i}": [1.0, 2.0] for i in range(1, 14)} | {f"C{i}": ["00000001", None] for i in range(1, 27)}
    ok = enc.encode_serving(pl.DataFrame(raw))
    assert ok["idx"].shape == (2, 39) and ok["idx"][1, 13] == MISSING
    for bad in (float("nan"), float("inf")):
        r = dict(raw, I4=[1.0, bad])
        with pytest.raises(ValueError, match=r"field I4: NaN/inf or non-numeric value at row\(s\) \[1\]"):
            enc.encode_serving(pl.DataFrame(r))
    json.loads((d / "enc" / "report.json").read_text())


def test_new_file_encoded_with_fitted_vocab_for_predict(tmp_path):
    (tmp_path / "train.csv").write_text("y,c\n1,a\n0,b\n")
    (tmp_path / "new.csv").write_text("y,c\n1,b\n0,zzz\nx,a\n")
    sc = DataSchema.from_dict({"label": "y", "fields": ["c"]})
    encode_dataset({"train": tmp_path / "train.csv"}, sc, tmp_path / "e")
    enc = FeatureEncoder.load(tmp_path / "e" / "vocab.json")
    rep = encode_dataset({"predict": tmp_path / "new.csv"}, sc, tmp_path / "p", encoder=enc)
    r = rep["splits"]["predict"]
    assert (r["read"], r["written"], r["rejected"], r["oov"]["c"]) == (3, 2, 1, 1)
    assert FeatureEncoder.load(tmp_path / "p" / "vocab.json").vocabs["c"].tokens == ["a", "b"]  # not refitted
    assert pl.read_parquet(tmp_path / "p" / "predict.parquet")["idx_c"].to_list() == [FIRST + 1, OOV]


def test_serving_applies_the_same_preprocess_as_training(tmp_path):
    header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category," \
             "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
    rows = [",".join([str(i), str(i % 2), f"141021{h:02d}"] + ["x"] * 21) for i, h in enumerate((13, 13, 7))]
    (tmp_path / "a.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    encode_dataset({"train": tmp_path / "a.csv"}, avazu_schema(min_count=1), tmp_path / "e")
    enc = FeatureEncoder.load(tmp_path / "e" / "vocab.json")
    raw = pl.read_csv(tmp_path / "a.csv", infer_schema=False)
    served = enc.encode_serving(raw)
    trained = enc.arrays(pl.read_parquet(tmp_path / "e" / "train.parquet"))
    np.testing.assert_array_equal(served["idx"], trained["idx"])
    assert served["idx"][0, 0] == FIRST  # hour 13 is the most frequent hour-of-day token


def test_chunked_encoding_matches_one_chunk_and_keeps_line_numbers(criteo_files, tmp_path):
    d, _ = criteo_files
    src = {"train": d / "train.txt", "val": d / "val.txt"}
    one = encode_dataset(src, criteo_schema(min_count=1), tmp_path / "one", chunk_rows=1_000_000)
    many = encode_dataset(src, criteo_schema(min_count=1), tmp_path / "many", chunk_rows=7)  # 18 + 6 chunks
    for s in ("train", "val"):
        a, b = one["splits"][s], many["splits"][s]
        assert {k: a[k] for k in ("read", "written", "rejected", "oov", "missing", "rejects_by_reason")} == \
               {k: b[k] for k in ("read", "written", "rejected", "oov", "missing", "rejects_by_reason")}
        assert pl.read_parquet(tmp_path / "one" / f"{s}.parquet").equals(pl.read_parquet(tmp_path / "many" / f"{s}.parquet"))
    assert pl.read_csv(tmp_path / "many" / "rejects_val.csv")["line"].to_list() == list(range(31, 37))
    assert FeatureEncoder.load(tmp_path / "one" / "vocab.json").to_dict() == \
           FeatureEncoder.load(tmp_path / "many" / "vocab.json").to_dict()
    assert not (tmp_path / "many" / ".staging").exists()  # staged parts removed
