"""One dispatcher for every app's console script: LightningCLI subcommands plus the app's own tools.

``linmix-<app> fit|validate|test|predict ...`` runs the app's LightningCLI (:mod:`linmix.shared.lightning_cli`);
``linmix-<app> <tool> ...`` calls ``tool(argv) -> int`` (each tool parses its own arguments and has its own
``--help``). An app is declared as an :class:`App`: its model, data module and tools are import strings, so this
module and an app's ``cli.py`` import neither torch nor Lightning. ``linmix-<app> --help`` answers from the
declaration alone; a tool's module is imported only when that tool runs, Lightning only for the four training
subcommands.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

from linmix.shared.errors import UserError, debug_enabled
from linmix.shared.loading import load
from linmix.shared.noise import quiet_dependencies

__all__ = ["App", "LIGHTNING_SUBCOMMANDS", "load", "run_app"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_LIGHTNING_HELP = (("fit", "train a model from a YAML config (-c configs/...yaml)"),
                   ("validate", "run the validation loop"), ("test", "evaluate a checkpoint (--ckpt_path)"),
                   ("predict", "score data with a checkpoint"))
Tool = Callable[[Sequence[str]], Optional[int]]


@dataclass(frozen=True, kw_only=True)
class App:
    """What ``linmix-<name>`` dispatches to.

    Args:
        name: short app name (``"ehr"``): the console script is ``linmix-<name>``, logs go to ``runs/<name>``, and
            checkpoints carry it as their stamp.
        model: ``"module:Class"`` of the LightningModule.
        datamodule: ``"module:Class"`` of the LightningDataModule.
        tools: ``{command: ("module:function", one-line summary)}``; the function takes the remaining argv.
        links: ``(source, target)`` or ``(source, target, compute_fn)`` argument links applied on instantiation.
        class_args: ``{group: "module:Class"}`` extra class groups added to the LightningCLI parser.
        cli_name: name of the app's LightningCLI subclass (``"EHRCLI"``).
        subclass_mode_model: ``--model`` takes any subclass (``class_path``) instead of ``model``'s arguments.
    """

    name: str
    model: str
    datamodule: str
    tools: Mapping[str, Tuple[str, str]] = field(default_factory=dict)
    links: Tuple[tuple, ...] = ()
    class_args: Mapping[str, str] = field(default_factory=dict)
    cli_name: str = "LinmixCLI"
    subclass_mode_model: bool = False

    @property
    def prog(self) -> str:
        return f"linmix-{self.name}"

    def cli_class(self) -> type:
        """The app's :class:`linmix.shared.lightning_cli.LinmixCLI` subclass (imports Lightning)."""
        from linmix.shared.lightning_cli import cli_class

        return cli_class(self)

    def module_getattr(self, module: str) -> Callable[[str], Any]:
        """A module-level ``__getattr__`` for the app's ``cli.py``: ``<module>.<cli_name>`` builds the LightningCLI
        subclass on first access (importing Lightning then), for code that instantiates it directly."""

        def __getattr__(name: str) -> Any:
            if name == self.cli_name:
                return self.cli_class()
            raise AttributeError(f"module {module!r} has no attribute {name!r}")

        return __getattr__

    def usage(self) -> str:
        lines = [f"usage: {self.prog} <command> [options]   ({self.prog} <command> --help for details)", "",
                 "training (LightningCLI):"]
        lines += [f"  {name:<10} {text}" for name, text in _LIGHTNING_HELP]
        if self.tools:
            lines += ["", "tools:"]
            lines += [f"  {name:<10} {summary}" for name, (_, summary) in self.tools.items()]
        return "\n".join(lines)


def run_app(app: App, argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a LightningCLI subcommand or one of ``app.tools``.

    A :class:`UserError` raised anywhere below prints ``<prog> <command>: error: <message>`` and returns 2; with
    ``--debug`` (anywhere in ``argv``) or ``LINMIX_DEBUG=1`` its traceback is printed too. Third-party noise is
    filtered first (:func:`linmix.shared.noise.quiet_dependencies`).
    """
    quiet_dependencies()
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        if from_sys:
            sys.argv = [sys.argv[0], *argv]
    try:
        return _dispatch(app, argv, from_sys)
    except UserError as e:
        if debug:
            traceback.print_exc()
        where = f"{app.prog} {argv[0]}" if argv else app.prog
        print(f"{where}: error: {e}", file=sys.stderr)
        return 2


def _dispatch(app: App, argv: list, from_sys: bool) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(app.usage())
        return 0 if argv else 2
    cmd = argv[0]
    if cmd in app.tools:
        tool: Tool = load(app.tools[cmd][0])
        return int(tool(argv[1:]) or 0)
    if cmd not in LIGHTNING_SUBCOMMANDS:
        print(f"{app.prog}: unknown command {cmd!r}\n\n{app.usage()}", file=sys.stderr)
        return 2
    app.cli_class()(
        load(app.model),
        load(app.datamodule),
        args=None if from_sys else argv,  # LightningCLI reads sys.argv itself (passing both warns)
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        subclass_mode_model=app.subclass_mode_model,
    )
    return 0
