"""Code dialects: one small cohort written from the MEDS spec in the project's own dialect, MIMIC-IV MEDS style and
meds-etl OMOP style gives the same sequences and labels up to code renaming; derived visits; bad dialects."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from linmix.apps.ehr import labels as L
from linmix.apps.ehr import sequences as S
from linmix.apps.ehr.dialect import PRESETS, resolve_dialect
from linmix.apps.ehr.dialect_apply import annotate
from linmix.shared.errors import UserError

T0 = datetime(2020, 1, 1, 8)
LABS = (("2345-7", "mg/dL", 105.0, 25.0), ("718-7", "g/dL", 13.5, 1.6))
DRUGS = ("860975", "314076")
PROCS = ("112798008", "40701008")
CONDS = (("E11.9", "44054006"), ("I10", "59621000"), ("J06.9", "54150009"), ("E11.65", "44054006"))
SPLIT_OF = ("train",) * 6 + ("tuning", "held_out")


def cohort(n: int = 24, seed: int = 0) -> list[dict]:
    """Dialect-free patients: birth, gender, visits (class, start, end, events), conditions, death."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        visits, conds = [], []
        t = T0 + timedelta(days=rng.randrange(300), hours=rng.randrange(10))
        for _ in range(1 + rng.randrange(4)):
            length = timedelta(hours=rng.choice([2, 30, 200]))
            evs = []
            for _ in range(1 + rng.randrange(4)):
                u = rng.random()  # some events at the visit start: the class token must still lead
                et = t + timedelta(seconds=int(length.total_seconds() * u)) if u > 0.2 else t
                kind = rng.choice(("lab", "drug", "proc"))
                if kind == "lab":
                    code, unit, mu, sd = rng.choice(LABS)
                    evs.append(("lab", code, et, round(rng.gauss(mu, sd), 1), unit))
                else:
                    evs.append((kind, rng.choice(DRUGS if kind == "drug" else PROCS), et, None, None))
            visits.append((rng.choice(("AMB", "EMER", "IMP")), t, t + length, evs))
            t = t + length + timedelta(days=rng.choice((3, 20, 45, 400)))
        for _ in range(rng.randrange(3)):
            conds.append((rng.choice(CONDS), rng.randrange(len(visits))))
        death = visits[-1][2] + timedelta(days=10) if rng.random() < 0.3 else None
        out.append({"sid": 100 + i, "split": SPLIT_OF[i % len(SPLIT_OF)], "birth": datetime(1950 + i, 3, 1),
                    "gender": rng.choice("FM"), "visits": visits, "conds": conds, "death": death})
    return out


def render(patients: list[dict], dialect: str) -> pl.DataFrame:
    """The cohort as MEDS rows in a dialect (codes and extension columns as each tool writes them)."""
    rows = []

    def add(sid, time, code, value=None, **extra):
        rows.append({"subject_id": sid, "time": time, "code": code, "numeric_value": value, **extra})

    for p in patients:
        sid = p["sid"]
        g = {"own": "GENDER//{}", "mimic": "GENDER//{}", "omop": "Gender/{}"}[dialect].format(p["gender"])
        add(sid, None, g)
        add(sid, p["birth"], "MEDS_BIRTH")
        for j, (cls, start, end, evs) in enumerate(p["visits"]):
            vid = sid * 10 + j
            if dialect == "own":
                add(sid, start, f"ENCOUNTER//{cls}//START", encounter_id=f"e{vid}")
                add(sid, end, f"ENCOUNTER//{cls}//END", encounter_id=f"e{vid}")
            elif dialect == "mimic":
                add(sid, start, f"HOSPITAL_ADMISSION//{cls}", hadm_id=vid)
                add(sid, end, f"HOSPITAL_DISCHARGE//{cls}", hadm_id=vid)
            else:
                add(sid, start, f"Visit/{cls}", visit_id=vid, end=end, table="visit")
            for kind, code, t, value, unit in evs:
                if dialect == "own":
                    prefix = {"lab": "LOINC//", "drug": "RXNORM//", "proc": "SNOMED//"}[kind]
                    add(sid, t, prefix + code, value, encounter_id=f"e{vid}", unit=unit)
                elif dialect == "mimic":
                    name = {"lab": f"LAB//{code}//{unit}", "drug": f"MEDICATION//{code}",
                            "proc": f"PROCEDURE//{code}"}[kind]
                    add(sid, t, name, value, hadm_id=vid)
                else:
                    prefix, table = {"lab": ("LOINC/", "measurement"), "drug": ("RxNorm/", "drug_exposure"),
                                     "proc": ("SNOMED/", "procedure")}[kind]
                    add(sid, t, prefix + code, value, visit_id=vid, unit=unit, table=table)
        for (icd, sct), j in p["conds"]:
            t, vid = p["visits"][j][1] + timedelta(minutes=5), sid * 10 + j
            if dialect == "own":
                add(sid, t, f"ICD10CM//{icd}", encounter_id=f"e{vid}")
            elif dialect == "mimic":
                add(sid, t, f"DIAGNOSIS//ICD//10//{icd.replace('.', '')}", hadm_id=vid)
            else:
                add(sid, t, f"SNOMED/{sct}", visit_id=vid, table="condition")
        if p["death"] is not None:
            add(sid, p["death"], "MEDS_DEATH")
    schema = {"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String, "numeric_value": pl.Float32,
              "encounter_id": pl.String, "unit": pl.String, "hadm_id": pl.Int64, "visit_id": pl.Int64,
              "end": pl.Datetime("us"), "table": pl.String}
    df = pl.DataFrame(rows, schema=schema, infer_schema_length=None)
    keep = {"own": ["encounter_id", "unit"], "mimic": ["hadm_id"], "omop": ["visit_id", "unit", "end", "table"]}
    df = df.select("subject_id", "time", "code", "numeric_value", *keep[dialect])
    return df.sort("subject_id", "time", nulls_last=False, maintain_order=True)


