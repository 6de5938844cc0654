"""Callbacks of the library's runs: ``last.ckpt`` that is always current, checkpoints every N env steps, progress
lines off a terminal, and what every run gets (atomic checkpoints, envs closed on errors)."""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rl_lightning.checkpointing import AtomicCheckpointIO
from rl_lightning.errors import ConfigurationError
from rl_lightning.lightning_compat import (end_epoch_in_checkpoint, optimizer_step_of_last_save,
                                           replace_default_checkpoint_io, save_model_checkpoint,
                                           set_optimizer_step_of_last_save)
from rl_lightning.signals import exit_code_for


class LastCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` at the end of every epoch, and when SIGTERM or Ctrl-C stops ``fit``.

    Lightning 2.6's ``ModelCheckpoint(save_last=True, monitor=...)`` refreshes ``last.ckpt`` at an
    epoch's end only in epochs where it also saved a monitored checkpoint (``on_train_epoch_end`` and
    ``on_validation_end`` in ``lightning/pytorch/callbacks/model_checkpoint.py`` save the last one only
    ``if self._last_global_step_saved == trainer.global_step``), so once the best score stops improving
    ``last.ckpt`` stops moving. Here ``last.ckpt`` is the callback's only, unmonitored top-1 file:
    Lightning writes that one every epoch. Keep the best by a metric with a second ``ModelCheckpoint``.

    Lightning skips a save when no optimizer step was taken since the last one; here a save is skipped only when no
    env step was taken, so epochs of an off-policy warm-up (``learning_starts``, no updates yet) are saved too.

    On SIGTERM (``SIGTERMException``, see ``rl_lightning.signals``) or Ctrl-C (``KeyboardInterrupt``)
    the run's state at that moment is written to the same ``last.ckpt``: the weights and optimizers of the
    last completed update, the counters and the envs, so that ``--ckpt_path last`` continues from there.
    Other exceptions (an env fault, a non-finite loss) leave the previous ``last.ckpt`` as it was.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None, **kwargs: Any) -> None:
        # No version counter: always the same last.ckpt, also when a resumed run finds one in the folder.
        super().__init__(dirpath=dirpath, filename=self.CHECKPOINT_NAME_LAST, save_top_k=1, monitor=None,
                         enable_version_counter=False, **kwargs)
        self._interrupt_saved = False
        self._interrupting = False
        self._env_steps_saved: int | None = None

    def _save_if_env_steps_moved(self, hook: Any, trainer: L.Trainer, pl_module: Any) -> None:
        """Run ModelCheckpoint's epoch-end ``hook`` so that it saves when env steps moved since the last save, also
        without an optimizer step in between (see ``optimizer_step_of_last_save``)."""
        env_steps = getattr(pl_module, "env_steps", None)
        if env_steps == self._env_steps_saved:
            return hook(trainer, pl_module)
        previous = optimizer_step_of_last_save(self)
        set_optimizer_step_of_last_save(self, -1)
        hook(trainer, pl_module)
        if optimizer_step_of_last_save(self) == -1:  # no save was due in this hook
            set_optimizer_step_of_last_save(self, previous)
        else:
            self._env_steps_saved = env_steps

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_env_steps_moved(super().on_train_epoch_end, trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_env_steps_moved(super().on_validation_end, trainer, pl_module)

    @property
    def last_checkpoint_path(self) -> str:
        return os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._interrupting:
            end_epoch_in_checkpoint(checkpoint)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if (self._interrupt_saved or not isinstance(exception, (SIGTERMException, KeyboardInterrupt))
                or trainer.state.fn != "fit" or trainer.sanity_checking or self.dirpath is None):
            return
        self._interrupt_saved = True  # the run's own support callback may call this first (before the envs close)
        self._interrupting = True
        try:
            trainer.save_checkpoint(self.last_checkpoint_path, self.save_weights_only)
        finally:
            self._interrupting = False
        if trainer.is_global_zero:
            print(f"Stopped by {'SIGTERM' if isinstance(exception, SIGTERMException) else 'Ctrl-C'}: saved "
                  f"{self.last_checkpoint_path}", file=sys.stderr, flush=True)


def ensure_last_checkpoint(trainer: L.Trainer) -> None:
    """Make ``LastCheckpoint`` the writer of ``last.ckpt`` whatever checkpoint callbacks the trainer was given.

    A config or a Python ``Trainer`` that checkpoints (its own ``ModelCheckpoint``, or Lightning's default one)
    but has no ``LastCheckpoint`` gets one, in the folder of the first callback that asked for ``save_last`` (else
    of the first checkpoint callback). Those callbacks' own ``save_last`` in that folder is turned off: Lightning
    would refresh ``last.ckpt`` only when they save (see ``LastCheckpoint``), and two writers of one file would make
    Lightning's version counter write ``last-v1.ckpt`` beside it. ``enable_checkpointing=False`` (no checkpoint
    callback) adds nothing. Called from ``RLModule.configure_callbacks``, before the callbacks' ``setup``.
    """
    checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    if not checkpoints or any(isinstance(cb, LastCheckpoint) for cb in checkpoints):
        return
    with_last = [cb for cb in checkpoints if cb.save_last]
    dirpath = (with_last or checkpoints)[0].dirpath
    for callback in with_last:
        if callback.dirpath == dirpath:
            callback.save_last = False
    trainer.callbacks.append(LastCheckpoint(dirpath=dirpath))


def output_is_interactive() -> bool:
    """Whether stdout shows a live progress bar well: a terminal, or a Jupyter notebook's output area."""
    return sys.stdout.isatty() or "ipykernel" in sys.modules


class EpochProgress(L.Callback):
    """One line per epoch on stdout when it is not a terminal (a pipe, a log file, a batch job's output).

    A progress bar redrawn in place is unreadable there (and is switched off): each line gives the epoch, the env
    steps, the mean training return (``run/score``), the throughput (``time/steps_per_second``) and, when the
    epoch evaluated, the evaluation return (``eval/return_mean``). On a terminal nothing changes.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.progress_bar_callback is not None and not output_is_interactive():
            trainer.progress_bar_callback.disable()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if output_is_interactive() or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        total = pl_module.hparams.total_steps
        parts = [f"epoch {trainer.current_epoch}", f"env steps {pl_module.env_steps}/{total} "
                                                   f"({100 * pl_module.env_steps / max(total, 1):.0f}%)"]
        if "run/score" in metrics:
            parts.append(f"return {float(metrics['run/score']):.2f}")
        if "time/steps_per_second" in metrics:
            parts.append(f"{float(metrics['time/steps_per_second']):.0f} steps/s")
        if "eval/return_mean" in metrics:
            parts.append(f"eval return {float(metrics['eval/return_mean']):.2f}")
        print(", ".join(parts), flush=True)


class RunSupport(L.Callback):
    """What every run of an ``RLModule`` gets, with any trainer.

    - Checkpoints are written atomically (``AtomicCheckpointIO``) unless the trainer was given its own
      checkpoint IO plugin.
    - The module's envs are closed when fit/validate/test raise or are interrupted (Ctrl-C, SIGTERM): Lightning
      then calls ``on_exception`` on callbacks only, not on the LightningModule, nor its ``teardown``. A
      ``LastCheckpoint`` saves first (while the envs it saves are open; Lightning calls checkpoint callbacks
      last), and a run stopped by SIGTERM exits with 143 (``rl_lightning.signals``).
    """

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        replace_default_checkpoint_io(trainer, AtomicCheckpointIO())

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        exit_code_for(exception)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.on_exception(trainer, pl_module, exception)
        pl_module.close_envs()


class EnvStepCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that saves every ``every_n_env_steps`` environment steps (the run's own unit), instead
    of at epoch ends or every N optimizer steps (``every_n_train_steps`` counts ``trainer.global_step``, which
    moves by many per training batch here).

    A save happens at the end of the first training batch that reaches or passes each multiple of
    ``every_n_env_steps``; files are named by epoch and env steps (``epoch=1-env_steps=4096.ckpt``). The other
    arguments are ``ModelCheckpoint``'s (``dirpath``, ``monitor``, ``save_top_k`` (default: keep every file),
    ``save_last``, ...). Checkpointing is off under ``fast_dev_run``, as Lightning's is.
    """

    def __init__(self, every_n_env_steps: int, **kwargs: Any) -> None:
        if not isinstance(every_n_env_steps, int) or every_n_env_steps < 1:
            raise ConfigurationError(f"every_n_env_steps={every_n_env_steps!r} must be a positive integer")
        kwargs.setdefault("filename", "{epoch}-{env_steps:.0f}")
        kwargs.setdefault("save_top_k", -1)
        kwargs.setdefault("every_n_epochs", 0)  # only the env-step saves
        super().__init__(**kwargs)
        self.every_n_env_steps = every_n_env_steps
        self._saved_intervals: int | None = None  # env_steps // every_n_env_steps at the last save (or the start)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._saved_intervals = pl_module.env_steps // self.every_n_env_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        intervals = pl_module.env_steps // self.every_n_env_steps
        if self._saved_intervals is not None and intervals <= self._saved_intervals:
            return
        self._saved_intervals = intervals
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        save_model_checkpoint(self, trainer, env_steps=torch.tensor(float(pl_module.env_steps)))
