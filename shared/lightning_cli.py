"""The LightningCLI behind ``linmix-<app> fit|validate|test|predict``; imported only when one of those runs.

:class:`LinmixCLI` adds linmix's trainer defaults, the argument links and extra class groups an app declares
(:class:`linmix.shared.cli.App`), weights-only vetting of every checkpoint the Trainer reads (``--ckpt_path``), glibc
malloc thresholds that keep freed activation buffers for reuse (:mod:`linmix.shared.allocator`), and a model summary
without Lightning's FLOPs column when there is nothing to count. :func:`cli_class` turns an ``App`` into
its named subclass (``EHRCLI``, ``PhysicsCLI``, ...).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, ModelSummary, OnExceptionCheckpoint, RichModelSummary
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from linmix.shared.allocator import tune_malloc
from linmix.shared.checkpoint import read_checkpoint
from linmix.shared.errors import UserError
from linmix.shared.loading import load

__all__ = ["LinmixCLI", "cli_class", "last_checkpoint", "trainer_defaults", "SummaryWithoutFlops",
           "RichSummaryWithoutFlops"]


class LinmixCLI(LightningCLI):
    """LightningCLI with linmix defaults.

    Class attributes (set per app by :func:`cli_class`): ``links``: ``(source, target)`` or
    ``(source, target, compute_fn)`` pairs linked on instantiation (derived sizes from the data module to the model);
    ``class_args``: ``{group: "module:Class"}`` extra class groups (``linmix-ehr predict --predictions.output``);
    ``app_name``: the app's short name (checkpoint stamps, ``runs/<app>``).
    """

    links: Tuple[tuple, ...] = ()
    class_args: Mapping[str, str] = {}
    app_name: str = "linmix"

    def __init__(self, *args: Any, app: str | None = None, **kwargs: Any) -> None:
        self.app = app or self.app_name
        tune_malloc()  # reuse freed activation buffers (linmix.shared.allocator)
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
        before = self._model_settings(sub)
        with torch.serialization.safe_globals(self._checkpoint_globals()):
            super()._parse_ckpt_path()
        if ckpt_path and before:
            self._reconcile_ckpt_settings(sub, str(ckpt_path), before)

    def _model_settings(self, sub) -> Dict[str, Any]:
        model = self.config[sub].get("model") if sub else None
        return {k: model.get(k) for k in model.keys()} if model is not None and hasattr(model, "keys") else {}

    def _reconcile_ckpt_settings(self, sub: str, ckpt_path: str, before: Dict[str, Any]) -> None:
        """Lightning replaces ``--model.*`` with the checkpoint's hyperparameters. The model's ``runtime_hparams``
        (settings that do not change the network, e.g. an output folder) keep the value given; any other value the
        user set and the checkpoint replaced is named on stderr (once, by the first process)."""
        after = self._model_settings(sub)
        defaults = self.parser._subcommands_action._name_parser_map[sub].get_defaults().get("model")
        runtime = tuple(getattr(self.model_class, "runtime_hparams", ()))
        replaced = []
        for k, v in before.items():
            default = defaults.get(k) if defaults is not None else None
            if k not in after or after[k] == v or v == default:
                continue
            if k in runtime or k.split(".")[0] in runtime:
                self.config[sub]["model"][k] = v
            else:
                replaced.append(f"model.{k}: {v!r} -> {after[k]!r}")
        if replaced and os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"linmix-{self.app} {sub}: --ckpt_path {ckpt_path} sets the network as trained; the checkpoint's "
                  f"values replace: {'; '.join(replaced)}", file=sys.stderr)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> Dict[str, Any]:
        """Every checkpoint the Trainer reads (``--ckpt_path``) is unpickled weights-only, whatever the flags say;
        ``--ckpt_path last`` is resolved here (:func:`last_checkpoint`) and vetted like a named file."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("weights_only") is False:
            raise UserError("--weights_only false is not supported: linmix loads checkpoints weights-only")
        if kwargs.get("ckpt_path") == "last":
            kwargs["ckpt_path"] = last_checkpoint(self.trainer, model=self.model)
            read_checkpoint(kwargs["ckpt_path"], app=self.app, safe_globals=self._checkpoint_globals())
            if os.environ.get("LOCAL_RANK", "0") == "0":
                print(f"linmix-{self.app} {subcommand}: --ckpt_path last -> {kwargs['ckpt_path']}", file=sys.stderr)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            kwargs["weights_only"] = True
        return kwargs

    def _run_subcommand(self, subcommand: str) -> None:
        """A checkpoint whose weights do not fit the network the command built (``--ckpt_path last`` keeps the
        command's ``--model.*``; a named file brings its own) is one line, not a state-dict traceback."""
        with torch.serialization.safe_globals(self._checkpoint_globals()):
            try:
                super()._run_subcommand(subcommand)
            except RuntimeError as e:
                lines = str(e).strip().splitlines()
                if not lines or not lines[0].startswith("Error(s) in loading state_dict"):
                    raise
                detail = lines[1].strip()[:200] if len(lines) > 1 else lines[0]
                raise UserError(f"--ckpt_path {getattr(self.trainer, 'ckpt_path', None)} does not fit the network "
                                f"of this command ({detail}); give the --model settings it was trained with") from None

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(trainer_defaults(self.app))
        for link in self.links:
            src, dst = link[0], link[1]
            fn = link[2] if len(link) > 2 else None
            parser.link_arguments(src, dst, compute_fn=fn, apply_on="instantiate")
        for group, target in self.class_args.items():
            parser.add_lightning_class_args(load(target), group)

    def before_instantiate_classes(self) -> None:
        """``trainer.default_root_dir`` (flag or config) moves the default CSV logs, and with them the checkpoints,
        from ``runs/<app>`` to that folder; a logger the config names itself keeps its own folder."""
        sub = self.config.get("subcommand")
        trainer = (self.config[sub] if sub else self.config).get("trainer")
        root = trainer.get("default_root_dir") if trainer is not None else None
        logger = trainer.get("logger") if trainer is not None else None
        default = trainer_defaults(self.app)["trainer.logger"]
        if root and logger is not None and getattr(logger, "class_path", None) == default["class_path"]:
            args = logger.init_args
            if str(args.get("save_dir")) == default["init_args"]["save_dir"]:
                args.save_dir = str(root)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks = [_without_flops(cb) for cb in trainer.callbacks]
        return trainer


