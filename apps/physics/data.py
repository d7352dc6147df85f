"""LightningDataModule for the physics app: a folder of npz samples, synthesised on first use when empty.

``prepare_data`` runs the scikit-fem synthesis (:func:`linmix.apps.physics.pde.synth.synthesize`) only if ``data_dir`` holds no
samples; ``setup`` validates every file (:func:`linmix.apps.physics.pde.sample_io.validate_sample`). A bad file is
skipped, never changed or deleted: it is logged with its name and reason, listed in ``data_dir/rejects_scan.jsonl``
(when the folder is writable) and counted (found = accepted + rejected); a folder without one usable sample is a
:class:`~linmix.shared.errors.UserError`. Then the files are split into train/val/test deterministically and built into
PyG datasets. Nothing is generated in ``__init__``, so every config instantiates instantly.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

from linmix.apps.physics.dataset import MeshFieldDataset, scan_folder
from linmix.apps.physics.pde.sample_io import get_problem
from linmix.shared.errors import UserError
from linmix.shared.sharding import EvalShardSampler, eval_batch_size, shard_of, train_share

log = logging.getLogger("linmix.physics.data")


class PhysicsDataModule(pl.LightningDataModule):
    """Args:
        problem: darcy | heat | elasticity | flow.
        data_dir: sample folder (default ``runs/data/physics/<problem>``); synthesised if it has no ``*.npz``.
        n_samples: samples to synthesise when the folder is empty.
        h: target mesh edge length for synthesis (default per problem).
        n_steps: time steps per synthesised trajectory (transient problems; default per problem).
        val_fraction, test_fraction: split fractions (at least one sample each when there are >= 3).
        batch_size: graphs per batch (meshes of different sizes are batched exactly).
        graph: 'mesh' (triangle edges) or 'knn' (cKDTree, ``k`` neighbours).
        seed: synthesis and split seed.
        num_workers: DataLoader worker processes (kept alive across epochs when > 0).
        synth_workers: processes for synthesis.
    """

    def __init__(self, problem: str = "darcy", data_dir: Optional[str] = None, n_samples: int = 48,
                 h: Optional[float] = None, n_steps: Optional[int] = None, val_fraction: float = 0.125,
                 test_fraction: float = 0.125, batch_size: int = 4, graph: str = "mesh", k: int = 6,
                 num_workers: int = 0, seed: int = 0, synth_workers: int = 1) -> None:
        super().__init__()
        self.spec = get_problem(problem)
        if graph not in ("mesh", "knn"):
            raise ValueError(f"graph must be 'mesh' or 'knn', got {graph!r}")
        self.problem, self.n_samples, self.h, self.n_steps = problem, n_samples, h, n_steps
        self.data_dir = Path(data_dir or f"runs/data/physics/{problem}")
        self.val_fraction, self.test_fraction, self.batch_size = val_fraction, test_fraction, batch_size
        self.graph, self.k, self.num_workers, self.seed, self.synth_workers = graph, k, num_workers, seed, synth_workers
        self.train_set = self.val_set = self.test_set = None
        self.rejects: list = []

    # sizes linked to the model (LightningCLI links)
    @property
    def n_in(self) -> int:
        return self.spec.n_in

    @property
    def n_out(self) -> int:
        return self.spec.n_out

    @property
    def n_globals(self) -> int:
        return self.spec.n_globals

    @property
    def transient(self) -> bool:
        return self.spec.transient

    def prepare_data(self) -> None:
        if self.data_dir.is_dir() and any(self.data_dir.glob("*.npz")):
            return
        from linmix.apps.physics.pde.synth import synthesize

        log.info("no samples in %s: synthesising %d %s samples", self.data_dir, self.n_samples, self.problem)
        synthesize(self.problem, self.n_samples, self.data_dir, seed=self.seed, h=self.h,
                   workers=self.synth_workers, n_steps=self.n_steps, progress=False)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        if not self.data_dir.is_dir():
            raise UserError(f"data_dir {self.data_dir} does not exist or is not a folder (run prepare_data or "
                            "linmix-physics synth)")
        paths, self.rejects = scan_folder(self.data_dir, self.problem)
        found = len(paths) + len(self.rejects)
        listed = ""
        if self.rejects:
            for r in self.rejects:
                log.warning("skipped %s", r["reason"])
            listed = self._write_rejects()
        (log.warning if self.rejects else log.info)(
            "%s: found %d sample files, using %d, skipped %d as unusable%s", self.data_dir, found, len(paths),
            len(self.rejects), listed)
        if not paths:
            first = f"; first: {self.rejects[0]['reason']}" if self.rejects else ""
            raise UserError(f"{self.data_dir}: no usable {self.problem} samples: {found} *.npz found, "
                            f"{len(self.rejects)} rejected{listed}{first}")
        order = np.random.default_rng(self.seed).permutation(len(paths))
        n = len(paths)
        n_test = max(1, int(round(self.test_fraction * n))) if n >= 3 else 0
        n_val = max(1, int(round(self.val_fraction * n))) if n >= 3 else 0
        split = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
        if len(split["val"]) == 0:
            split["val"] = split["train"][:1]
        if len(split["test"]) == 0:
            split["test"] = split["train"][:1]
        sets = {k: MeshFieldDataset([paths[i] for i in sorted(v)], self.graph, self.k) for k, v in split.items()}
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

    def _write_rejects(self) -> str:
        """Write ``rejects_scan.jsonl``; returns a note for the log (where the list is, or why it is not written)."""
        target = self.data_dir / "rejects_scan.jsonl"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.data_dir, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in self.rejects))
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            return f" (list not written: {target}: {exc.strerror or type(exc).__name__})"
        return f" (listed in {target})"

    def train_stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, Optional[torch.Tensor]]:
        """(inputs (ΣN, F_in), globals (B, G), fields (ΣT·N, C), t_max, increments (Σ(T-1)·N, C) u_{t+1} − u_t or
        None for steady problems) over the training set."""
        items = self.train_set.items
        inputs = torch.cat([d.inputs for d in items])
        globals_ = torch.cat([d.globals for d in items])
        fields = torch.cat([d.fields.reshape(-1, d.fields.shape[-1]) for d in items])
        t_max = max(float(d.dt) * (d.fields.shape[0] - 1) for d in items)
        increments = None
        if self.transient:
            increments = torch.cat([(d.fields[1:] - d.fields[:-1]).reshape(-1, d.fields.shape[-1]) for d in items])
        return inputs, globals_, fields, t_max if t_max > 0 else 1.0, increments

    def _loader(self, ds, shuffle: bool, split: str) -> DataLoader:
        """Each rank its own part (:mod:`linmix.shared.sharding`): training a disjoint equal share of every epoch's
        permutation (``seed + epoch``), evaluation the single-process batches dealt round robin, none repeated."""
        rank, world = shard_of(self)
        if shuffle:
            train_share(len(ds), world, f"the {split} split")
            bs = self.batch_size
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=self.seed,
                                         drop_last=True)
        else:
            bs = eval_batch_size(len(ds), self.batch_size, world, f"the {split} split")
            sampler = EvalShardSampler(len(ds), bs, num_replicas=world, rank=rank)
        return DataLoader(ds, batch_size=bs, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, "test")
