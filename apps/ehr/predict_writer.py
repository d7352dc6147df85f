"""``linmix-ehr predict`` output: a Lightning prediction writer that saves the predictions as MEDS prediction files.

Finetune objective: one file per task, ``<output>/<task>.parquet``, in the schema ``meds-evaluation`` reads (the MEDS
label schema plus predictions): ``subject_id`` int64, ``prediction_time`` datetime[us], ``boolean_value`` (the label),
``predicted_boolean_value`` (probability >= 0.5, the threshold of the app's F1) and ``predicted_boolean_probability``
float32; ``meds-evaluation-cli predictions_path=<output>/<task>.parquet output_file=<task>.json`` scores one.
Pretrain objective: ``<output>/next_token.parquet`` with ``subject_id, next_token, probability`` (the most likely next
token after each patient's history). Files are written atomically (temporary file + rename); the row count of a task
equals its number of datapoints, so nothing is silently dropped. Rows are sorted by subject and prediction time,
whatever order the batches came in. Under DDP every rank's predictions are gathered and rank 0 writes the files.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from linmix.apps.ehr.meds import atomic_write
from linmix.shared.errors import UserError
from linmix.shared.sharding import gather_objects

THRESHOLD = 0.5
PREDICTION_SCHEMA = {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"), "boolean_value": pl.Boolean,
                     "predicted_boolean_value": pl.Boolean, "predicted_boolean_probability": pl.Float32}


class ParquetPredictionWriter(BasePredictionWriter):
    """Collect ``predict_step`` outputs and write them under ``output`` (a folder) at the end of the predict epoch.

    Args:
        output: the folder to write (created); one ``<task>.parquet`` per task (see the module docstring).
    """

    def __init__(self, output: str = "runs/ehr/predictions") -> None:
        super().__init__(write_interval="epoch")
        if Path(output).suffix == ".parquet" or Path(output).is_file():
            raise UserError(f"--predictions.output {output}: give a folder; predictions are written one file per "
                            "task (<folder>/<task>.parquet, the MEDS prediction schema)")
        self.output = output
        self.written: list[Path] = []

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders: flatten
            predictions = [p for group in predictions for p in group]
        # under DDP each rank predicted its own part (linmix.shared.sharding): gathered once, written by rank 0
        predictions = [{k: v.detach().cpu() for k, v in p.items()} for p in predictions]  # pickled across ranks
        predictions = [p for part in gather_objects(predictions) for p in part]
        if not trainer.is_global_zero:
            return
        frame = predictions_frame(predictions, getattr(pl_module, "task_names", []))
        self.written = write_predictions(frame, self.output)
        print(f"wrote {frame.height} predictions to {len(self.written)} file(s) under {self.output}")


def predictions_frame(outputs: list[dict], task_names: list[str]) -> pl.DataFrame:
    """``predict_step`` dicts -> one frame: ``task`` + ``PREDICTION_SCHEMA`` (finetune) or the next-token columns."""
    if not outputs:
        raise ValueError("no predictions to write (empty predict split?)")
    cat = {k: torch.cat([o[k].detach().cpu().reshape(-1) for o in outputs]) for k in outputs[0]}
    if "probability" not in cat or "task" not in cat:
        return pl.DataFrame({"subject_id": cat["subject_id"].numpy(), "next_token": cat["next_token"].numpy(),
                             "probability": cat["next_token_probability"].numpy()}).sort("subject_id", maintain_order=True)
    tasks = cat["task"].tolist()
    unknown = sorted({t for t in tasks if not 0 <= t < len(task_names)})
    if unknown:
        raise ValueError(f"task indices {unknown} outside the model's tasks {task_names}")
    prob = pl.Series(cat["probability"].float().numpy(), dtype=pl.Float32)
    return pl.DataFrame({
        "task": [task_names[t] for t in tasks],
        "subject_id": pl.Series(cat["subject_id"].numpy(), dtype=pl.Int64),
        "prediction_time": pl.Series(cat["prediction_time"].numpy(), dtype=pl.Int64).cast(pl.Datetime("us")),
        "boolean_value": pl.Series(cat["label"].numpy() > 0.5, dtype=pl.Boolean),
        "predicted_boolean_value": prob >= THRESHOLD,
        "predicted_boolean_probability": prob,
    }).sort(["task", "subject_id", "prediction_time"], maintain_order=True)


def write_predictions(frame: pl.DataFrame, output: str | Path) -> list[Path]:
    """Write ``predictions_frame``'s rows: ``<output>/<task>.parquet`` per task, or ``next_token.parquet``."""
    out = Path(output)
    if "task" not in frame.columns:
        return [atomic_write(out / "next_token.parquet", frame.write_parquet)]
    paths = []
    for (task,), part in frame.partition_by("task", as_dict=True, maintain_order=True).items():
        part = part.select([pl.col(c).cast(t) for c, t in PREDICTION_SCHEMA.items()])
        paths.append(atomic_write(out / f"{task}.parquet", part.write_parquet))
    return paths