def write(root: Path, patients: list[dict], dialect: str) -> Path:
    """A MEDS folder: split folders (own, mimic) or meds-etl's flat ``data/data_0.parquet`` (omop)."""
    df = render(patients, dialect)
    splits = pl.DataFrame({"subject_id": [p["sid"] for p in patients], "split": [p["split"] for p in patients]})
    if dialect == "omop":
        (root / "data").mkdir(parents=True)
        df.write_parquet(root / "data" / "data_0.parquet")
    else:
        for s in ("train", "tuning", "held_out"):
            ids = splits.filter(pl.col("split") == s)["subject_id"]
            (root / "data" / s).mkdir(parents=True)
            df.filter(pl.col("subject_id").is_in(ids.implode())).write_parquet(root / "data" / s / "0.parquet")
    (root / "metadata").mkdir(parents=True)
    splits.write_parquet(root / "metadata" / "subject_splits.parquet")
    return root


RENAME = {"own": (("ENCOUNTER//", "class:"), ("LOINC//", "lab:"), ("RXNORM//", "med:"), ("SNOMED//", "proc:")),
          "mimic": (("HOSPITAL_ADMISSION//", "class:"), ("LAB//", "lab:"), ("MEDICATION//", "med:"),
                    ("PROCEDURE//", "proc:")),
          "omop": (("VISIT/", "class:"), ("LOINC/", "lab:"), ("RXNORM/", "med:"), ("SNOMED/", "proc:"))}


def canonical(token: str, dialect: str) -> str:
    for prefix, name in RENAME[dialect]:
        if token.startswith(prefix):
            return name + token[len(prefix):]
    assert re.fullmatch(r"\[[A-Z_0-9]+\]", token), f"{dialect}: unexpected token {token}"
    return token


def read(root: Path, dialect: str):
    settings = S.SequenceSettings(vocab_size=256, n_conditions=3, dialect=PRESETS[dialect])
    frame = S.load_meds(root)
    seqs, vocab, stats = S.build_sequences(frame, settings)
    ann = annotate(frame, PRESETS[dialect])[0]
    groups = L.top_condition_groups(ann, 3)
    return seqs, vocab, stats, groups, L.make_labels(ann, condition_groups=groups)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    base, patients = tmp_path_factory.mktemp("dialects"), cohort()
    return {d: read(write(base / d, patients, d), d) for d in ("own", "mimic", "omop")}


