"""Ingestion report (JSON + rich table) and quarantine files.

Counts are per resource type: ``read = accepted + rejected + ignored`` for every row and in total (checked by
:meth:`IngestReport.reconcile`). ``ignored`` = resource types this tool does not read (Claim, Practitioner, ...).
Pseudo-types: ``(malformed)`` for lines that are not JSON, ``(not FHIR)`` for JSON without a resourceType,
``(contained) <Type>`` for contained resources (always ignored). Files not read are counted per reason in
``skipped_files`` (paths in ``quarantine/_skipped_files.ndjson``); accepted resources with suspicious values are
counted per reason in ``suspicious`` (:data:`linmix.apps.ehr.ingest.checks.SUSPICIOUS`, rows kept).
The report and logs hold counts, reason categories, file names and line numbers only: never names, identifiers,
birth dates or resource ids. Quarantine files (``quarantine/<Type>.ndjson``) hold the rejected records themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table


@dataclass
class IngestReport:
    """Result of :func:`linmix.apps.ehr.ingest.ingest` (``seconds``, ``cpu_s`` and ``out`` are not written to report.json:
    reruns stay byte-identical)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> read/accepted/rejected/ignored
    reasons: dict[str, int] = field(default_factory=dict)  # reason category -> n
    files: int = 0
    file_errors: list[dict] = field(default_factory=list)  # file_index, line, reason (paths: quarantine/_files)
    skipped_files: dict[str, int] = field(default_factory=dict)  # reason -> files not read
    rows_written: dict[str, int] = field(default_factory=dict)  # split -> MEDS rows
    subjects: dict[str, int] = field(default_factory=dict)  # split -> subjects
    codes: int = 0
    stats: dict = field(default_factory=dict)
    suspicious: dict[str, int] = field(default_factory=dict)  # reason -> accepted values (rows kept)
    validate: bool = False
    out: str = ""
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # process CPU seconds per phase (read, resolve, write)

    @property
    def total(self) -> dict[str, int]:
        keys = ("read", "accepted", "rejected", "ignored")
        return {k: sum(c.get(k, 0) for c in self.counts.values()) for k in keys}

    def reconcile(self) -> None:
        """Raise AssertionError unless read = accepted + rejected + ignored for every type."""
        for t, c in self.counts.items():
            if c["read"] != c["accepted"] + c["rejected"] + c["ignored"]:
                raise AssertionError(f"counts do not reconcile for {t}: {c}")

    def to_json(self) -> bytes:
        d = asdict(self)
        d.pop("seconds")
        d.pop("cpu_s")
        d.pop("out")
        d["total"] = self.total
        return orjson.dumps(d, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        tab = Table(title=f"FHIR -> MEDS ingest ({self.files} files{', R4B-validated' if self.validate else ''})")
        for col in ("resource type", "read", "accepted", "rejected", "ignored"):
            tab.add_column(col, justify="left" if col == "resource type" else "right")
        for t in sorted(self.counts):
            c = self.counts[t]
            tab.add_row(t, *(f"{c[k]:,}" for k in ("read", "accepted", "rejected", "ignored")))
        tot = self.total
        tab.add_row("[b]total", *(f"[b]{tot[k]:,}" for k in ("read", "accepted", "rejected", "ignored")))
        console.print(tab)
        rows = sum(self.rows_written.values())
        rate = f", {tot['read'] / self.seconds:,.0f} resources/s" if self.seconds > 0 else ""
        console.print(f"MEDS rows {rows:,} ({', '.join(f'{k} {v:,}' for k, v in self.rows_written.items())}); "
                      f"subjects {sum(self.subjects.values()):,}; codes {self.codes:,}; "
                      f"{self.seconds:.1f} s{rate}")
        for reason, n in sorted(self.reasons.items(), key=lambda x: -x[1]):
            console.print(f"  rejected {n:,}: {reason}")
        for reason, n in self.skipped_files.items():
            console.print(f"  skipped {n:,} files: {reason} (paths in quarantine/_skipped_files.ndjson)")
        sus = [f"{v:,} {k.replace('_', ' ')}" for k, v in self.suspicious.items() if v]
        if sus:
            console.print("  accepted but suspicious: " + "; ".join(sus))
        for fe in self.file_errors:
            console.print(f"  [red]file error[/red] input file #{fe['file_index']} line {fe['line']}: {fe['reason']} "
                          "(path in quarantine/_files.ndjson)")
        st = self.stats
        notes = [f"{st[k]:,} {k.replace('_', ' ')}" for k in ("patients_without_encounters",
                                                              "encounter_end_after_death", "deceased_without_date",
                                                              "partial_dates", "values_with_comparator")
                 if st.get(k)]
        if st.get("multi_unit_codes"):
            notes.append(f"{len(st['multi_unit_codes'])} lab codes with several units (see report.json)")
        if notes:
            console.print("  notes: " + "; ".join(notes))


def category(reason: str) -> str:
    """Reason category (text before the first colon), used in the report; details stay in quarantine."""
    return reason.split(":", 1)[0]


def write_quarantine(qdir: Path, records: list[dict]) -> list[str]:
    """Write records (dicts with file, line, entry, resourceType, reason, record) to ``qdir/<Type>.ndjson``.

    Records are sorted by (file, line, entry) so reruns are byte-identical; returns the file names written.
    """
    qdir.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[dict]] = {}
    for r in records:
        by_type.setdefault(r["resourceType"], []).append(r)
    names = []
    for rtype in sorted(by_type):
        rs = sorted(by_type[rtype], key=lambda r: (r["file"], r["line"], r["entry"]))
        name = {"(malformed)": "_malformed", "(not FHIR)": "_not_fhir", "(file)": "_files",
                "(skipped file)": "_skipped_files"}.get(rtype, rtype)
        (qdir / f"{name}.ndjson").write_bytes(b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n"
                                                       for r in rs))
        names.append(f"{name}.ndjson")
    return names
