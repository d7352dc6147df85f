"""torch-geometric dataset over a folder of sample npz files (see :mod:`linmix.apps.physics.pde.sample_io`).

Each item is a :class:`MeshData` graph: ``pos`` (N, 2), ``node_type`` (N,) int64, ``inputs`` (N, F_in),
``globals`` (1, G), ``fields`` (T, N, C) (batched along the node axis), ``cells`` (K, 3) and ``edge_index`` (2, E)
(offset by the node count when batched), ``dt`` (1,). :func:`scan_folder` validates every file first and reports the
rejected ones with their reasons, so nothing is dropped silently (``found = accepted + rejected``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data, Dataset

from linmix.apps.physics.pde.geometry import knn_edges, mesh_edges
from linmix.apps.physics.pde.sample_io import SampleError, load_sample


class MeshData(Data):
    """PyG ``Data`` whose ``fields`` (T, N, C) concatenate along nodes and whose ``cells`` shift by the node count."""

    def __cat_dim__(self, key, value, *args, **kwargs):
        if key == "fields":
            return 1
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key, value, *args, **kwargs):
        if key == "cells":
            return self.num_nodes
        return super().__inc__(key, value, *args, **kwargs)


def build_edges(d: dict, graph: str = "mesh", k: int = 6) -> np.ndarray:
    """(2, E) edges for sample dict ``d``: PhysGTO mesh edges or cKDTree kNN (``graph='knn'``)."""
    if graph == "mesh":
        return mesh_edges(d["cells"])
    if graph == "knn":
        return knn_edges(np.asarray(d["pos"], np.float64), k)
    raise ValueError(f"graph must be 'mesh' or 'knn', got {graph!r}")


def to_graph(d: dict, graph: str = "mesh", k: int = 6, name: str = "") -> MeshData:
    """Convert one validated sample dict into a :class:`MeshData`."""
    n = len(d["pos"])
    return MeshData(
        pos=torch.as_tensor(np.asarray(d["pos"], np.float32)),
        node_type=torch.as_tensor(np.asarray(d["node_type"], np.int64)),
        inputs=torch.as_tensor(np.asarray(d["inputs"], np.float32)).reshape(n, -1),
        globals=torch.as_tensor(np.asarray(d["globals"], np.float32)).reshape(1, -1),
        fields=torch.as_tensor(np.asarray(d["fields"], np.float32)),
        cells=torch.as_tensor(np.asarray(d["cells"], np.int64)),
        edge_index=torch.as_tensor(build_edges(d, graph, k)),
        dt=torch.tensor([float(d.get("dt", 0.0))]),
        num_nodes=n,
        name=name,
    )


def scan_folder(folder: str | Path, problem: str | None = None) -> tuple[list[Path], list[dict]]:
    """Validate every ``*.npz`` in ``folder``. Returns (accepted paths, rejects ``[{file, reason}]``); a sample of
    another problem than ``problem`` is rejected too."""
    accepted, rejects = [], []
    for p in sorted(Path(folder).glob("*.npz")):
        try:
            d = load_sample(p)
            if problem is not None and d["problem"] != problem:
                raise SampleError(f"{p}: sample is problem {d['problem']!r} {d['channels']}, expected {problem!r}")
        except SampleError as exc:
            rejects.append({"file": str(p), "reason": str(exc)})
            continue
        accepted.append(p)
    return accepted, rejects


class MeshFieldDataset(Dataset):
    """In-memory torch-geometric dataset of validated sample files (``paths``); ``graph`` 'mesh' or 'knn'."""

    def __init__(self, paths: list[str | Path], graph: str = "mesh", k: int = 6) -> None:
        super().__init__(root=None)
        self.paths = [Path(p) for p in paths]
        self.items = [to_graph(load_sample(p), graph, k, name=Path(p).stem) for p in self.paths]

    def len(self) -> int:
        return len(self.items)

    def get(self, idx: int) -> MeshData:
        return self.items[idx]
