"""Real CSV files: RFC 4180 quoting, byte-order marks, encodings, line endings, header and label checks.

Each case writes the bytes another tool would (a spreadsheet export, pandas' ``to_csv``, a Latin-1 system) and checks
the value linmix reads, the line number of every reject, and that read = written + rejected.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from linmix.apps.ctr.delimited import EncodingError
from linmix.apps.ctr.pipeline import encode_dataset
from linmix.apps.ctr.readers import EmptyFileError, scan_source
from linmix.apps.ctr.schema import DataSchema, SchemaError, libfm_schema

SC = {"format": "csv", "label": "y", "fields": ["c", "d"]}


def _read(tmp_path, data: bytes, **schema) -> pl.DataFrame:
    (tmp_path / "a.csv").write_bytes(data)
    return scan_source(tmp_path / "a.csv", DataSchema.from_dict({**SC, **schema})).collect()


def test_quoted_separator_newline_and_doubled_quotes_are_values(tmp_path):
    v = _read(tmp_path, b'y,c,d\n1,"a,b",x\n0,"two\nlines",y\n1,"say ""hi""",z\n0,plain,w\n')
    assert v["_reason"].null_count() == 4
    assert v["c"].to_list() == ["a,b", "two\nlines", 'say "hi"', "plain"]
    assert v["_line"].to_list() == [2, 3, 5, 6]  # a record's first line; the quoted newline moves the next one


def test_pandas_style_quoting_everywhere(tmp_path):
    df = pl.DataFrame({"y": [1, 0], "c": ['x,"q"', "p"], "d": ["1", "2"]})
    df.write_csv(tmp_path / "a.csv", quote_style="always")
    v = scan_source(tmp_path / "a.csv", DataSchema.from_dict(SC)).collect()
    assert v["c"].to_list() == ['x,"q"', "p"] and v["y"].to_list() == [1, 0]


def test_bom_is_stripped_from_the_header(tmp_path):
    v = _read(tmp_path, "\ufeffy,c,d\n1,a,b\n".encode())
    assert v["y"].to_list() == [1] and v["c"].to_list() == ["a"]


def test_crlf_line_endings_and_a_quoted_crlf(tmp_path):
    v = _read(tmp_path, b'y,c,d\r\n1,a,b\r\n0,"in\r\nside",e\r\n')
    assert v["d"].to_list() == ["b", "e"]  # no stray carriage return on the last column
    assert v["c"].to_list() == ["a", "in\r\nside"]  # a quoted line break is kept as written


def test_latin1_declared_is_read_exactly(tmp_path):
    v = _read(tmp_path, "y,c,d\n1,café,b\n".encode("latin-1"), encoding="latin-1")
    assert v["c"].to_list() == ["café"]


def test_latin1_undeclared_stops_with_line_and_byte_not_replacement(tmp_path):
    with pytest.raises(EncodingError, match=r"line 3: byte 0xe9 .* not valid utf-8.*encoding: latin-1"):
        _read(tmp_path, "y,c,d\n1,a,b\n0,café,b\n".encode("latin-1"))


def test_malformed_quoting_is_a_reject_with_its_line(tmp_path):
    v = _read(tmp_path, b'y,c,d\n1,"ab"c,x\n0,ok,y\n')
    assert v["_reason"][0].startswith("malformed quoting") and v["_line"][0] == 2
    assert v["_reason"][1] is None and v["c"][1] == "ok"


def test_quote_left_open_at_end_of_file_is_one_rejected_record(tmp_path):
    v = _read(tmp_path, b'y,c,d\n1,a,b\n0,"open,x\n1,b,c\n')
    assert v.height == 2 and v["_reason"][0] is None
    assert v["_line"][1] == 3 and v["_reason"][1] is not None
    assert v["_raw"][1] == '0,"open,x\n1,b,c'  # the raw text is kept whole in the reject


def test_quote_none_reads_quotes_as_text(tmp_path):
    v = _read(tmp_path, b'y,c,d\n1,"a,b",x\n0,"q,r\n', quote=None)
    assert v["_reason"][0].startswith("wrong column count")  # 4 parts: the quotes protect nothing
    assert v["c"][1] == '"q' and v["_line"][1] == 3  # kept as text; no record runs on past its line


def test_duplicate_header_names_are_an_error(tmp_path):
    with pytest.raises(SchemaError, match=r"names column\(s\) \['c'\] more than once"):
        _read(tmp_path, b"y,c,c,d\n1,a,b,c\n")