def last_checkpoint(trainer: Trainer, *, model: Any = None) -> str:
    """The newest ``last*.ckpt`` of the trainer's checkpoint callbacks (and of those ``model.configure_callbacks``
    returns, which replace them once fitting starts), as ``--ckpt_path last`` means it.

    Lightning looks only in the folder the *new* run writes to, which for a versioned logger (the default CSV logs,
    ``<save_dir>/<name>/version_N/checkpoints``) is a fresh ``version_N`` holding nothing: a resumed fit would start
    over. Here a callback without ``dirpath`` is looked up in every version of the logger's folder, as well as where
    Lightning looks (a ``dirpath``, ``OnExceptionCheckpoint``); the newest file by modification time wins, so after
    a ``kill -9`` it is the last checkpoint the killed run wrote (mid-epoch when validation or a step interval saved it).

    Raises:
        UserError: no such checkpoint.
    """
    found = {Path(cb.ckpt_path) for cb in trainer.callbacks if isinstance(cb, OnExceptionCheckpoint)}
    where = []
    own = model.configure_callbacks() if model is not None and hasattr(model, "configure_callbacks") else []
    own = list(own) if isinstance(own, (list, tuple)) else [own]
    for cb in [*trainer.checkpoint_callbacks, *own]:
        if not isinstance(cb, ModelCheckpoint):
            continue
        found |= {Path(p) for p in cb._find_last_checkpoints(trainer)}
        if cb.dirpath is None and trainer.loggers:
            logger = trainer.loggers[0]
            root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")
            found |= {p for p in root.glob(f"*/checkpoints/{cb.CHECKPOINT_NAME_LAST}*{cb.FILE_EXTENSION}")}
            where.append(str(root / "*" / "checkpoints"))
        else:
            where.append(str(cb.dirpath or Path(trainer.default_root_dir) / "checkpoints"))
    found = {p for p in found if p.is_file()}
    if not found:
        folders = ", ".join(dict.fromkeys(where)) or "any checkpoint folder"
        raise UserError(f"--ckpt_path last: no last checkpoint in {folders} (fit saves last.ckpt there); "
                        "name a checkpoint file instead")
    return str(max(found, key=lambda p: p.stat().st_mtime_ns))