def test_presets_give_the_same_sequences_and_labels_up_to_code_renaming(three):
    own = three["own"]
    assert own[0].height == 24 and own[3] == ["E11", "I10", "J06"]
    for d in ("mimic", "omop"):
        seqs, vocab, stats, groups, labels = three[d]
        assert seqs.height == own[0].height and groups == own[3]
        assert sorted(canonical(t, d) for t in vocab.tokens) == sorted(canonical(t, "own") for t in own[1].tokens)
        for a, b in zip(own[0].iter_rows(named=True), seqs.iter_rows(named=True), strict=True):
            assert a["subject_id"] == b["subject_id"] and a["split"] == b["split"]
            assert [canonical(own[1].tokens[i], "own") for i in a["tokens"]] == \
                [canonical(vocab.tokens[i], d) for i in b["tokens"]]
            for k in ("token_type", "age", "time", "visit_order", "visit_segment", "abs_time"):
                assert a[k] == b[k], (d, k)
        assert set(labels) == set(own[4])
        for task, df in own[4].items():
            assert df.equals(labels[task]), (d, task)
        assert stats.events_tokenised == own[2].events_tokenised and stats.subjects_without_visits == 0
    # conditions are labels, never tokens; the labels have both classes
    assert not any(t.startswith(("ICD10CM", "DIAGNOSIS")) for d in three for t in three[d][1].tokens)
    assert 0 < own[4]["cond_E11"]["boolean_value"].sum() < 24 and own[4]["mortality"]["boolean_value"].any()


def test_stats_account_for_every_row(three):
    for d, (_, _, stats, _, _) in three.items():
        rows = stats.dialect_rows
        assert sum(rows["by_rule"].values()) == rows["rows"] and rows["dialect"] == d
        assert rows["not_tokens"]["condition: a label source, not an input (conditions: labels)"] > 0
        assert rows["typed_rows"]["lab"] > 0 and rows["missing_columns"] == []
    assert three["mimic"][2].dialect_rows["not_tokens"]["no time (a static row)"] == 24  # GENDER//: demographic


def test_unknown_codes_are_other_tokens_unless_dropped_and_conditions_can_be_inputs(tmp_path):
    df = render(cohort(8, seed=1), "mimic").with_columns(split=pl.lit("train"))
    extra = df.filter(pl.col("code").str.starts_with("HOSPITAL_ADMISSION")).with_columns(code=pl.lit("ED_OUT"))
    df = pl.concat([df, extra]).sort("subject_id", "time", nulls_last=False, maintain_order=True)
    seqs, vocab, stats = S.build_sequences(df, S.SequenceSettings(vocab_size=256, dialect=PRESETS["mimic"]))
    types = seqs["token_type"].explode()
    assert (types == S.TYPE_OTHER).sum() == extra.height and "ED_OUT" in vocab.tokens
    drop = resolve_dialect({"preset": "mimic", "unknown": "drop", "conditions": "both"})
    seqs2, vocab2, stats2 = S.build_sequences(df, S.SequenceSettings(vocab_size=256, dialect=drop))
    assert "ED_OUT" not in vocab2.tokens and (seqs2["token_type"].explode() == S.TYPE_COND).sum() > 0
    assert stats2.dialect_rows["not_tokens"]["no rule matched (the dialect drops unknown codes)"] == extra.height
    ann = annotate(df, drop)[0]
    assert ann.filter(pl.col("kind") == S.TYPE_COND)["condition_group"].is_not_null().all()


def test_visits_derived_from_gaps_or_admission_codes():
    t = datetime(2021, 5, 1, 9)
    rows = [(1, t, "LAB//1//mg"), (1, t + timedelta(hours=3), "MEDICATION//a"),
            (1, t + timedelta(hours=40), "PROCEDURE//x"),  # > 24 h gap: a new visit
            (1, t + timedelta(hours=41), "ADMIT//ER"), (1, t + timedelta(hours=41, minutes=5), "LAB//1//mg"),
            (2, None, "GENDER//F")]
    df = pl.DataFrame({"subject_id": [r[0] for r in rows], "time": [r[1] for r in rows],
                       "code": [r[2] for r in rows], "numeric_value": [1.0, None, None, None, 2.0, None],
                       "split": ["train"] * 6}, schema_overrides={"numeric_value": pl.Float32})
    d = resolve_dialect({"preset": "mimic", "visits": {"mode": "gaps", "start": "ADMIT//*", "gap_hours": 24}})
    seqs, vocab, stats = S.build_sequences(df, S.SequenceSettings(vocab_size=64, n_conditions=0, dialect=d))
    names = [vocab.tokens[i] for i in seqs["tokens"][0]]
    assert names == ["[CLS]", "[VS]", "LAB//1//mg//Q1", "MEDICATION//A", "[VE]", "[REG]", "[W_0]", "[VS]",
                     "PROCEDURE//X", "[VE]", "[REG]", "[W_0]", "[VS]", "ADMIT//ER", "LAB//1//mg//Q5", "[VE]",
                     "[REG]"]
    assert stats.subjects_left_out == {"no row matched the dialect's visit rule visits derived from gaps over "
                                       "24 h or codes `ADMIT//*`": 1}
    enc = L.encounters(annotate(df, d)[0])
    assert enc.height == 3 and enc["rank"].to_list() == [2, 1, 0]


