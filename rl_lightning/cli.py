"""The ``rl-lightning`` command: LightningCLI over the library's algorithms.

    rl-lightning fit --config configs/ppo_cartpole.yaml
    rl-lightning validate --config configs/ppo_cartpole.yaml --ckpt_path path/to.ckpt
    rl-lightning test --config configs/ppo_cartpole.yaml --ckpt_path path/to.ckpt
    rl-lightning fit --config configs/ppo_cartpole.yaml --print_config
    rl-lightning fit --config configs/ppo_cartpole.yaml --ckpt_path last    # continue the latest run
    rl-lightning export --ckpt_path path/to.ckpt --output policy.onnx [--format mlagents]

``fit`` checkpoints by default (unless the config has its own ``ModelCheckpoint``
or ``trainer.enable_checkpointing: false``): ``last.ckpt`` at the end of every
epoch (``steps_per_epoch`` env steps) and the best one by ``eval/return_mean``,
in the run's ``checkpoints/`` folder. ``--ckpt_path last`` resumes the newest
``last.ckpt`` of the config's logger folder and keeps logging to that run; a finished ``fit`` ends with a
line naming its checkpoint folder. ``validate`` and ``test`` print their results and write no run folder.

The model is chosen in the config (``model.class_path: rl_lightning.PPO``)
or on the command line (``--model PPO``); every ``__init__`` argument of
the algorithm is a documented option (``rl-lightning fit --model PPO --help``).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import Namespace
import lightning as L
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from rl_lightning.algorithms.base import RLModule
from rl_lightning.errors import ConfigurationError, RLLightningError
from rl_lightning.run_folder import claim_run_folder, lock_run_folder
from rl_lightning.output_paths import check_output_folders
from rl_lightning.checkpointing import (RENAMED_SETTINGS, CheckpointError, load_checkpoint_file,
                                        require_rl_lightning_state, settings_differences)

# Deprecation notices from inside Lightning (its CLI on newer jsonargparse, its pytree use on
# newer torch): nothing a user of this command can act on.
warnings.filterwarnings("ignore", message=r"(?s).*(add_instantiator|JsonargparseDeprecationWarning|was deprecated in v4\.)")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
# validate/test --ckpt_path: the checkpoint callbacks that wrote it do not matter for an evaluation.
warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")

TRAINER_DEFAULTS: dict[str, Any] = {
    # Training ends when the module's `total_steps` env-step budget is spent, not after a number of epochs.
    "max_epochs": -1,
    # Evaluation episodes before training would only measure the untrained policy.
    "num_sanity_val_steps": 0,
    # One training batch is a whole rollout: log every one.
    "log_every_n_steps": 1,
}


class _ArgumentParser(LightningArgumentParser):
    """Reports a bad option or value as a short message naming the key, instead of the whole usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not getattr(self, "exit_on_error", True) or _show_traceback():
            super().error(message, ex)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        message = condense_parser_message(message)
        for old, new in RENAMED_SETTINGS.items():
            if f"'{old}'" in message:
                message += f" ({old} is now called {new})"
        print(f"rl-lightning: error: {message}\n(the accepted options: {prog} --help)", file=sys.stderr)
        raise SystemExit(2)


_UNION_NOISE = re.compile(r"^\s*(Does not validate against any of the Union subtypes|Subtypes: |Errors:$|"
                          r"- Expected a <class 'NoneType'>|Given value type: |Given value: (Namespace|NestedArg)\()")


# A value outside a setting's declared range (rl_lightning.setting_ranges: "must ..., got ..." from its parser).
_OUT_OF_RANGE = re.compile(r"Not of type [^:\n]+: (must [^\n]*), got ([^\n]*)")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")


