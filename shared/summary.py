"""Print one table of every ``summary.json`` under a demo folder: ``python -m linmix.shared.summary runs/demo``.

Each app's demo writes a flat list of ``{"stage", "metric", "value", "note"}`` rows; this joins them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def collect(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.rglob("summary.json")):
        try:
            rows += json.loads(path.read_text())
        except (OSError, ValueError) as err:
            rows.append({"stage": path.parent.name, "metric": "summary unreadable", "value": float("nan"),
                         "note": f"{path}: {err}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "runs/demo")
    rows = collect(root)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"linmix demo summary ({root})")
    for col in ("stage", "metric", "value", "note"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        v = r.get("value")
        table.add_row(str(r.get("stage", "")), str(r.get("metric", "")),
                      f"{v:.4g}" if isinstance(v, (int, float)) else str(v), str(r.get("note", "")))
    Console(width=160).print(table)
    (root / "summary.md").write_text(
        "| stage | metric | value | note |\n|---|---|---|---|\n"
        + "".join(f"| {r.get('stage')} | {r.get('metric')} | {r.get('value')} | {r.get('note', '')} |\n" for r in rows))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
