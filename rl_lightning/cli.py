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
``last.ckpt`` of the config's logger folder and keeps logging to that run.

The model is chosen in the config (``model.class_path: rl_lightning.PPO``)
or on the command line (``--model PPO``); every ``__init__`` argument of
the algorithm is a documented option (``rl-lightning fit --model PPO --help``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningCLI

from rl_lightning.algorithms.base import RLModule
from rl_lightning.checkpointing import CheckpointError

# Deprecation notices from inside Lightning (its CLI on newer jsonargparse, its pytree use on
# newer torch): nothing a user of this command can act on.
warnings.filterwarnings("ignore", message=r"(?s).*(add_instantiator|JsonargparseDeprecationWarning|was deprecated in v4\.)")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)

TRAINER_DEFAULTS: dict[str, Any] = {
    # Training ends when the module's `total_steps` env-step budget is spent, not after a number of epochs.
    "max_epochs": -1,
    # Evaluation episodes before training would only measure the untrained policy.
    "num_sanity_val_steps": 0,
    # One training batch is a whole rollout: log every one.
    "log_every_n_steps": 1,
}


class RLLightningCLI(LightningCLI):
    """LightningCLI with the library's trainer defaults and any ``RLModule`` subclass as the model."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        super().__init__(
            model_class=RLModule,
            subclass_mode_model=True,
            seed_everything_default=False,  # the model's `seed` argument seeds networks and envs
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
            **kwargs,
        )

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit":
            return
        config = self.config["fit"]
        add_default_checkpointing(config)
        if config.get("ckpt_path") == "last":
            resolve_last_checkpoint(config)


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


def resolve_last_checkpoint(config: Namespace) -> None:
    """``--ckpt_path last``: the newest ``last.ckpt`` under the logger's folder; logging continues in its run."""
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
    run = newest.parent.parent.name
    if isinstance(logger, Namespace):
        logger["init_args"]["version"] = run
    else:
        trainer["logger"] = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                      init_args=Namespace(save_dir=str(root), name="lightning_logs", version=run))
    print(f"Resuming from {newest}")


def main(args: ArgsType = None) -> None:
    """Entry point of the ``rl-lightning`` console script."""
    # Small networks run fastest on one thread; respect an explicit OMP_NUM_THREADS. Set as a variable too:
    # Lightning's DDP otherwise gives each process cpu_count / processes threads (and its children inherit it),
    # which on a busy machine made a DDP run 50 times slower than with one thread.
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["export"]:
        from rl_lightning.export import main as export_main

        export_main(argv[1:])
        return
    RLLightningCLI(args=args)