def condense_parser_message(message: str) -> str:
    """jsonargparse's message without the lines about the ``model`` setting also accepting None: one line.

    A value outside a setting's range reads as the library's own error for it: ``model.init_args.gamma: 2 must lie
    in [0, 1] (rl_lightning.PPO)`` (a list's item: ``model.init_args.hidden_sizes: 0 must ...``)."""
    out_of_range = _OUT_OF_RANGE.search(message)
    keys = list(_PARSER_KEY.finditer(message[:out_of_range.start()])) if out_of_range else []
    if keys:
        requirement, value = out_of_range.groups()
        class_path = _CLASS_PATH.search(message)
        key = keys[-1].group(1)
        if class_path and len(keys) > 1:
            key = f"{keys[0].group(1)}.init_args.{key}"
        # The setting's own union (e.g. `LearningRate | None`), listed between its key and the failure.
        null = ", or null" if "NoneType" in message[keys[-1].end():out_of_range.start()] else ""
        owner = f" ({class_path.group(1)})" if class_path else ""
        return f"{key}: {value.strip(chr(39))} {requirement}{null}{owner}"
    lines = [line.strip().lstrip("- ").strip() for line in message.splitlines() if not _UNION_NOISE.match(line)]
    return " ".join(line for line in lines if line)


def _show_traceback() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


_CLASS_CHANGE = re.compile(r"^Due to class_path change from '([^']+)' to '([^']+)', discarding init_args: (\{.*\})\.$",
                           re.S)


class _DroppedSettings(logging.Handler):
    """Says which settings a change of algorithm dropped: ``--config ppo.yaml --config dqn.yaml`` or ``--config ppo.yaml
    --model DQN`` train DQN, and jsonargparse drops the first algorithm's settings that DQN does not take, telling
    only its debug log (``discard_init_args_on_class_path_change`` in ``jsonargparse/_typehints.py``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        match = _CLASS_CHANGE.match(record.getMessage())
        if match is None or match.group(0) in self.said:
            return
        self.said.add(match.group(0))
        before, after, dropped = match.groups()
        names = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)': ", dropped)
        print(f"Warning: the model changed from {before} to {after} (a later --config or --model): {before}'s settings "
              f"{', '.join(names)} do not apply to {after.rsplit('.', 1)[-1]} and were dropped; the settings both take "
              f"carry over", file=sys.stderr)


def dropped_settings_logger() -> logging.Logger:
    """The parsers' logger (one per command: each says a change once): only what ``_DroppedSettings`` reports reaches
    the user."""
    logger = logging.getLogger("rl_lightning.cli.settings")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(_DroppedSettings())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


class _SaveConfig(SaveConfigCallback):
    """Lightning's config saving, except without a logger: there is no run folder then, and Lightning would write
    ``config.yaml`` into the working directory (its ``trainer.log_dir`` falls back to ``default_root_dir``)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        super().setup(trainer, pl_module, stage)


