"""One dispatcher for every app's console script: LightningCLI subcommands plus the app's own tools.

``linmix-<app> fit|validate|test|predict ...`` runs the app's :class:`LinmixCLI`; ``linmix-<app> <tool> ...`` calls
``tool(argv) -> int`` (each tool parses its own arguments with argparse and has its own ``--help``).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from linmix.shared.checkpoint import read_checkpoint
from linmix.shared.errors import UserError, debug_enabled
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

    def _checkpoint_globals(self) -> list:
        return list(getattr(self.model_class, "checkpoint_globals", ()))

    def _parse_ckpt_path(self) -> None:
        """Vet ``--ckpt_path`` (weights-only, right app, one clear line otherwise) before Lightning reads it."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and not str(ckpt_path).startswith(
                "registry:"):
            if not Path(ckpt_path).is_file():
                raise UserError(f"--ckpt_path {ckpt_path}: no such file")
            read_checkpoint(ckpt_path, app=self.app, safe_globals=self._checkpoint_globals())
        with torch.serialization.safe_globals(self._checkpoint_globals()):
            super()._parse_ckpt_path()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> Dict[str, Any]:
        """Every checkpoint the Trainer reads (``--ckpt_path``) is unpickled weights-only, whatever the flags say."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("weights_only") is False:
            raise UserError("--weights_only false is not supported: linmix loads checkpoints weights-only")
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            kwargs["weights_only"] = True
        return kwargs

    def _run_subcommand(self, subcommand: str) -> None:
        with torch.serialization.safe_globals(self._checkpoint_globals()):
            super()._run_subcommand(subcommand)

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
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a LightningCLI subcommand or one of ``tools``.

    A :class:`UserError` raised anywhere below prints ``<prog> <command>: error: <message>`` and returns 2; with
    ``--debug`` (anywhere in ``argv``) or ``LINMIX_DEBUG=1`` its traceback is printed too.
    """
    tools = dict(tools or {})
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        if from_sys:
            sys.argv = [sys.argv[0], *argv]
    try:
        return _dispatch(prog, cli_class, model_class, datamodule_class, tools, argv, from_sys, subclass_mode_model)
    except UserError as e:
        if debug:
            traceback.print_exc()
        where = f"{prog} {argv[0]}" if argv else prog
        print(f"{where}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(prog: str, cli_class: type, model_class: type, datamodule_class: type, tools: Dict[str, Tool],
              argv: list, from_sys: bool, subclass_mode_model: bool) -> int:
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
