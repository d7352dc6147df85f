"""Cross-resource checks and MEDS rows, vectorised in polars (after all files are read).

Order of checks per resource (the first that fails is the quarantine reason; a resource is kept or rejected as a
whole, with all its rows):

1. duplicate id of the same type: the first in input order (files sorted, then line/entry) is kept;
2. subject: must be an accepted Patient (``dangling subject reference`` / ``rejected subject``, which names the
   Patient's own reason, also for Patients rejected while reading);
3. encounter (optional): must be an accepted Encounter of the same patient (``dangling`` / ``rejected`` /
   ``inconsistent``);
4. times: FHIR dateTime with offsets -> UTC-naive microseconds. Partial dates take the start of the period
   (``2020`` -> 2020-01-01, ``2020-05`` -> 2020-05-01, a date -> 00:00 UTC; counted as ``partial_dates``); a
   dateTime without offset is read as UTC (counted as ``time_without_timezone``); anything else (``unparseable
   dateTime``) rejects. A Condition without onset/recordedDate takes its encounter's start;
5. death: a resource whose time is after ``deceasedDateTime`` is rejected (``event after death``); an Encounter
   that starts before death but ends after it is kept and counted as ``encounter_end_after_death``.

Accepted resources with suspicious values are kept and counted (:func:`linmix.apps.ehr.ingest.checks.suspicious`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from linmix.apps.ehr.ingest.checks import suspicious
from linmix.apps.ehr.meds import subject_table

KEY = ["src", "line", "entry"]
_TIME_FMT = "%Y-%m-%dT%H:%M:%S%.f%:z"
_DIAG = r"^(ICD10CM|ICD10|ICD9CM)//"  # diagnosis vocabularies: a Condition's code stays as it is


def parse_time(col: str) -> pl.Expr:
    """FHIR date/dateTime/instant string column -> Datetime(us), UTC, naive; null when absent or unparseable.

    The general parser (any layout); :func:`parse_times` runs it only on the values the fast layout misses."""
    s = pl.col(col).str.strip_chars()
    norm = (pl.when(s.str.contains(r"^\d{4}$")).then(s + "-01-01T00:00:00+00:00")
            .when(s.str.contains(r"^\d{4}-\d{2}$")).then(s + "-01T00:00:00+00:00")
            .when(s.str.contains(r"^\d{4}-\d{2}-\d{2}$")).then(s + "T00:00:00+00:00")
            .when(s.str.contains(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$")).then(s + "+00:00")
            .otherwise(s.str.replace(r"Z$", "+00:00")))
    return (norm.str.to_datetime(_TIME_FMT, time_unit="us", strict=False, time_zone="UTC")
            .dt.replace_time_zone(None))


#: the common layout: seconds precision with ``Z`` or a ``+hh:mm`` offset (hours 00-23, minutes 00-59)
_FAST_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
#: a plain date (``birthDate``): midnight UTC
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
#: a dateTime without offset (read as UTC)
_NAIVE_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$"


def _offset_minutes(tail: str) -> int | None:
    """UTC offset in minutes of a time's tail after the seconds (``Z``, ``+05:30``, ``-08:00``); None otherwise."""
    if tail == "Z":
        return 0
    if len(tail) == 6 and tail[0] in "+-" and tail[3] == ":" and all(c in "0123456789" for c in tail[1:3] + tail[4:]):
        m = int(tail[1:3]) * 60 + int(tail[4:])
        return -m if tail[0] == "-" else m
    return None


def parse_times(s: pl.Series) -> pl.Series:
    """:func:`parse_time` for a Series, fast: the common layout is parsed as a naive local time minus its offset
    (no regex chain, no time-zone machinery; the offset is worked out once per distinct tail, there are few), a
    plain date as midnight UTC; the rest (partial dates, fractions, other layouts, garbage) goes through the general
    parser. Same values as ``parse_time`` (tested)."""
    return parse_times_tz(s)[0]


