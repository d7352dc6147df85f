"""``linmix-ehr predict`` output: a Lightning prediction writer that saves every prediction to one Parquet file.

Finetune objective: one row per (patient, task) datapoint of the predicted split, ``subject_id, task, prediction_time,
probability, label`` (``label`` is the MEDS label when the data has one). Pretrain objective: ``subject_id,
next_token, probability`` (the most likely next token after each patient's history). The file is written atomically
(temporary file + rename) and its row count equals the number of datapoints, so nothing is silently dropped; under
DDP every rank's predictions are gathered and rank 0 writes the one file. Rows are sorted by subject (then task and
prediction time), whatever order the batches came in.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from linmix.apps.ehr.meds import atomic_write
from linmix.shared.sharding import gather_objects


class ParquetPredictionWriter(BasePredictionWriter):
    """Collect ``predict_step`` outputs and write them to ``output`` (Parquet) at the end of the predict epoch.

    Args:
        output: the Parquet file to write (parent folders are created).
    """

    def __init__(self, output: str = "runs/ehr/predictions.parquet") -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.written: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders: flatten
            predictions = [p for group in predictions for p in group]
        # under DDP each rank predicted its own part (linmix.shared.sharding): gathered once, written by rank 0
        predictions = [{k: v.detach().cpu() for k, v in p.items()} for p in predictions]  # pickled across ranks
        predictions = [p for part in gather_objects(predictions) for p in part]
        if not trainer.is_global_zero:
            return
        frame = predictions_frame(predictions, getattr(pl_module, "task_names", []))
        path = self.written = atomic_write(self.output, frame.write_parquet)
        print(f"wrote {frame.height} predictions to {path}")


def predictions_frame(outputs: list[dict], task_names: list[str]) -> pl.DataFrame:
    """``predict_step`` dicts -> one frame (see the module docstring for the columns)."""
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
    return pl.DataFrame({
        "subject_id": pl.Series(cat["subject_id"].numpy(), dtype=pl.Int64),
        "task": [task_names[t] for t in tasks],
        "prediction_time": pl.Series(cat["prediction_time"].numpy(), dtype=pl.Int64).cast(pl.Datetime("us")),
        "probability": pl.Series(cat["probability"].float().numpy(), dtype=pl.Float32),
        "label": pl.Series(cat["label"].numpy() > 0.5, dtype=pl.Boolean),
    }).sort(["subject_id", "task", "prediction_time"], maintain_order=True)
