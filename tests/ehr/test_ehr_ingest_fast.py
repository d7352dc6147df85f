"""The vectorised ingestion fast path (msgspec block decoder, fast time parser, hashed first-distinct) gives exactly
what the general path gives, also on mixed, mutated, blank, malformed and truncated input and at odd block sizes."""

from __future__ import annotations

import copy
import gzip
import random

import orjson
import polars as pl
import pytest

import linmix.apps.ehr.ingest.fast as fast_mod
import linmix.apps.ehr.ingest.read as read_mod
from linmix.apps.ehr.ingest.read import E_SCHEMA, P_SCHEMA, V_SCHEMA, read_file
from linmix.apps.ehr.ingest.resolve import first_distinct, parse_time, parse_times
from linmix.apps.ehr.synth import synthesize

MUTATIONS = [
    lambda d: d.pop("encounter", None), lambda d: d.pop("id", None), lambda d: d.update(id=7),
    lambda d: d.update(id=""), lambda d: d.update(subject={"reference": "Patient/a/b"}),
    lambda d: d.update(subject="Patient/x"), lambda d: d.update(subject={"reference": "Patient/"}),
    lambda d: d.update(subject={"reference": "urn:uuid:abc"}), lambda d: d.update(subject={"reference": "Group/g"}),
    lambda d: d.update(encounter={"reference": "Encounter?x=1"}), lambda d: d.update(encounter=None),
    lambda d: d.update(effectiveDateTime=""), lambda d: d.update(effectiveDateTime=5),
    lambda d: d.update(valueQuantity={"value": True, "unit": "mg"}), lambda d: d.update(valueQuantity={"value": "1"}),
    lambda d: d.update(valueQuantity={"value": 2, "code": "mg"}), lambda d: d.update(valueQuantity={"value": 2}),
    lambda d: d.update(valueQuantity={"value": 2, "unit": ""}), lambda d: d.update(valueQuantity={"value": 3, "unit": "x"}),
    lambda d: d.pop("performedDateTime", None), lambda d: d.update(performedPeriod={"end": "2020"}),
    lambda d: d.update(performedDateTime=""), lambda d: d.update(authoredOn=None),
    lambda d: d.update(code={"coding": [{"system": "http://other", "code": "1"}, {"code": "2"}]}),
    lambda d: d.update(code={"coding": []}), lambda d: d.update(code={"coding": [{"system": "x"}], "text": "t"}),
    lambda d: d.update(medicationCodeableConcept={"text": "x"}), lambda d: d.pop("medicationCodeableConcept", None),
    lambda d: d.update(onsetDateTime=None), lambda d: d.update(onsetPeriod={"start": "2019-01-01"}),
    lambda d: d.pop("recordedDate", None), lambda d: d.update(gender=""), lambda d: d.update(gender=3),
    lambda d: d.update(deceasedBoolean=True), lambda d: d.update(deceasedBoolean="yes"),
    lambda d: d.update(birthDate="1970"), lambda d: d.update({"class": [{"coding": [{"code": "IMP"}]}]}),
    lambda d: d.update({"class": {"code": ""}}), lambda d: d.update(period={"start": None}),
    lambda d: d.update(period={"start": "2020-01-01T00:00:00Z", "end": 3}), lambda d: d.update(resourceType="Claim"),
    lambda d: d.update(resourceType="Bundle"), lambda d: d.update(extra={"deep": [1, {"x": None}]}),
]


def _frames(res) -> tuple:
    cat = [pl.concat(fs) if fs else pl.DataFrame(schema=s) for fs, s in ((res.p, P_SCHEMA), (res.e, E_SCHEMA),
                                                                         (res.v, V_SCHEMA))]
    rej = [(j["line"], j["entry"], j["rtype"], j["reason"]) for j in res.rejects]
    return cat, dict(res.read), dict(res.ignored), rej, res.file_errors


def _general(monkeypatch, *args):
    with monkeypatch.context() as m:
        m.setattr(read_mod, "decode_block", lambda *a, **k: None)
        return _frames(read_file(*args))


def _assert_same(a, b):
    for x, y in zip(a[0], b[0], strict=True):
        assert dict(x.schema) == dict(y.schema)
        assert x.equals(y), (x, y)
    assert a[1:] == b[1:]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return synthesize(40, tmp_path_factory.mktemp("fast") / "nd", fmt="ndjson", seed=11)


@pytest.mark.parametrize("block,piece", [(None, None), (3000, None), (None, 1500)])
def test_fast_blocks_equal_general_path_on_mutated_files(cohort, tmp_path, monkeypatch, block, piece):
    rng = random.Random(1)
    if block:
        monkeypatch.setattr(read_mod, "BLOCK_BYTES", block)  # many blocks, lines longer than a block
        monkeypatch.setattr(read_mod, "SUB_LINES", 3)
    if piece:  # blocks decoded in many pieces of one or two lines (and lines longer than a piece)
        monkeypatch.setattr(fast_mod, "PIECE_BYTES", piece)
    for f in sorted(cohort.glob("*.ndjson")):
        lines = f.read_bytes().splitlines()
        n_fast = 0
        clean = tmp_path / f.name
        clean.write_bytes(b"\n".join(lines[:300]) + b"\n")
        a = _frames(read_file(0, clean))
        _assert_same(a, _general(monkeypatch, 0, clean))
        n_fast += sum(fr.height for fr in a[0])
        assert n_fast > 0
        out = []
        for raw in lines[:300]:
            if rng.random() < 0.08:
                d = orjson.loads(raw)
                rng.choice(MUTATIONS)(d)
                raw = orjson.dumps(d)
            out.append(raw)
            r = rng.random()
            if r < 0.01:
                out.append(b"   ")
            elif r < 0.02:
                out.append(b'{"resourceType": "Observation", "id": ')
            elif r < 0.03:
                out.append(b"")
        mixed = tmp_path / ("m_" + f.name)
        mixed.write_bytes(b"\n".join(out))  # no newline after the last line
        _assert_same(_frames(read_file(1, mixed)), _general(monkeypatch, 1, mixed))