def test_a_dialect_that_matches_nothing_names_its_visit_rule(tmp_path):
    root = write(tmp_path / "m", cohort(6), "mimic")
    with pytest.raises(S.MedsError, match=r"0 of 6 subjects have a visit: no code matched the dialect's visit "
                                          r"rule `ENCOUNTER//\*//START`; see --data.dialect"):
        S.build_sequences(S.load_meds(root), S.SequenceSettings(vocab_size=64))
    from linmix.apps.ehr.data import EHRDataModule

    with pytest.raises(S.MedsError, match=r"0 of 6 subjects have a visit: no code matched .*`ENCOUNTER//\*//START`"):
        EHRDataModule(meds_dir=str(root), cache_dir=str(tmp_path / "c")).prepare_data()
    dm = EHRDataModule(meds_dir=str(root), cache_dir=str(tmp_path / "c"), dialect="mimic", n_conditions=1)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataloader()) > 0
    with pytest.raises(S.MedsError, match=r"split 'tuning' is empty: 0 subjects of split 'tuning' have a visit under "
                                          r"the dialect's visit rule `HOSPITAL_ADMISSION//\*`"):
        dm.val_dataloader()
    inputs_only = {"preset": "mimic", "conditions": "inputs"}
    dm = EHRDataModule(meds_dir=str(root), cache_dir=str(tmp_path / "c"), dialect=inputs_only, tasks=["cond_E11"])
    dm.prepare_data()
    with pytest.raises(S.MedsError, match="no condition task in this cohort: no row matched the condition rules"):
        dm.setup("fit")


def test_flat_shards_without_splits_get_a_hash_split(tmp_path):
    root = write(tmp_path / "o", cohort(30), "omop")
    (root / "metadata" / "subject_splits.parquet").unlink()
    a, b = S.load_meds(root), S.load_meds(root)
    assert a["split"].equals(b["split"]) and set(a["split"].unique()) <= {"train", "tuning", "held_out"}
    assert a.filter(pl.col("split") == "train")["subject_id"].n_unique() >= 15


@pytest.mark.parametrize("spec, msg", [
    ("mimc", r"unknown --data.dialect 'mimc'; presets: \['mimic', 'omop', 'own'\]"),
    ({"preset": "omop", "visit": {"mode": "gaps"}}, r"unknown key\(s\) \['visit'\]"),
    ({"preset": "omop", "visits": {"gap": 3}}, r"visits: unknown key\(s\) \['gap'\]"),
    ({"rules": [{"match": "X*", "typ": "lab"}]}, r"rules\[0\]: unknown key\(s\) \['typ'\]"),
    ({"rules": [{"match": "X*", "type": "labs"}]}, r"rules\[0\].type 'labs' is not one of"),
    ({"preset": "own", "conditions": "maybe"}, r"conditions 'maybe' is not one of"),
    ({"preset": "own", "unit": "units"}, r"unit 'units' is not 'code' or 'column:<name>'"),
    ({"visits": {"mode": "codes", "start": None}}, r"needs visits.start"),
    ({"rules": [{"match": "re:(", "type": "lab"}]}, r"bad regex"),
])
def test_bad_dialect_mappings_name_the_bad_key(spec, msg):
    with pytest.raises(UserError, match=msg):
        resolve_dialect(spec)


def test_presets_and_yaml_mapping_through_the_data_module(tmp_path):
    from linmix.apps.ehr.data import EHRDataModule

    assert EHRDataModule(dialect="mimic").dialect is PRESETS["mimic"]
    assert EHRDataModule().settings.dialect is None  # own: cache keys as before
    dm = EHRDataModule(dialect={"preset": "omop", "extra_rules": [{"match": "NOTE/*", "type": "drop"}]})
    assert dm.dialect.rules[0].match == "NOTE/*" and dm.dialect.rules[1:] == PRESETS["omop"].rules
    with pytest.raises(UserError, match=r"unknown key\(s\) \['bogus'\]"):
        EHRDataModule(dialect={"preset": "omop", "bogus": 1})