def test_bad_quote_and_encoding_in_schema(tmp_path):
    with pytest.raises(SchemaError, match="quote must be one character"):
        DataSchema.from_dict({**SC, "quote": ","})
    with pytest.raises(SchemaError, match="unknown encoding"):
        DataSchema.from_dict({**SC, "encoding": "klingon"})


def test_parquet_label_null_non_binary_rejected_boolean_accepted(tmp_path):
    pl.DataFrame({"y": [1, None, 2, 0], "c": ["a", "b", "c", "d"], "d": ["1", "2", "3", "4"]}).write_parquet(
        tmp_path / "t.parquet")
    sc = DataSchema.from_dict({**SC, "format": "parquet"})
    rep = encode_dataset({"train": tmp_path / "t.parquet"}, sc, tmp_path / "e")
    r = rep["splits"]["train"]
    assert (r["read"], r["written"], r["rejected"]) == (4, 2, 2)
    rej = pl.read_csv(tmp_path / "e" / "rejects_train.csv")
    assert dict(zip(rej["line"], rej["reason"])) == {2: "label is missing (null)", 3: "label '2' is not 0/1"}
    pl.DataFrame({"y": [True, False], "c": ["a", "b"], "d": ["1", "2"]}).write_parquet(tmp_path / "b.parquet")
    rep = encode_dataset({"train": tmp_path / "b.parquet"}, sc, tmp_path / "eb")
    assert rep["splits"]["train"]["written"] == 2
    assert pl.read_parquet(tmp_path / "eb" / "train.parquet")["label"].to_list() == [1, 0]


def test_parquet_list_column_is_a_schema_error(tmp_path):
    pl.DataFrame({"y": [1], "c": [["a", "b"]], "d": ["1"]}).write_parquet(tmp_path / "l.parquet")
    with pytest.raises(SchemaError, match=r"hold lists or structs"):
        encode_dataset({"train": tmp_path / "l.parquet"}, DataSchema.from_dict({**SC, "format": "parquet"}),
                       tmp_path / "e")


def test_every_row_rejected_fails_and_keeps_the_rejects(tmp_path):
    (tmp_path / "a.csv").write_text("y,c,d\n2,a,b\n5,c,d\n")
    with pytest.raises(EmptyFileError, match=r"all 2 rows .* were rejected \(2 x label"):
        encode_dataset({"train": tmp_path / "a.csv"}, DataSchema.from_dict(SC), tmp_path / "e")
    assert pl.read_csv(tmp_path / "e" / "rejects_train.csv").height == 2