class RLLightningCLI(LightningCLI):
    """LightningCLI with the library's trainer defaults and any ``RLModule`` subclass as the model.

    With ``--ckpt_path``, what the config and the command line say is what runs (see ``check_checkpoint``);
    Lightning's own CLI would instead merge the checkpoint's hyperparameters over them.
    """

    current: RLLightningCLI | None = None
    """The instance being built or run, for ``main``'s error handling (the constructor runs the subcommand)."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("parser_kwargs", {"prog": "rl-lightning", "description": DESCRIPTION,
                                            "logger": dropped_settings_logger()})
        kwargs.setdefault("parser_class", _ArgumentParser)
        self.run_dir: tuple[Path, bool] | None = None  # the run's log folder and whether it existed before
        RLLightningCLI.current = self
        super().__init__(
            model_class=RLModule,
            subclass_mode_model=True,
            seed_everything_default=False,  # no global seed unless given: a model without `seed` then runs with 0
            save_config_callback=_SaveConfig,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # No `predict`: the algorithms act through `act()` on envs, not on a prediction dataloader.
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

    def _add_subcommands(self, parser: Any, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # `export` and `configs` are handled by `main` before this parser runs; listed here so that `--help` shows them.
        from jsonargparse import ArgumentParser

        action = getattr(parser, "_subcommands_action", None)  # jsonargparse has no public way to add one
        if action is None:  # another jsonargparse: `--help` then lists Lightning's subcommands only
            return
        for name, text in (("export", EXPORT_HELP), ("configs", CONFIGS_HELP)):
            action.add_subcommand(name, ArgumentParser(description=text), help=text)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if not isinstance(args, (dict, Namespace)):
            check_config_files(list(sys.argv[1:] if args is None else args))
        super().parse_arguments(parser, args)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:  # noqa: BLE001 - reported as a setting's error where it is one, else re-raised
            config = self.config.get(self.subcommand) if self.subcommand else self.config
            refused = refused_instantiation(err, config)
            if refused is None:
                raise
            raise refused from err

    def _parse_ckpt_path(self) -> None:
        """Lightning 2.6 (``LightningCLI._parse_ckpt_path`` in ``lightning/pytorch/cli.py``) loads an explicit
        ``--ckpt_path`` file and parses its ``hyper_parameters`` over the config and the command line, so a new budget,
        algorithm or env given with it would be dropped. Here the config stays as given; ``before_instantiate_classes``
        compares it with the checkpoint."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if self.subcommand == "fit":
            add_default_checkpointing(config)
            add_default_logger(config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            resolve_last_checkpoint(config, continue_logging=self.subcommand == "fit")
        elif ckpt_path is None and self.subcommand in ("validate", "test"):
            print(f"Warning: {self.subcommand} without --ckpt_path evaluates an untrained policy; pass --ckpt_path "
                  "last (the config's newest run) or a checkpoint file", file=sys.stderr)
        if config.get("ckpt_path"):
            check_checkpoint(config, self.subcommand)
        if self.subcommand in ("validate", "test"):
            # An evaluation prints its results (the metrics table and "Evaluation after ..."); with the config's
            # logger it also made a new run folder (lightning_logs/<name>/version_N) each time, holding only an
            # hparams.yaml and one point. Logging into the checkpoint's own run instead would put a second
            # eval/return_mean point at the step fit already evaluated, and there may be no run folder (a
            # checkpoint given by path). So no logger: after `--ckpt_path last` the config's logger has been read.
            config["trainer"]["logger"] = False

    def after_instantiate_classes(self) -> None:
        logger = getattr(getattr(self, "trainer", None), "logger", None)
        if self.subcommand == "fit" and _launching_rank_zero() and isinstance(logger, (TensorBoardLogger, CSVLogger)):
            # Before anything writes into it (config.yaml is written at setup): a new run's own version_N, made
            # atomically, and the folder locked against another fit into it (rl_lightning.run_folder).
            check_output_folders(self.trainer)
            folder, created = claim_run_folder(logger)
            self.run_dir = (folder, not created)
            lock_run_folder(folder)
            return
        log_dir = getattr(logger, "log_dir", None)
        if log_dir:
            self.run_dir = (Path(log_dir), Path(log_dir).exists())


def _launching_rank_zero() -> bool:
    """Whether this process is the one a user started: Lightning's DDP launcher starts the other ranks as copies of the
    command with ``LOCAL_RANK`` (and ``NODE_RANK`` on other machines) set (``_SubprocessScriptLauncher`` in
    ``lightning/pytorch/strategies/launchers/subprocess_script.py``)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


DESCRIPTION = ("Reinforcement learning on PyTorch Lightning. Train with 'rl-lightning fit --config <file>' "
               "('rl-lightning configs' lists the shipped configs), evaluate with 'validate'/'test --ckpt_path "
               "<file|last>', export with 'export'. 'rl-lightning --version' prints the versions; --traceback "
               "shows the full traceback of an error.")
CONFIGS_HELP = "List the configs that come with rl_lightning."
EXPORT_HELP = "Export a checkpoint's policy to ONNX (plain or Unity ML-Agents' format)."


def check_config_files(argv: list[str]) -> None:
    """Each ``--config`` file in ``argv`` must be YAML holding a mapping of settings. jsonargparse refuses an empty
    file, a list or broken YAML without naming the file ("Unexpected config:", "Problems parsing config: ... in
    \"<unicode string>\"")."""
    import yaml

    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        path = Path(value)
        if not path.is_file():  # a missing file, or YAML given inline: jsonargparse's to report
            continue
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigurationError(f"config file {value!r} is not valid YAML{where}: "
                                     f"{getattr(err, 'problem', None) or err}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigurationError(f"config file {value!r} cannot be read: {err}") from None
        if not isinstance(loaded, dict):
            what = "is empty" if loaded is None else f"holds a YAML {type(loaded).__name__}"
            raise ConfigurationError(f"config file {value!r} {what}, not a mapping of settings (model:, trainer:, "
                                     "...); 'rl-lightning configs' lists examples")


def refused_instantiation(err: BaseException, config: Any) -> ConfigurationError | None:
    """The setting behind a failure to build the trainer, its logger or callbacks (``instantiate_classes``), as the
    library's error: a package that is not installed (``WandbLogger`` without wandb), settings Lightning refuses
    (``MisconfigurationException``: ``accelerator: gpu`` without one), a class's constructor that raised. ``None``
    for the model's own failures (its ``ConfigurationError`` is reported as it is; any other is a fault to show)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from rl_lightning.envs.factory import missing_package

    if user_error(err) is not None:
        return None
    chain = []
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        err = err.__cause__ or err.__context__
    class_path = next((m.group(1) for e in chain for m in [_CLASS_PATH.search(str(e))] if m), None)
    if class_path is not None and _is_rl_module(class_path):
        return None
    trainer = config.get("trainer") if isinstance(config, (dict, Namespace)) else None
    accelerator = trainer.get("accelerator") if isinstance(trainer, (dict, Namespace)) else None
    what = class_path or f"trainer.accelerator={accelerator!r}"
    missing = missing_package(chain[0], what)
    if missing is not None:
        return missing
    refused = next((e for e in chain if isinstance(e, MisconfigurationException)), None)
    if refused is not None:
        hint = ""
        if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
            hint = "; torch finds no CUDA GPU on this machine: use --trainer.accelerator cpu (or auto)"
        return ConfigurationError(f"trainer settings refused by Lightning (trainer.accelerator={accelerator!r}): "
                                  f"{refused}{hint}")
    if class_path is not None:
        root = chain[-1]
        first = (str(root).strip().splitlines() or [""])[0]
        return ConfigurationError(f"{class_path} could not be created: {type(root).__name__}: {first}")
    return None


def _is_rl_module(class_path: str) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, RLModule)


