"""``linmix-physics``: fit / validate / test / predict (LightningCLI) plus the tools synth, rollout, export, demo."""

from __future__ import annotations

from linmix.apps.physics.data import PhysicsDataModule
from linmix.apps.physics.lit_module import PhysicsLitModule
from linmix.shared.cli import LinmixCLI, run_app


class PhysicsCLI(LinmixCLI):
    links = (("data.problem", "model.problem"), ("data.n_in", "model.net.n_in"), ("data.n_out", "model.net.n_out"),
             ("data.n_globals", "model.net.n_globals"), ("data.transient", "model.net.transient"))


def main(argv=None) -> int:
    from linmix.apps.physics.demo import main as demo_main
    from linmix.apps.physics.export import main as export_main
    from linmix.apps.physics.pde.synth import main as synth_main
    from linmix.apps.physics.rollout_tool import main as rollout_main

    tools = {"synth": synth_main, "rollout": rollout_main, "export": export_main, "demo": demo_main}
    return run_app("linmix-physics", PhysicsCLI, PhysicsLitModule, PhysicsDataModule, tools=tools, argv=argv)
