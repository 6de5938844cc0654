"""Lightning Trainer options that count optimizer steps or batches, as they apply to runs counted in env steps.

One training batch here holds whole rounds of collection and updates (``rl_lightning.algorithms.schedule``), so
``trainer.global_step`` (optimizer steps) moves by many per batch. What Lightning counts in steps or batches
either works as documented, or is warned about (with the env-step setting to use) or refused before training:

- ``fast_dev_run=N`` runs N real batches (its ``max_steps=N`` is lifted; a DQN/DDPG warm-up is cut to one
  minibatch so that the batches reach updates);
- ``max_steps`` stops at the first batch that reaches it, often far past it: warned, ``total_steps`` is the budget;
- ``limit_train_batches`` cuts every epoch, and with it the run: warned, ``steps_per_epoch``/``total_steps`` say it;
- ``overfit_batches`` does not apply (every batch is collected afresh): refused;
- ``max_epochs=0``, ``max_steps=0`` and ``limit_train_batches=0`` train nothing: refused;
- whatever ends training before ``total_steps`` (those limits, ``max_time``, ``EarlyStopping``, a callback that
  sets ``should_stop``) is said in the run's last line (``early_stop_reason``).
- ``ModelCheckpoint(every_n_train_steps=...)`` saves irregularly: warned, ``EnvStepCheckpoint`` saves every N env steps;
- ``LearningRateMonitor`` plots against batches, names optimizers by class: warned, the module logs ``lr/<name>``
  against env steps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_warn

from rl_lightning.errors import ConfigurationError
from rl_lightning.lightning_compat import every_n_train_steps, lift_fast_dev_run_step_limit


def check_trainer_options(trainer: L.Trainer) -> None:
    """Warn about, or refuse, Trainer options that count optimizer steps or batches (see the module docstring)."""
    if trainer.overfit_batches:
        raise ConfigurationError(
            f"overfit_batches={trainer.overfit_batches} does not apply to reinforcement learning: every training batch "
            "is collected afresh from the envs; to train less, lower total_steps")
    if trainer.fast_dev_run:
        lift_fast_dev_run_step_limit(trainer)
        return  # its batch limits are the point of it
    for name, value in (("max_epochs", trainer.max_epochs), ("max_steps", trainer.max_steps),
                        ("limit_train_batches", trainer.limit_train_batches)):
        if value is not None and value == 0:
            raise ConfigurationError(
                f"trainer.{name}={value!r} trains nothing: the run would end at once having learned nothing; remove "
                "it (the model's total_steps is the budget in env steps, steps_per_epoch the epoch's length)")
    if trainer.max_steps != -1:
        rank_zero_warn(f"trainer.max_steps={trainer.max_steps} counts optimizer steps (trainer.global_step), several "
                       "per training batch here: training stops at the first batch that reaches it, often past it. "
                       "The budget in env steps is the model's total_steps", stacklevel=1)
    limit = trainer.limit_train_batches
    if limit is not None and not (isinstance(limit, float) and limit == 1.0):  # an int counts batches, 1 too
        rank_zero_warn(f"trainer.limit_train_batches={trainer.limit_train_batches} cuts every epoch to that many "
                       "batches, and the run to the epochs total_steps needs, so it ends before total_steps env "
                       "steps; set steps_per_epoch and total_steps (env steps) instead", stacklevel=1)
    for callback in trainer.checkpoint_callbacks:
        if every_n_train_steps(callback) > 0:
            rank_zero_warn(f"ModelCheckpoint(every_n_train_steps={every_n_train_steps(callback)}) counts optimizer "
                           "steps (trainer.global_step), several per training batch here, so it saves at irregular "
                           "points or never; rl_lightning.callbacks.EnvStepCheckpoint(every_n_env_steps=...) saves "
                           "every N env steps", stacklevel=1)
    if any(isinstance(callback, LearningRateMonitor) for callback in trainer.callbacks):
        rank_zero_warn("LearningRateMonitor plots learning rates against training batches and names optimizers by "
                       "class (lr-Adam, lr-Adam-1); the module already logs lr/<optimizer> (e.g. lr/actor, lr/critic) "
                       "against env steps at every training point", stacklevel=1)


def fast_dev_run_batches(trainer: Any) -> int | None:
    """The batches ``fast_dev_run`` asks for, or ``None`` outside it."""
    runs = getattr(trainer, "fast_dev_run", False)
    return int(runs) if runs else None


def early_stop_reason(trainer: L.Trainer, module: Any) -> str:
    """Why ``fit`` ended before the module's ``total_steps``, as precisely as the trainer tells."""
    from lightning.pytorch.callbacks import EarlyStopping, Timer

    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return (f"EarlyStopping(monitor={callback.monitor!r}) stopped it at epoch {callback.stopped_epoch} "
                    f"(no improvement of more than {callback.min_delta:g} for {callback.patience} evaluations)")
        if isinstance(callback, Timer) and callback.time_remaining() is not None and callback.time_remaining() <= 0:
            return "trainer.max_time ran out"
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return f"trainer.max_steps={trainer.max_steps} optimizer steps were reached"
    limit = trainer.limit_train_batches
    if limit is not None and not (isinstance(limit, float) and limit == 1.0):
        # Before max_epochs: with an unbounded max_epochs the module sets it to the epochs the budget needs.
        return f"trainer.limit_train_batches={limit} cut every epoch short"
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and trainer.current_epoch >= trainer.max_epochs:
        return f"trainer.max_epochs={trainer.max_epochs} was reached"
    return "a callback or the model set trainer.should_stop"
