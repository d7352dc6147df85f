"""Pack / unpack the Darcy set of the physics GPU job (the GPU machine has no scikit-fem / triangle to synthesise it).

The set is what ``configs/physics/gto_darcy_gpu.yaml`` synthesises on first use (``runs/data/physics/darcy_gpu``,
1,250 samples, seed 0, h = 0.1, one shared domain): ``pack`` synthesises it if missing, then stores it in one
compressed npz, ``gpu_pack/physics/darcy_gpu.npz``: the shared ``pos`` (N, 2) and ``cells`` (K, 3) once, per sample
``node_type`` (S, N) int8, ``log_k`` and ``f`` (S, N) float32, ``flux`` (S,) and ``u`` (S, N) float32, and the file
names. The third node input, the distance to the nearest Dirichlet node, is recomputed on unpacking (scipy cKDTree,
float64 on the stored float32 positions; it differs from the synthesised files by float rounding only, ~1e-7).
``unpack`` (numpy + scipy only) writes the standard sample files (:func:`linmix.apps.physics.pde.sample_io.save_sample`) with the
same names, so the data module's deterministic split is the same wherever it is unpacked.

    .venv/bin/python benchmarks/gpu/pack_physics.py pack                      # -> gpu_pack/physics/darcy_gpu.npz
    python3 benchmarks/gpu/pack_physics.py unpack --out DIR [--pack FILE]     # on the GPU machine / for the eval
    .venv/bin/python benchmarks/gpu/pack_physics.py check --out DIR           # compare DIR with the synthesised set
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from linmix.apps.physics.pde.geometry import dirichlet_distance  # noqa: E402
from linmix.apps.physics.pde.sample_io import load_sample, save_sample  # noqa: E402

SRC = Path("runs/data/physics/darcy_gpu")
PACK = Path("gpu_pack/physics/darcy_gpu.npz")
N_SAMPLES, H, SEED = 1250, 0.1, 0


def pack(src: Path = SRC, out: Path = PACK) -> dict:
    paths = sorted(src.glob("*.npz"))
    if len(paths) < N_SAMPLES * 0.95:
        from linmix.apps.physics.pde.synth import synthesize

        s = synthesize("darcy", N_SAMPLES, src, seed=SEED, h=H, workers=1, progress=False)
        print(f"synthesised {s['written']} ({s['failed']} failed) in {s['seconds']:.0f} s", flush=True)
        paths = sorted(src.glob("*.npz"))
    samples = [load_sample(p) for p in paths]
    pos, cells = samples[0]["pos"], samples[0]["cells"]
    for p, d in zip(paths, samples):
        if not (np.array_equal(d["pos"], pos) and np.array_equal(d["cells"], cells)):
            raise SystemExit(f"{p}: mesh differs from the first sample's; the pack assumes one shared domain")
    arrays = {"names": np.array([p.stem for p in paths]), "pos": pos, "cells": cells,
              "node_type": np.stack([d["node_type"] for d in samples]).astype(np.int8),
              "log_k": np.stack([d["inputs"][:, 0] for d in samples]).astype(np.float32),
              "f": np.stack([d["inputs"][:, 1] for d in samples]).astype(np.float32),
              "flux": np.array([d["globals"][0] for d in samples], np.float32),
              "u": np.stack([d["fields"][0, :, 0] for d in samples]).astype(np.float32)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    info = {"samples": len(paths), "nodes": int(len(pos)), "cells": int(len(cells)), "bytes": out.stat().st_size}
    print(f"packed {info} -> {out} ({info['bytes'] / 2**20:.2f} MiB)", flush=True)
    return info


def unpack(out: Path, pack_file: Path = PACK) -> int:
    """Write every packed sample as ``out/<name>.npz``; returns the count."""
    t0 = time.perf_counter()
    with np.load(pack_file, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(a["names"]):
        nt = a["node_type"][i]
        inputs = np.stack([a["log_k"][i], a["f"][i], dirichlet_distance(a["pos"].astype(np.float64), nt)], 1)
        save_sample(out / f"{name}.npz", {"pos": a["pos"], "cells": a["cells"], "node_type": nt, "inputs": inputs,
                                          "globals": a["flux"][i:i + 1], "fields": a["u"][i][None, :, None]},
                    "darcy", dt=0.0)
    print(f"unpacked {len(a['names'])} samples -> {out} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return len(a["names"])


def check(out: Path, src: Path = SRC) -> float:
    """Max abs difference of every array between the unpacked and the synthesised files (same names required)."""
    a, b = sorted(out.glob("*.npz")), sorted(src.glob("*.npz"))
    if [p.name for p in a] != [p.name for p in b]:
        raise SystemExit(f"file names differ: {len(a)} unpacked vs {len(b)} synthesised")
    worst = 0.0
    for pa, pb in zip(a, b):
        da, db = load_sample(pa), load_sample(pb)
        for k in ("pos", "cells", "node_type", "inputs", "globals", "fields"):
            if da[k].shape != db[k].shape:
                raise SystemExit(f"{pa.name}: {k} shape {da[k].shape} vs {db[k].shape}")
            worst = max(worst, float(np.abs(da[k].astype(np.float64) - db[k].astype(np.float64)).max()))
    print(f"{len(a)} files, max abs difference {worst:.3g}", flush=True)
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["pack", "unpack", "check"])
    p.add_argument("--out", type=Path, default=None, help="unpack / check: sample folder")
    p.add_argument("--pack", type=Path, default=PACK)
    a = p.parse_args(argv)
    if a.cmd == "pack":
        pack(out=a.pack)
    elif a.cmd == "unpack":
        unpack(a.out, a.pack)
    else:
        check(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
