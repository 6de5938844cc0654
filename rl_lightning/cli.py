"""The ``rl-lightning`` command: LightningCLI over the library's algorithms.

    rl-lightning fit --config configs/ppo_cartpole.yaml
    rl-lightning validate --config configs/ppo_cartpole.yaml --ckpt_path path/to.ckpt
    rl-lightning test --config configs/ppo_cartpole.yaml --ckpt_path path/to.ckpt
    rl-lightning fit --config configs/ppo_cartpole.yaml --print_config

The model is chosen in the config (``model.class_path: rl_lightning.PPO``)
or on the command line (``--model PPO``); every ``__init__`` argument of
the algorithm is a documented option (``rl-lightning fit --model PPO --help``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from lightning.pytorch.cli import ArgsType, LightningCLI

from rl_lightning.algorithms.base import RLModule

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


def main(args: ArgsType = None) -> None:
    """Entry point of the ``rl-lightning`` console script."""
    # Small networks run fastest on one thread; respect an explicit OMP_NUM_THREADS.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    RLLightningCLI(args=args)