def check_checkpoint(config: Namespace, subcommand: str) -> None:
    """Stop before anything is built when ``--ckpt_path`` cannot be loaded into the configured model.

    The file must be a readable rl_lightning checkpoint of the configured algorithm, written with the same
    model-defining settings (``MODEL_SETTINGS``: env, wrappers, network shapes; to resume ``fit`` also
    ``RESUME_SETTINGS``: env copies, buffer size, optimizer). Every other setting (budget, epoch length,
    evaluation, logging, env process settings such as ``file_name``, learning rates) takes the config's value.
    """
    path = config["ckpt_path"]
    checkpoint = load_checkpoint_file(path, mmap=True)
    state = require_rl_lightning_state(checkpoint, path)
    model = config["model"]
    if isinstance(model, Namespace):
        module, _, name = model["class_path"].rpartition(".")
        model_class = getattr(importlib.import_module(module), name)
    else:
        model_class = type(model)
    current = model["init_args"].as_dict() if isinstance(model, Namespace) else dict(model.hparams)
    blocking, _ = settings_differences(model_class, state["algorithm"], checkpoint.get("hyper_parameters", {}),
                                       current, resuming=subcommand == "fit")
    if blocking:
        action = "resume" if subcommand == "fit" else subcommand
        raise CheckpointError(f"checkpoint {str(path)!r} was written with other settings than this config's, which "
                              f"must match to {action} it (checkpoint -> this run): {'; '.join(blocking)}. Use the "
                              "config of the checkpoint's run (config.yaml in its folder), or train a new run "
                              "without --ckpt_path")


def _class_name(entry: Any) -> str:
    path = entry.get("class_path", "") if isinstance(entry, (dict, Namespace)) else type(entry).__name__
    return str(path).rsplit(".", 1)[-1]


