"""``linmix-physics``: fit / validate / test / predict (LightningCLI) plus the tools synth, import, rollout, export, demo.

A declaration only (import strings, no torch): see :mod:`linmix.shared.cli`.
"""

from __future__ import annotations

from linmix.shared.cli import App, run_app

APP = App(
    name="physics",
    cli_name="PhysicsCLI",
    model="linmix.apps.physics.lit_module:PhysicsLitModule",
    datamodule="linmix.apps.physics.data:PhysicsDataModule",
    links=(("data.problem", "model.problem"), ("data.n_in", "model.net.n_in"),
           ("data.n_out", "model.net.n_out"), ("data.n_globals", "model.net.n_globals"),
           ("data.transient", "model.net.transient")),
    tools={
        "synth": ("linmix.apps.physics.pde.synth:main",
                  "Generate PDE samples (scikit-fem on random triangle meshes with holes) as npz, in parallel."),
        "import": ("linmix.apps.physics.pde.mesh_import:main",
                   "Turn your own meshes (VTU / VTK / Gmsh / XDMF files, XDMF or .pvd time series) into npz samples."),
        "rollout": ("linmix.apps.physics.rollout_tool:main",
                    "Roll a checkpoint out on one sample; write XDMF/VTU, PNGs and metrics."),
        "export": ("linmix.apps.physics.export:main",
                   "Export a checkpoint to TorchScript, torch.export and ONNX; check each round trip on two "
                   "meshes."),
        "demo": ("linmix.apps.physics.demo:main",
                 "Run the physics app end to end at small size (synth -> fit -> test -> plot -> export)."),
    },
)


def main(argv=None) -> int:
    return run_app(APP, argv)


__getattr__ = APP.module_getattr(__name__)  # <module>.PhysicsCLI: the LightningCLI subclass


if __name__ == "__main__":
    raise SystemExit(main())
