"""``linmix-ehr score``: stream the patients of a MEDS split visit by visit through a finetuned EHRMamba.

Each visit's new tokens continue the Mamba state (:class:`linmix.apps.ehr.predict.IncrementalScorer`); the probability
after each visit is written to ``scores.parquet`` (subject_id, visit, time, task, probability). The arguments are read
before torch loads, so ``--help`` answers at once.
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
    p.add_argument("--split", default="held_out", help="split to score")
    p.add_argument("--limit", type=int, default=100, help="at most this many patients")
    p.add_argument("--out", default="runs/ehr/scores.parquet")
    args = p.parse_args(argv)
    import polars as pl

    from linmix.apps.ehr import sequences as S
    from linmix.apps.ehr.lit_module import EHRLitModule
    from linmix.apps.ehr.meds import atomic_write
    from linmix.apps.ehr.predict import IncrementalScorer, visit_ends

    lit = EHRLitModule.load(checkpoint_path(args, app="ehr"))
    if args.task not in lit.task_names:
        p.error(f"task {args.task!r} not in the checkpoint's tasks {lit.task_names}")
    if not lit.vocab_json:
        p.error("the checkpoint carries no vocabulary (it was not trained through EHRDataModule)")
    vocab = S.Vocabulary.from_json(lit.vocab_json)
    settings = S.SequenceSettings(vocab_size=lit.net.cfg.vocab_size, n_conditions=vocab.n_conditions)
    frame = S.load_meds(args.meds).filter(pl.col("split") == args.split)
    seqs, _, _ = S.build_sequences(frame, settings, vocab=vocab)
    scorer = IncrementalScorer(lit.net, lit.task_token_ids)
    task = lit.task_names.index(args.task)
    rows: dict[str, list] = {"subject_id": [], "visit": [], "time": [], "task": [], "probability": []}
    for r in range(min(args.limit, seqs.height)):
        row = seqs.row(r, named=True)
        arrays = S.row_arrays(row)
        done = 0
        for v, end in enumerate(visit_ends(arrays)):
            chunk = {k: a[done:end] for k, a in arrays.items()}
            prob = scorer.start(row["subject_id"], task, chunk) if done == 0 else scorer.append(row["subject_id"], chunk)
            rows["subject_id"].append(row["subject_id"])
            rows["visit"].append(v + 1)
            rows["time"].append(int(arrays["abs_time"][end - 1]))
            rows["task"].append(args.task)
            rows["probability"].append(prob)
            done = end
        scorer.states.pop(row["subject_id"], None)
    out = pl.DataFrame(rows).with_columns(pl.col("time").cast(pl.Datetime("us")))
    atomic_write(args.out, out.write_parquet)
    print(f"scored {out['subject_id'].n_unique()} patients at {out.height} visit ends -> {args.out}")
    return 0