def add_default_checkpointing(config: Namespace) -> None:
    """``last.ckpt`` every epoch and the best by ``eval/return_mean``, unless the config checkpoints its own way."""
    trainer = config["trainer"]
    if trainer.get("enable_checkpointing") is False:
        return
    callbacks = trainer.get("callbacks") or []
    if not isinstance(callbacks, list):
        callbacks = [callbacks]
    if any(_class_name(cb) in ("ModelCheckpoint", "LastCheckpoint") for cb in callbacks):
        return
    # last.ckpt from a callback of its own: ModelCheckpoint(save_last=True, monitor=...) rewrites it only in the
    # epochs that improved the best score (see rl_lightning.callbacks.LastCheckpoint). The best one comes first:
    # validate/test --ckpt_path best read the first checkpoint callback's best_model_path.
    defaults = [Namespace(class_path="rl_lightning.callbacks.LastCheckpoint", init_args=Namespace())]
    if config["model"]["init_args"].get("eval_episodes", 1) > 0:
        best = Namespace(save_top_k=1, monitor="eval/return_mean", mode="max", filename="best-{step:.0f}")
        defaults.insert(0, Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=best))
    trainer["callbacks"] = [*callbacks, *defaults]


def add_default_logger(config: Namespace) -> None:
    """Lightning's default logger (``logger`` unset or true), made explicit so that it logs no ``hp_metric``.

    Lightning builds ``TensorBoardLogger(save_dir=default_root_dir, version=SLURMEnvironment.job_id())``
    (``_LoggerConnector.configure_logger``, ``lightning/pytorch/trainer/connectors/logger_connector/
    logger_connector.py``), whose ``default_hp_metric=True`` writes a constant ``hp_metric`` of -1 to every run.
    """
    trainer = config["trainer"]
    if trainer.get("logger") not in (None, True):
        return
    from lightning.fabric.plugins.environments import SLURMEnvironment

    trainer["logger"] = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                  init_args=Namespace(save_dir=str(trainer.get("default_root_dir") or os.getcwd()),
                                                      name="lightning_logs", version=SLURMEnvironment.job_id(),
                                                      default_hp_metric=False))


def resolve_last_checkpoint(config: Namespace, continue_logging: bool = True) -> None:
    """``--ckpt_path last``: the newest ``last.ckpt`` under the logger's folder; with ``continue_logging`` (fit),
    logging continues in its run."""
    trainer = config["trainer"]
    logger = trainer.get("logger")
    root = Path(trainer.get("default_root_dir") or os.getcwd())
    if isinstance(logger, Namespace) and _class_name(logger) in ("TensorBoardLogger", "CSVLogger"):
        args = logger.get("init_args") or Namespace()
        folder = Path(args.get("save_dir") or root) / (args.get("name") if args.get("name") is not None else
                                                     "lightning_logs")
    elif logger in (None, True):
        folder = root / "lightning_logs"
    else:
        raise CheckpointError("--ckpt_path last finds runs through a TensorBoardLogger or CSVLogger's save_dir and "
                              "name; with this logger pass the checkpoint's path instead")
    found = sorted(folder.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(f"--ckpt_path last: no last.ckpt under {folder}/*/checkpoints; train once without "
                              "--ckpt_path (checkpoints are written every epoch), or pass a checkpoint's path")
    newest = found[-1]
    config["ckpt_path"] = str(newest)
    if not continue_logging:
        print(f"Evaluating {newest}")
        return
    run = newest.parent.parent.name
    if isinstance(logger, Namespace):
        logger["init_args"]["version"] = run
    else:
        trainer["logger"] = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                      init_args=Namespace(save_dir=str(root), name="lightning_logs", version=run,
                                                          default_hp_metric=False))
    print(f"Resuming from {newest}")


TRACEBACK_VARIABLE = "RL_LIGHTNING_TRACEBACK"
"""Set to 1 (or pass ``--traceback``) to see the full traceback of an error the command reports in one line."""