def parse_times_tz(s: pl.Series) -> tuple[pl.Series, pl.Series]:
    """:func:`parse_times` and a Boolean mask of the values parsed from a dateTime without offset (read as UTC; only
    values outside the common layout are tested)."""
    x = pl.col("x")
    df = s.to_frame("x").with_columns(tail=x.str.slice(19))
    tails = df["tail"].drop_nulls().unique().to_list()
    offs = [_offset_minutes(t) for t in tails]
    off = pl.col("tail").replace_strict(tails, offs, default=None, return_dtype=pl.Int32)
    fast = (x.str.slice(0, 19).str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S", strict=False)
            - pl.duration(minutes=off))
    out = df.select(pl.when(x.str.contains(_FAST_RE)).then(fast).alias(s.name)).to_series()
    naive = pl.repeat(False, s.len(), dtype=pl.Boolean, eager=True)
    miss = (out.is_null() & s.is_not_null()).arg_true()
    if miss.len():  # the rest: plain dates, then the general parser
        sub = df[miss]
        date = x.str.strptime(pl.Datetime("us"), "%Y-%m-%d", strict=False)
        got = sub.select(pl.when(x.str.contains(_DATE_RE)).then(date)).to_series()
        left = got.is_null().arg_true()
        if left.len():
            got = got.scatter(left, sub[left].select(parse_time("x")).to_series())
        out = out.scatter(miss, got)
        naive = naive.scatter(miss, sub.select(x.str.strip_chars().str.contains(_NAIVE_RE)).to_series()
                              & got.is_not_null())
    return out, naive


def _partial(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().str.len_chars().is_in([4, 7]).fill_null(False)


def _bad_time(raw: str, parsed: str) -> pl.Expr:
    return pl.col(raw).is_not_null() & pl.col(parsed).is_null()


@dataclass
class Resolved:
    events: pl.DataFrame  # patient_id, time, code, numeric_value, text_value, encounter_id, unit, subject_id, split
    codes: pl.DataFrame  # code, description
    subjects: pl.DataFrame  # patient_id, subject_id, split
    rejects: pl.DataFrame  # src, line, entry, rtype, rid, reason
    accepted: dict[str, int]
    stats: dict = field(default_factory=dict)
    suspicious: dict[str, int] = field(default_factory=dict)


def _rej(df: pl.DataFrame, rtype: str | pl.Expr) -> pl.DataFrame:
    rt = pl.lit(rtype) if isinstance(rtype, str) else rtype
    return df.filter(pl.col("reason").is_not_null()).select(*KEY, rt.alias("rtype"), "rid", "reason")


def first_distinct(df: pl.DataFrame, cols: list[str]) -> pl.Series:
    """``pl.struct(cols).is_first_distinct()`` without hashing strings twice over all rows: a u64 hash of the last
    column (the id: equal keys have equal ids; a struct hash costs 4x) is sorted once; only rows whose hash repeats
    (true repeats, the same id under another key, hash collisions: usually few) get the exact check."""
    key = pl.struct(cols) if len(cols) > 1 else pl.col(cols[0])
    h = df.select(pl.col(cols[-1]).hash(seed=0)).to_series()
    hs = h.sort()
    rep = hs.slice(1).filter(hs.slice(1) == hs.slice(0, max(0, hs.len() - 1)))  # (u64: no diff(), it overflows)
    out = pl.Series("first", [True], dtype=pl.Boolean).extend_constant(True, df.height - 1) if df.height else \
        pl.Series("first", [], dtype=pl.Boolean)
    if rep.len():
        idx = h.is_in(rep.unique().implode()).arg_true()
        out = out.scatter(idx, df[idx].select(key.is_first_distinct()).to_series())
    return out


def join_unique(df: pl.DataFrame, right: pl.DataFrame, on: str | list[str]) -> pl.DataFrame:
    """Left join on keys that are unique in ``right``, keeping ``df``'s order. Only the key columns go through the
    join (the wide frame is not gathered again); an empty ``right`` adds its columns as nulls without a join."""
    on = [on] if isinstance(on, str) else on
    if not right.height:
        return df.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in right.schema.items() if c not in on)
    got = df.select(on).join(right, on=on, how="left", maintain_order="left").drop(on)
    if got.height != df.height:
        raise AssertionError("join keys are not unique in the right frame")
    return df.hstack(got)