def trainer_defaults(app: str) -> Dict[str, Any]:
    """CSV logs under ``runs/<app>``, last + best checkpoints kept."""
    return {
        "trainer.logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": f"runs/{app}"}},
        "trainer.callbacks": [
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
        ],
    }


_CLASSES: Dict[str, type] = {}


def cli_class(app: Any) -> type:  # app: linmix.shared.cli.App (not imported: no cycle)
    """The app's :class:`LinmixCLI` subclass (``linmix.apps.ehr.cli.EHRCLI``), made once per app."""
    if app.name not in _CLASSES:
        attrs = {"links": tuple(app.links), "class_args": dict(app.class_args), "app_name": app.name,
                 "__module__": f"linmix.apps.{app.name}.cli", "__doc__": f"LightningCLI of ``{app.prog}``."}
        _CLASSES[app.name] = type(app.cli_name, (LinmixCLI,), attrs)
    return _CLASSES[app.name]


def _drop_flops(summary_data: list) -> list:
    return [(name, column) for name, column in summary_data if name != "FLOPs"]


class SummaryWithoutFlops(ModelSummary):
    """Lightning's text model summary; without the FLOPs column and total when no FLOPs were counted (Lightning
    counts them only for a module with ``example_input_array``, and shows 0 otherwise)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        if total_flops:
            return ModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                          total_training_modes, total_flops, **summarize_kwargs)
        from pytorch_lightning.callbacks.model_summary import log
        from pytorch_lightning.utilities.model_summary.model_summary import _format_summary_table

        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes, 0,
                                      *_drop_flops(summary_data))
        log.info("\n" + table.rsplit("\n", 1)[0])  # the last line is "Total Flops"


class RichSummaryWithoutFlops(RichModelSummary):
    """:class:`~pytorch_lightning.callbacks.RichModelSummary` without the FLOPs column and total when none were
    counted."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        if total_flops:
            return RichModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                              total_training_modes, total_flops, **summarize_kwargs)
        from rich import get_console
        from rich.table import Table

        summary_data = _drop_flops(summary_data)
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        right = {"Params", "Params per Device", "In sizes", "Out sizes"}
        for name, _ in summary_data:
            table.add_column(name, style="dim" if name == " " else None, justify="right" if name in right else "left",
                             no_wrap=name == "Name")
        for row in zip(*(column for _, column in summary_data)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        grid = Table.grid(expand=True)
        grid.add_column()
        for label, value in (("Trainable params", get_human_readable_count(int(trainable_parameters))),
                             ("Non-trainable params", get_human_readable_count(int(total_parameters
                                                                                   - trainable_parameters))),
                             ("Total params", get_human_readable_count(int(total_parameters))),
                             ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
                             ("Modules in train mode", total_training_modes["train"]),
                             ("Modules in eval mode", total_training_modes["eval"])):
            grid.add_row(f"[bold]{label}[/]: {value}")
        console.print(grid)


def _without_flops(callback: Any) -> Any:
    """Lightning's own summary callbacks (exact types, as the Trainer adds them) -> the FLOPs-free ones."""
    swap = {ModelSummary: SummaryWithoutFlops, RichModelSummary: RichSummaryWithoutFlops}.get(type(callback))
    if swap is None:
        return callback
    return swap(max_depth=callback._max_depth, **callback._summarize_kwargs)