def test_console_script_reports_user_errors_in_one_line(tmp_path, capsys):
    from linmix.apps.ctr.cli import main

    (tmp_path / "a.csv").write_bytes("y,c,d\n1,café,b\n".encode("latin-1"))
    (tmp_path / "s.yaml").write_text("format: csv\nlabel: y\nfields: [c, d]\n")
    rc = main(["encode", "--format", "schema", "--schema", str(tmp_path / "s.yaml"), "--train",
               str(tmp_path / "a.csv"), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "byte 0xe9" in err and "Traceback" not in err
    rc = main(["encode", "--format", "criteo", "--train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "Traceback" not in err


def test_single_class_split_has_no_auc():
    """One class in a split: AUC is undefined (NaN and the reason), never torchmetrics' 0.0."""
    import torch
    from sklearn.metrics import roc_auc_score
    from torchmetrics import MeanMetric
    from torchmetrics.classification import BinaryAUROC

    from linmix.apps.ctr.lit_module import auc_or_nan

    auc, mean = BinaryAUROC(), MeanMetric()
    p = torch.tensor([0.2, 0.7, 0.4])
    for y in (torch.zeros(3), torch.zeros(3)):
        auc.update(p, y.long())
        mean.update(y.double())
    value, why = auc_or_nan(auc, mean, "validation")
    assert torch.isnan(value) and why == "the validation split holds only label 0: AUC is undefined"
    y = torch.tensor([0, 1, 1])
    auc.update(p, y)
    mean.update(y.double())
    value, why = auc_or_nan(auc, mean, "test")
    assert why is None and abs(float(value) - roc_auc_score(y.numpy(), p.numpy())) < 1e-6


def test_fit_refuses_a_single_class_validation_split(tmp_path, capsys):
    from linmix.apps.ctr.cli import main

    (tmp_path / "train.csv").write_text("y,c,d\n" + "".join(f"{i % 2},a{i % 3},b{i % 5}\n" for i in range(40)))
    (tmp_path / "val.csv").write_text("y,c,d\n" + "".join(f"0,a{i % 3},b{i % 5}\n" for i in range(10)))
    (tmp_path / "s.yaml").write_text("format: csv\nlabel: y\nfields: [c, d]\n")
    rc = main(["fit", "--data.format", "schema", "--data.schema_path", str(tmp_path / "s.yaml"),
               "--data.train_path", str(tmp_path / "train.csv"), "--data.val_path", str(tmp_path / "val.csv"),
               "--data.test_path", str(tmp_path / "val.csv"), "--data.cache_dir", str(tmp_path / "cache"),
               "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "holds only label 0 (10 rows): AUC is undefined" in err and "Traceback" not in err


def test_libfm_report_states_the_pair_convention(tmp_path, capsys):
    from linmix.apps.ctr.cli import main

    (tmp_path / "f.libfm").write_text("1 3:1 10:0.5\n0 4:1 11:1\n1 4:1\n")
    rc = main(["encode", "--format", "libfm", "--libfm-fields", "2", "--train", str(tmp_path / "f.libfm"),
               "--out", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert rc == 0 and "positional: the k-th idx:val pair of a line is field k" in out
    rep = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rep["libfm_convention"].startswith("positional") and rep["splits"]["train"]["rejected"] == 1


NUM = {"format": "csv", "label": "y", "fields": ["c", {"name": "x", "type": "numeric"}]}


@pytest.mark.parametrize("row, reason", [
    ("2,a,1", "label '2' is not 0/1"),
    ("yes,a,1", "label 'yes' is not 0/1"),
    (",a,1", "label '' is not 0/1"),
    ("1,a", "wrong column count: expected 3 comma-separated columns, found 2"),
    ("1,a,1,9", "wrong column count: expected 3 comma-separated columns, found 4"),
    ("1;a;1", "(wrong delimiter?)"),
    ("1,a,abc", "non-numeric text 'abc' in numeric field x"),
    ("1,a,nan", "non-finite value 'nan' in numeric field x"),
    ("1,a,1e400", "non-finite value '1e400' in numeric field x"),
    ("1,a,-3", "negative value -3 in field x"),
    ('1,"a"b,1', "malformed quoting"),
])
def test_bad_csv_rows_are_rejected_with_line_reason_and_raw(tmp_path, row, reason):
    (tmp_path / "a.csv").write_text(f"y,c,x\n1,good,2\n{row}\n0,good,3\n")
    rep = encode_dataset({"train": tmp_path / "a.csv"}, DataSchema.from_dict(NUM), tmp_path / "e")
    r = rep["splits"]["train"]
    assert (r["read"], r["written"], r["rejected"]) == (3, 2, 1)
    rej = pl.read_csv(tmp_path / "e" / "rejects_train.csv")
    assert rej["line"].to_list() == [3] and reason in rej["reason"][0] and rej["raw"][0] == row


@pytest.mark.parametrize("line, reason", [
    ("1 3:1", "expected label + 2 idx:val pairs, found 2 items"),
    ("1 3:1 4:1 5:1", "found 4 items"),
    ("1 3-1 4:1", "malformed pair '3-1'"),
    ("1 3:x 4:1", "value 'x' is not a finite number"),
    ("5 3:1 4:1", "label '5' is not 0/1 (or -1/+1)"),
])
def test_bad_libfm_lines_are_rejected(tmp_path, line, reason):
    (tmp_path / "f.libfm").write_text(f"1 3:1 4:1\n{line}\n-1 3:1 4:0.5\n")
    rep = encode_dataset({"train": tmp_path / "f.libfm"}, libfm_schema(2), tmp_path / "e")
    assert rep["splits"]["train"]["rejected"] == 1 and rep["splits"]["train"]["written"] == 2
    rej = pl.read_csv(tmp_path / "e" / "rejects_train.csv")
    assert rej["line"].to_list() == [2] and reason in rej["reason"][0]


def test_seed_sets_the_training_order(monkeypatch):
    """``--seed_everything`` changes the batch order as well as the initialisation; one seed gives one order."""
    import pytorch_lightning as pl_
    import torch

    from linmix.apps.ctr.data import TensorBatches, batch_loader, train_seed

    def order(seed: int) -> list[int]:
        monkeypatch.setenv("PL_GLOBAL_SEED", str(seed))
        ds = TensorBatches({"idx": torch.arange(64).view(64, 1), "label": torch.zeros(64)})
        return [int(b["idx"][0, 0]) for b in batch_loader(ds, 8, shuffle=True, seed=train_seed())]

    assert order(1) == order(1) and order(1) != order(2)
    pl_.seed_everything(7)
    assert train_seed() == 7