def _times(df: pl.DataFrame, col: str, out: str) -> dict[str, pl.Series]:
    t, naive = parse_times_tz(df[col])
    return {out: t, f"_nv_{col}": naive}


def _parent_rejects(rej: pl.DataFrame, early: pl.DataFrame, rtype: str, ok: pl.DataFrame, key: str,
                    flag: str) -> pl.DataFrame:
    """Ids of ``rtype`` rejected here or while reading (``early``) and not accepted under another row, with the
    first reason: ``key``, ``flag`` (the reason)."""
    both = pl.concat([rej.filter(pl.col("reason").is_not_null()).select("rid", "reason"),
                      early.filter(pl.col("rtype") == rtype).select("rid", "reason")])
    return (both.group_by("rid", maintain_order=True).agg(pl.col("reason").first())
            .rename({"rid": key, "reason": flag}).join(ok.select(key), on=key, how="anti"))


def resolve(P: pl.DataFrame, E: pl.DataFrame, V: pl.DataFrame, early: pl.DataFrame | None = None) -> Resolved:
    """Patients ``P``, encounters ``E`` and events ``V`` (frames of :mod:`linmix.apps.ehr.ingest.read`) -> MEDS rows.
    ``early``: ``rtype, rid, reason`` of Patients and Encounters rejected while reading (their dependents name it)."""
    if early is None:
        early = pl.DataFrame(schema={"rtype": pl.String, "rid": pl.String, "reason": pl.String})
    # ---- patients
    P = P.with_columns(**_times(P, "birth", "birth_t"), **_times(P, "death", "death_t"),
                       _first=first_distinct(P, ["rid"]))
    P = P.with_columns(reason=pl.when(~pl.col("_first"))
                       .then(pl.lit("duplicate id: an earlier Patient with this id was kept"))
                       .when(_bad_time("birth", "birth_t")).then(pl.lit("unparseable dateTime: birthDate"))
                       .when(_bad_time("death", "death_t")).then(pl.lit("unparseable dateTime: deceasedDateTime"))
                       .when(pl.col("death_t") < pl.col("birth_t"))
                       .then(pl.lit("inconsistent dates: deceasedDateTime before birthDate")))
    P_ok = P.filter(pl.col("reason").is_null())
    subjects = subject_table(P_ok["rid"].to_list())
    # subject_id and split ride along the subject joins below (no separate join of all MEDS rows on patient_id)
    P_ok = P_ok.hstack(subjects.select("subject_id", "split"))
    pk = P_ok.select(subject="rid", death_t="death_t", birth_t="birth_t", _pat=pl.lit(True), subject_id="subject_id",
                     split="split")
    prej = _parent_rejects(P, early, "Patient", pk, "subject", "_prej")

    def subject_reason(kind: str) -> pl.Expr:
        return (pl.when(pl.col("_pat").is_null() & pl.col("_prej").is_not_null())
                .then(pl.format("rejected subject: its Patient was rejected ({})", pl.col("_prej")))
                .when(pl.col("_pat").is_null())
                .then(pl.lit(f"dangling subject reference: no Patient with this id in the input ({kind})")))

    # ---- encounters
    E = E.with_columns(**_times(E, "start", "start_t"), **_times(E, "end", "end_t"), _dup=~first_distinct(E, ["rid"]))
    E = join_unique(join_unique(E, pk, "subject"), prej, "subject")
    E = E.with_columns(reason=pl.when(pl.col("_dup")).then(pl.lit("duplicate id: an earlier Encounter with this id "
                                                                  "was kept"))
                       .otherwise(subject_reason("Encounter"))
                       .fill_null(pl.when(_bad_time("start", "start_t")).then(pl.lit("unparseable dateTime: "
                                                                                     "period.start"))
                                  .when(_bad_time("end", "end_t")).then(pl.lit("unparseable dateTime: period.end"))
                                  .when(pl.col("end_t") < pl.col("start_t"))
                                  .then(pl.lit("inconsistent dates: period.end before period.start"))
                                  .when(pl.col("start_t") > pl.col("death_t"))
                                  .then(pl.lit("event after death: Encounter starts after deceasedDateTime"))))
    E_ok = E.filter(pl.col("reason").is_null())
    ek = E_ok.select(enc="rid", enc_subject="subject", enc_start="start_t", _enc=pl.lit(True))
    erej = _parent_rejects(E, early, "Encounter", ek, "enc", "_erej")

    # ---- events (a resource may have several rows: Observation components)
    # a resource's rows are contiguous (Flattener, fast path): _start marks its first row
    V = V.with_columns(_start=((pl.col("line").diff() != 0) | (pl.col("src").diff() != 0)
                               | (pl.col("entry").diff() != 0)).fill_null(True), **_times(V, "time", "t"))
    keys = V.select(*KEY, "rtype", "rid", "_start").filter(pl.col("_start")).drop("_start")  # narrow, then filter
    dups = keys.filter(pl.col("rid").is_not_null() & ~first_distinct(keys, ["rtype", "rid"]))
    for right, on in ((dups.select(*KEY, _dup=pl.lit(True)), KEY), (pk, "subject"), (prej, "subject"), (ek, "enc"),
                      (erej, "enc")):
        V = join_unique(V, right, on)
    V = V.with_columns(t=pl.when(pl.col("time").is_null() & (pl.col("rtype") == "Condition"))
                       .then(pl.col("enc_start")).otherwise(pl.col("t")))
    enc_set = pl.col("enc").is_not_null()
    V = V.with_columns(reason=pl.when(pl.col("_dup").fill_null(False))
                       .then(pl.format("duplicate id: an earlier {} with this id was kept", pl.col("rtype")))
                       .otherwise(subject_reason("event"))
                       .fill_null(pl.when(enc_set & pl.col("_enc").is_null() & pl.col("_erej").is_not_null())
                                  .then(pl.format("rejected encounter: its Encounter was rejected ({})",
                                                  pl.col("_erej")))
                                  .when(enc_set & pl.col("_enc").is_null())
                                  .then(pl.lit("dangling encounter reference: no Encounter with this id in the input"))
                                  .when(enc_set & (pl.col("enc_subject") != pl.col("subject")))
                                  .then(pl.lit("inconsistent reference: the Encounter belongs to another patient"))
                                  .when(_bad_time("time", "t")).then(pl.lit("unparseable dateTime: event time"))
                                  .when(pl.col("t").is_null())
                                  .then(pl.lit("no time: Condition without onset, recordedDate or encounter"))
                                  .when(pl.col("t") > pl.col("death_t"))
                                  .then(pl.format("event after death: {} after deceasedDateTime", pl.col("rtype")))))
    bad = (V.filter(pl.col("reason").is_not_null())
           .group_by(KEY, maintain_order=True).agg(pl.col("rtype").first(), pl.col("rid").first(),
                                                   pl.col("reason").first()))
    V_ok = V.join(bad.select(KEY), on=KEY, how="anti", maintain_order="left") if bad.height else V

    # a Condition coded outside the ICD diagnosis vocabularies (SNOMED CT, as Synthea writes them) keeps its role:
    # CONDITION//<VOCAB>//<code>, so that its code is not read as a procedure (linmix.apps.ehr.dialect, preset own)
    V_ok = V_ok.with_columns(code=pl.when((pl.col("rtype") == "Condition") & ~pl.col("code").str.contains(_DIAG))
                             .then("CONDITION//" + pl.col("code")).otherwise(pl.col("code")))

    rejects = pl.concat([_rej(P, "Patient"), _rej(E, "Encounter"), bad.select(*KEY, "rtype", "rid", "reason")])
    accepted = {"Patient": P_ok.height, "Encounter": E_ok.height}
    for rtype, n in V_ok.select("rtype", "_start").filter(pl.col("_start")).group_by("rtype").len().iter_rows():
        accepted[rtype] = n

    # ---- MEDS rows
    null_t = pl.lit(None, dtype=pl.Datetime("us"))
    null_s = pl.lit(None, dtype=pl.String)
    null_f = pl.lit(None, dtype=pl.Float32)

    def rows(df: pl.DataFrame, pid: str, time: pl.Expr, code: pl.Expr, num=null_f, text=null_s, enc=null_s,
             unit=null_s) -> pl.DataFrame:
        return df.select(patient_id=pl.col(pid), time=time, code=code, numeric_value=num.cast(pl.Float32),
                         text_value=text, encounter_id=enc, unit=unit, subject_id="subject_id", split="split")

    cls_code = pl.lit("ENCOUNTER//") + pl.col("cls")
    parts = [
        rows(P_ok.filter(pl.col("gender").is_not_null()), "rid", null_t, pl.lit("GENDER//") + pl.col("gender")),
        rows(P_ok.filter(pl.col("birth_t").is_not_null()), "rid", pl.col("birth_t"), pl.lit("MEDS_BIRTH")),
        rows(P_ok.filter(pl.col("death_t").is_not_null()), "rid", pl.col("death_t"), pl.lit("MEDS_DEATH")),
        rows(E_ok, "subject", pl.col("start_t"), cls_code + "//START", enc=pl.col("rid")),
        rows(E_ok.filter(pl.col("end_t").is_not_null()), "subject", pl.col("end_t"), cls_code + "//END",
             enc=pl.col("rid")),
        rows(V_ok, "subject", pl.col("t"), pl.col("code"), num=pl.col("num"), text=pl.col("text"),
             enc=pl.col("enc"), unit=pl.col("unit")),
    ]
    events = pl.concat(parts)

    # ---- code descriptions (first display seen in input order)
    # one pass over the event rows: their distinct codes, each with its first non-null display (null if none)
    # (and, for the report, the units of its numeric values)
    v_codes = V_ok.group_by("code", maintain_order=True).agg(
        d=pl.col("desc").drop_nulls().first(),
        units=pl.col("unit").filter(pl.col("num").is_not_null()).fill_null("(none)").unique().sort())
    enc_desc = E_ok.select(code=cls_code, d=pl.col("cls_display").fill_null(pl.col("cls")))
    described = pl.concat([
        v_codes.select("code", "d"),
        enc_desc.select(code=pl.col("code") + "//START", d="Encounter start: " + pl.col("d")),
        enc_desc.select(code=pl.col("code") + "//END", d="Encounter end: " + pl.col("d")),
        P_ok.select(code=pl.lit("GENDER//") + pl.col("gender"), d="Patient.gender: " + pl.col("gender")),
        pl.DataFrame({"code": ["MEDS_BIRTH", "MEDS_DEATH"], "d": ["Birth (Patient.birthDate)",
                                                                 "Death (Patient.deceasedDateTime)"]}),
    ]).filter(pl.col("d").is_not_null() & pl.col("code").is_not_null())
    described = described.unique(subset="code", keep="first", maintain_order=True)
    in_data = pl.concat([v_codes.select("code"), *(part.select("code") for part in parts[:-1])]).unique()
    multi = v_codes.select("code", "units").filter(pl.col("units").list.len() > 1).sort("code")
    codes = in_data.join(described, on="code", how="left").select("code", description="d").sort("code")

    # ---- stats for the report (sums of masks: no filtering of wide frames)
    with_enc = E_ok.select(pl.col("subject").unique())
    stats = {
        "patients_without_encounters": P_ok.join(with_enc, left_on="rid", right_on="subject", how="anti").height,
        "encounter_end_after_death": int(E_ok.select((pl.col("end_t") > pl.col("death_t")).sum()).item()),
        "deceased_without_date": int(P_ok.select((pl.col("deceased_flag") & pl.col("death_t").is_null()).sum())
                                     .item()),
        "partial_dates": int(P_ok.select(_partial("birth").sum() + _partial("death").sum()).item()
                             + E_ok.select(_partial("start").sum() + _partial("end").sum()).item()
                             + V_ok.select((_partial("time") & pl.col("_start")).sum()).item()),
        "multi_unit_codes": {c: u for c, u in multi.iter_rows()},
        "values_with_comparator": int(V_ok.select((pl.col("num").is_not_null() & pl.col("text").is_not_null()).sum())
                                      .item()),
    }
    sus = suspicious(P_ok, E_ok, V_ok)
    return Resolved(events=events, codes=codes, subjects=subjects, rejects=rejects, accepted=accepted, stats=stats,
                    suspicious=sus)
