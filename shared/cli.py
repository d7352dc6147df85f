"""One dispatcher for every app's console script: LightningCLI subcommands plus the app's own tools.

``linmix-<app> fit|validate|test|predict ...`` runs the app's :class:`LinmixCLI`; ``linmix-<app> <tool> ...`` calls
``tool(argv) -> int`` (each tool parses its own arguments with argparse and has its own ``--help``).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from pytorch_lightning.cli import LightningCLI

__all__ = ["LinmixCLI", "run_app", "LIGHTNING_SUBCOMMANDS"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
Tool = Callable[[Sequence[str]], Optional[int]]


class LinmixCLI(LightningCLI):
    """LightningCLI with linmix defaults. Subclasses set ``links``: ``(source, target)`` or
    ``(source, target, compute_fn)`` pairs linked on instantiation (derived sizes from the data module to the model)."""

    links: Tuple[tuple, ...] = ()

    def __init__(self, *args: Any, app: str = "linmix", **kwargs: Any) -> None:
        self.app = app
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(trainer_defaults(self.app))
        for link in self.links:
            src, dst = link[0], link[1]
            fn = link[2] if len(link) > 2 else None
            parser.link_arguments(src, dst, compute_fn=fn, apply_on="instantiate")


def trainer_defaults(app: str) -> Dict[str, Any]:
    """CSV logs under ``runs/<app>``, last + best checkpoints kept."""
    return {
        "trainer.logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": f"runs/{app}"}},
        "trainer.callbacks": [
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
        ],
    }


def _usage(prog: str, tools: Dict[str, Tool]) -> str:
    lines = [f"usage: {prog} <command> [options]   ({prog} <command> --help for details)", "", "training (LightningCLI):"]
    for name, text in (("fit", "train a model from a YAML config (-c configs/...yaml)"),
                       ("validate", "run the validation loop"), ("test", "evaluate a checkpoint (--ckpt_path)"),
                       ("predict", "score data with a checkpoint")):
        lines.append(f"  {name:<10} {text}")
    if tools:
        lines += ["", "tools:"]
        for name, fn in tools.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            lines.append(f"  {name:<10} {doc[0] if doc else ''}")
    return "\n".join(lines)


def run_app(
    prog: str,
    cli_class: type,
    model_class: type,
    datamodule_class: type,
    tools: Optional[Dict[str, Tool]] = None,
    argv: Optional[Sequence[str]] = None,
    subclass_mode_model: bool = False,
) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a LightningCLI subcommand or one of ``tools``."""
    tools = dict(tools or {})
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    app = prog.removeprefix("linmix-")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(prog, tools))
        return 0 if argv else 2
    cmd = argv[0]
    if cmd in tools:
        return int(tools[cmd](argv[1:]) or 0)
    if cmd not in LIGHTNING_SUBCOMMANDS:
        print(f"{prog}: unknown command {cmd!r}\n\n{_usage(prog, tools)}", file=sys.stderr)
        return 2
    cli_class(
        model_class,
        datamodule_class,
        args=None if from_sys else argv,  # LightningCLI reads sys.argv itself (passing both warns)
        save_config_kwargs={"overwrite": True},
        app=app,
        seed_everything_default=0,
        subclass_mode_model=subclass_mode_model,
    )
    return 0
