"""``linmix-ehr score``: stream the patients of a MEDS split through a finetuned EHRMamba, reusing the Mamba state.

Each new stretch of tokens continues the Mamba state (:class:`linmix.apps.ehr.predict.IncrementalScorer`) instead of
re-reading the history. Without ``--labels`` a patient is scored after each visit; with ``--labels`` (a MEDS labels
folder, one ``<task>/`` or ``<task>.parquet`` per task, as ``--data.labels_dir`` takes) at each of the task's
``prediction_time`` rows, the input cut there as in training (the label rows it cannot use are counted and printed).
The output (``--out``, one task) is in the MEDS prediction schema that ``meds-evaluation`` reads: ``subject_id,
prediction_time, [boolean_value,] predicted_boolean_value, predicted_boolean_probability`` (``boolean_value`` only
with labels; the prediction time of a visit score is the visit's end). The arguments are read before torch loads, so
``--help`` answers at once.
"""

from __future__ import annotations

import argparse


def score_main(argv=None) -> int:
    """incremental scoring of appended events, reusing the Mamba recurrent state"""
    from linmix.shared.models import add_checkpoint_args, checkpoint_path

    p = argparse.ArgumentParser(prog="linmix-ehr score", description=score_main.__doc__)
    add_checkpoint_args(p, ckpt_help="finetuned checkpoint (.ckpt)")
    p.add_argument("--meds", required=True, help="MEDS folder to score (its vocabulary is the checkpoint's)")
    p.add_argument("--task", default="mortality", help="task name (see the checkpoint's tasks)")
    p.add_argument("--labels", default=None,
                   help="MEDS labels folder holding the task (<task>/*.parquet): score at its prediction times")
    p.add_argument("--split", default="held_out", help="split to score")
    p.add_argument("--limit", type=int, default=100, help="at most this many patients")
    p.add_argument("--out", default="runs/ehr/scores.parquet")
    args = p.parse_args(argv)
    import polars as pl

    from linmix.apps.ehr import sequences as S
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.meds import atomic_write
    from linmix.apps.ehr.predict import IncrementalScorer
    from linmix.apps.ehr.predict_writer import PREDICTION_SCHEMA, THRESHOLD
    from linmix.shared.errors import UserError

    lit = EHRLitModule.load(checkpoint_path(args, app="ehr"))
    if args.task not in lit.task_names:
        raise UserError(f"the checkpoint was not finetuned on task {args.task!r}; its tasks are {lit.task_names}")
    if not lit.vocab_json:
        p.error("the checkpoint carries no vocabulary (it was not trained through EHRDataModule)")
    vocab = S.Vocabulary.from_json(lit.vocab_json)
    settings = S.SequenceSettings(vocab_size=lit.net.cfg.vocab_size, n_conditions=vocab.n_conditions)
    frame = S.load_meds(args.meds).filter(pl.col("split") == args.split)
    seqs, _, _ = S.build_sequences(frame, settings, vocab=vocab)
    seqs = seqs.head(args.limit)
    scorer = IncrementalScorer(lit.net, lit.task_token_ids)
    times = _label_times(args, seqs) if args.labels else None
    rows = _score(scorer, lit.task_names.index(args.task), seqs, times)
    schema = {k: v for k, v in PREDICTION_SCHEMA.items() if k in rows or k == "predicted_boolean_value"}
    out = pl.DataFrame(rows).with_columns(
        pl.col("prediction_time").cast(pl.Datetime("us")),
        (pl.col("predicted_boolean_probability") >= THRESHOLD).alias("predicted_boolean_value"),
    ).select([pl.col(c).cast(t) for c, t in schema.items()])
    atomic_write(args.out, out.write_parquet)
    print(f"scored {out['subject_id'].n_unique()} patients at {out.height} prediction times -> {args.out}")
    return 0


def _label_times(args, seqs):
    """The task's usable label rows for the scored patients (``task_labels.reconcile``; the others are counted)."""
    import polars as pl

    from linmix.apps.ehr import task_labels as TL

    tasks = TL.find_tasks(args.labels)
    if args.task not in tasks:
        raise TL.LabelsError(f"--labels {args.labels} has no task {args.task!r} (it has {sorted(tasks)})")
    labels = TL.read_task(args.task, tasks[args.task]).filter(
        pl.col("subject_id").is_in(seqs["subject_id"].implode()))
    used, counts = TL.reconcile(args.task, labels, seqs)
    if counts.dropped():
        print(f"task {args.task}: {counts.used} of {counts.rows} label rows of the scored patients used; not used: "
              + ", ".join(f"{k} {v}" for k, v in counts.dropped().items()))
    return used


def _score(scorer, task: int, seqs, labels) -> dict[str, list]:
    """Incremental probabilities: after each visit (``labels`` None) or at each label's prediction time."""
    import numpy as np
    import polars as pl

    from linmix.apps.ehr import sequences as S
    from linmix.apps.ehr.predict import visit_ends

    rows: dict[str, list] = {"subject_id": [], "prediction_time": [], "predicted_boolean_probability": []}
    if labels is not None:
        rows["boolean_value"] = []
        by_subject = labels.with_columns(pl.col("prediction_time").cast(pl.Int64)).partition_by(
            "subject_id", as_dict=True, maintain_order=True)
    for r in range(seqs.height):
        row = seqs.row(r, named=True)
        sid, arrays = row["subject_id"], S.row_arrays(row)
        if labels is None:
            ends = visit_ends(arrays)
            points = [(int(arrays["abs_time"][e - 1]), e, None) for e in ends]
        else:
            mine = by_subject.get((sid,))
            if mine is None:
                continue
            points = [(t, int(np.searchsorted(arrays["abs_time"], t, side="right")), y)
                      for t, y in zip(mine["prediction_time"].to_list(), mine["boolean_value"].to_list(), strict=True)]
        done, prob = 0, float("nan")
        for t, end, y in points:
            if end > done:  # new tokens since the last score (else the input, and so the probability, is unchanged)
                chunk = {k: a[done:end] for k, a in arrays.items()}
                prob = scorer.start(sid, task, chunk) if done == 0 else scorer.append(sid, chunk)
                done = end
            rows["subject_id"].append(sid)
            rows["prediction_time"].append(t)
            rows["predicted_boolean_probability"].append(prob)
            if labels is not None:
                rows["boolean_value"].append(y)
        scorer.states.pop(sid, None)
    return rows