def main(args: ArgsType = None) -> None:
    """Entry point of the ``rl-lightning`` console script.

    Errors caused by the input (``ConfigurationError``: settings, files, checkpoints) and env faults
    (``EnvironmentFault``) are printed as one line on stderr, with exit status 2 and 1; a run folder the failed
    command created without writing a checkpoint is removed. ``--traceback`` or ``RL_LIGHTNING_TRACEBACK=1`` shows
    the full traceback instead. SIGTERM ends a run as Ctrl-C does (``last.ckpt`` saved) with status 143.
    """
    # Small networks run fastest on one thread; respect an explicit OMP_NUM_THREADS. Set as a variable too:
    # Lightning's DDP otherwise gives each process cpu_count / processes threads (and its children inherit it),
    # which on a busy machine made a DDP run 50 times slower than with one thread.
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    argv = list(sys.argv[1:] if args is None else args)
    if "--traceback" in argv:
        os.environ[TRACEBACK_VARIABLE] = "1"
        argv = [a for a in argv if a != "--traceback"]
    show_traceback = _show_traceback()
    if argv[:1] == ["--version"]:
        print(version_text())
        return
    if argv[:1] == ["configs"]:
        list_configs(argv[1:])
        return
    RLLightningCLI.current = None
    try:
        if argv[:1] == ["export"]:
            from rl_lightning.export import main as export_main

            export_main(argv[1:])
            return
        if args is None:  # LightningCLI warns when given args besides the command line's: pass them as the latter
            sys.argv = [sys.argv[0], *argv]
        RLLightningCLI(args=None if args is None else argv)
    except Exception as err:  # noqa: BLE001 - reported below, or re-raised
        reported = user_error(err)
        if reported is None or show_traceback:
            raise
        _remove_unused_run_folder(RLLightningCLI.current)
        print(f"rl-lightning: error: {reported}", file=sys.stderr)
        print(f"(the full traceback: rerun with --traceback or {TRACEBACK_VARIABLE}=1)", file=sys.stderr)
        raise SystemExit(reported.exit_code) from None


def user_error(err: BaseException) -> RLLightningError | None:
    """The library's error behind ``err`` (jsonargparse wraps errors raised while it instantiates the model), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, RLLightningError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _remove_unused_run_folder(cli: RLLightningCLI | None) -> None:
    """A run folder the failed command created, unless something worth keeping (a checkpoint) is in it."""
    if cli is None or cli.run_dir is None:
        return
    folder, existed = cli.run_dir
    if existed or not folder.is_dir() or any(folder.rglob("*.ckpt")):
        return
    shutil.rmtree(folder, ignore_errors=True)
    # Then the folders above it that are left empty: the run name's, and the logger's save_dir (lightning_logs).
    for parent in list(folder.parents)[:2]:
        if parent == Path.cwd() or not parent.is_dir() or any(parent.iterdir()):
            break
        try:
            parent.rmdir()
        except OSError:  # a mount point (EBUSY), or a folder this user may not remove: left as it is
            break


def version_text() -> str:
    """``rl-lightning --version``: this package's version and those of what it runs on."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"rl-lightning {of('rl_lightning')} (lightning {of('lightning')}, torch {of('torch')}, gymnasium "
            f"{of('gymnasium')}, mlagents-envs {of('mlagents-envs')}; Python {sys.version.split()[0]})")


def shipped_configs() -> list[Path]:
    """The configs that come with the library: ``configs/`` of a source checkout (an editable install), else those
    installed under ``<prefix>/share/rl_lightning/configs``."""
    source = Path(__file__).resolve().parent.parent / "configs"
    installed = Path(sys.prefix) / "share" / "rl_lightning" / "configs"
    for folder in (source, installed):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return sorted(folder.glob("*.yaml"))
    return []


def list_configs(argv: list[str]) -> None:
    """``rl-lightning configs``: each shipped config's path and the first line of its leading comment."""
    if argv and argv[0] in ("-h", "--help"):
        print("usage: rl-lightning configs\n\nList the configs that come with rl_lightning (use one with "
              "rl-lightning fit --config <path>).")
        return
    configs = shipped_configs()
    if not configs:
        print("no configs found (they ship in the source repository's configs/ folder)", file=sys.stderr)
        raise SystemExit(1)
    width = max(len(p.stem) for p in configs)
    for path in configs:
        print(f"{path.stem:<{width}}  {_config_summary(path)}")
    print(f"\nin {configs[0].parent}; train one with: rl-lightning fit --config {configs[0].parent}/<name>.yaml")


def _config_summary(path: Path, width: int = 100) -> str:
    """The first sentence of the config's leading comment, shortened to ``width`` characters."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.lstrip("# ").startswith("rl-lightning"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(w for w in words if w)
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= width else sentence[:width - 3].rsplit(" ", 1)[0] + "..."