@pytest.mark.parametrize("piece", [None, 2000])
def test_fast_path_is_taken_and_counts_every_line(cohort, monkeypatch, piece):
    if piece:
        monkeypatch.setattr(fast_mod, "PIECE_BYTES", piece)
    f = cohort / "Observation.ndjson"
    n = len(f.read_bytes().splitlines())
    calls = []
    real = fast_mod.DECODERS["Observation"]

    class Counting:  # counts decode_lines calls (pieces)
        def decode_lines(self, buf):
            calls.append(len(buf))
            return real.decode_lines(buf)

    monkeypatch.setitem(fast_mod.DECODERS, "Observation", Counting())
    res = read_file(0, f)
    assert res.read == {"Observation": n} and not res.rejects
    assert sum(fr.height for fr in res.v) == n and pl.concat(res.v)["line"].to_list() == list(range(1, n + 1))
    assert sum(calls) == f.stat().st_size and (len(calls) > 10 if piece else len(calls) >= 1)


def test_truncated_gzip_small_blocks_keep_every_whole_line(cohort, tmp_path, monkeypatch):
    data = (cohort / "Observation.ndjson").read_bytes()
    gz = gzip.compress(data, mtime=0)
    f = tmp_path / "t.ndjson.gz"
    f.write_bytes(gz[: len(gz) // 2])
    base = _frames(read_file(0, f))
    monkeypatch.setattr(read_mod, "BLOCK_BYTES", 5000)
    small = _frames(read_file(0, f))
    _assert_same(base, small)
    _assert_same(base, _general(monkeypatch, 0, f))
    assert len(base[4]) == 1 and base[4][0]["reason"].startswith("truncated gzip")
    assert 0 < base[0][2].height < len(data.splitlines())


def test_parse_times_equals_the_general_parser():
    vals = ["2020-01-02T03:04:05+05:30", "2020-01-02T03:04:05-08:00", "2020-01-02T03:04:05Z", "2020", "2020-05",
            "2020-05-06", "2020-01-02T03:04:05", "2020-01-02T03:04:05.123+01:00", " 2020-01-02T03:04:05+01:00 ",
            "garbage", None, "", "2020-02-30T00:00:00+00:00", "2020-01-02T25:04:05+00:00",
            "2020-01-02T03:04:05+24:00", "2020-01-02T03:04:05+23:59", "2020-01-02T03:04:60+00:00",
            "2020-13-02T03:04:05+00:00", "2020-01-02 03:04:05+00:00", "2020-01-02T03:04:05+0100",
            "2020-01-02T03:04:05.5Z", "2020-01-02t03:04:05Z", "2020-01-02T03:04:05-00:00", "1900-01-01T00:00:00+14:00",
            "2020-01-02T03:04:05+0\u0665:30", "2020-01-02T03:04:05+05:3\u0660", "2020-01-02T03:04:05+5:300",
            "2020-01-02T03:04:05+05-30", "2020-01-02T03:04:05+05:30 ", "2020-01-02T03:04:05z",
            "2020-02-30", "2020-02-29", "2021-02-29", "2020-1-01", " 2020-01-01", "2020-01-0\u0665", "+2020-01-01",
            "20200-01-01", "2020-01-01T", "0000-01-01"]
    rng = random.Random(0)
    vals += [f"{rng.randint(1900, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
             f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{rng.choice(['Z', '+05:30', '-08:00', '+00:00'])}"
             for _ in range(500)]
    vals += [f"{rng.randint(1900, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}" for _ in range(200)]
    s = pl.Series("t", vals, dtype=pl.String)
    want = s.to_frame().select(parse_time("t")).to_series()
    got = parse_times(s)
    assert got.dtype == want.dtype and got.equals(want)
    assert got[9] is None and got[10] is None and got[11] is None and got[0] is not None  # garbage, None, ""


def test_first_distinct_equals_polars():
    rng = random.Random(0)
    df = pl.DataFrame({"rtype": [rng.choice("ABC") for _ in range(3000)],
                       "rid": [rng.choice([None, *map(str, range(400))]) for _ in range(3000)]})
    for cols in (["rid"], ["rtype", "rid"]):
        key = pl.struct(cols) if len(cols) > 1 else pl.col(cols[0])
        assert first_distinct(df, cols).to_list() == df.select(key.is_first_distinct()).to_series().to_list()
    assert first_distinct(df.head(0), ["rid"]).to_list() == []
    uniq = pl.DataFrame({"rid": [str(i) for i in range(100)]})
    assert first_distinct(uniq, ["rid"]).all()


def test_mutations_cover_both_paths(cohort):
    """Sanity of the mutation list: on an Observation, some mutated records still take the fast path, many do not."""
    from linmix.apps.ehr.ingest.fast import block_type, decode_block

    d = orjson.loads((cohort / "Observation.ndjson").read_bytes().splitlines()[0])
    fast = 0
    for mut in MUTATIONS:
        m = copy.deepcopy(d)
        mut(m)
        b = orjson.dumps(m)
        t = block_type(b)
        fast += (t is not None and decode_block(b, t, 0, 1, 1) is not None)
    assert 5 <= fast <= len(MUTATIONS) - 10  # both paths are exercised