def test_command_line_and_yaml_set_the_dialect(tmp_path, monkeypatch):
    from linmix.apps.ehr.cli import EHRCLI
    from linmix.apps.ehr.data import EHRDataModule
    from linmix.apps.ehr.lit_module import EHRLitModule

    monkeypatch.chdir(tmp_path)
    tiny = str(Path(__file__).resolve().parents[2] / "configs" / "ehr" / "tiny.yaml")

    def cli(*args):
        return EHRCLI(EHRLitModule, EHRDataModule, args=["-c", tiny, *args], run=False, app="ehr")

    assert cli("--data.dialect", "mimic").datamodule.dialect is PRESETS["mimic"]
    inline = cli("--data.dialect", "{preset: omop, unknown: drop}").datamodule.dialect
    assert inline.name == "omop+overrides" and inline.unknown == "drop" and inline.rules == PRESETS["omop"].rules
    (tmp_path / "d.yaml").write_text("data:\n  dialect:\n    preset: omop\n    visits: {mode: gaps, gap_hours: 12}\n")
    dm = cli("-c", str(tmp_path / "d.yaml")).datamodule
    assert dm.dialect.visits.mode == "gaps" and dm.dialect.visits.gap_hours == 12 and dm.dialect.unit == "column:unit"
    (tmp_path / "bad.yaml").write_text("data:\n  dialect:\n    preset: omop\n    rule: []\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) \['rule'\]"):
        cli("-c", str(tmp_path / "bad.yaml"))


def test_the_vocabulary_carries_its_dialect_to_scoring():
    df = render(cohort(8, seed=3), "mimic").with_columns(split=pl.lit("train"))
    seqs, vocab, _ = S.build_sequences(df, S.SequenceSettings(vocab_size=128, dialect=PRESETS["mimic"]))
    back = S.Vocabulary.from_json(vocab.to_json())
    assert back.dialect == PRESETS["mimic"].to_dict()
    again, _, _ = S.build_sequences(df, S.SequenceSettings(vocab_size=128), vocab=back)  # as `linmix-ehr score`
    assert again.equals(seqs)
    _, own_vocab, _ = S.build_sequences(render(cohort(8, seed=3), "own").with_columns(split=pl.lit("train")),
                                        S.SequenceSettings(vocab_size=128))
    assert own_vocab.dialect is None and "dialect" not in own_vocab.to_json()


def test_visits_pair_in_order_without_an_id_column():
    df = render(cohort(10, seed=4), "mimic").with_columns(split=pl.lit("train"))
    settings = S.SequenceSettings(vocab_size=128, dialect=PRESETS["mimic"])
    with_ids, _, _ = S.build_sequences(df, settings)
    without, _, stats = S.build_sequences(df.drop("hadm_id"), settings)
    assert without.equals(with_ids) and stats.dialect_rows["missing_columns"] == ["hadm_id"]


def test_an_empty_task_names_its_rule(tmp_path):
    patients = cohort(16, seed=5)
    for p in patients:  # outpatient visits of zero length: no LOS datapoint
        p["visits"] = [(c, s, s, [(k, code, s, v, u) for k, code, _, v, u in evs]) for c, s, _, evs in p["visits"]]
    root = write(tmp_path / "o", patients, "omop")
    from linmix.apps.ehr.data import EHRDataModule

    dm = EHRDataModule(meds_dir=str(root), cache_dir=str(tmp_path / "c"), dialect="omop", tasks=["los"],
                       n_conditions=0)
    dm.prepare_data()
    dm.setup("fit")
    with pytest.raises(S.MedsError, match=r"split 'train' is empty: 12 subjects with a visit but no datapoint of "
                                          r"tasks \['los'\] \(los needs a last visit still open 24 h"):
        dm.train_dataloader()


@pytest.mark.parametrize("dialect", ["mimic", "omop"])
def test_shuffled_rows_and_many_shards_give_the_same_sequences(tmp_path, dialect):
    patients = cohort(10, seed=6)
    seqs = {}
    for name, shuffle in (("sorted", False), ("shuffled", True)):
        df = render(patients, dialect)
        root = tmp_path / name / "data"
        root.mkdir(parents=True)
        if shuffle:
            df = df.sample(fraction=1.0, shuffle=True, seed=1)
            for i in range(3):  # subjects spread over three shards
                df.filter(pl.col("subject_id") % 3 == i).write_parquet(root / f"shard_{i}.parquet")
        else:
            df.write_parquet(root / "all.parquet")
        frame = S.load_meds(root.parent).with_columns(split=pl.lit("train"))
        seqs[name], _, _ = S.build_sequences(frame, S.SequenceSettings(vocab_size=128, dialect=PRESETS[dialect]))
    assert seqs["sorted"].height == 10 and seqs["sorted"].equals(seqs["shuffled"])
