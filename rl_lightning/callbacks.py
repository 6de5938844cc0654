"""Callbacks of the library's runs: ``last.ckpt`` that is always current, checkpoints every N env steps, progress
lines off a terminal, and what every run gets (atomic checkpoints, envs closed on errors)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, RichModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

from rl_lightning.checkpointing import AtomicCheckpointIO
from rl_lightning.errors import ConfigurationError
from rl_lightning.lightning_compat import (end_epoch_in_checkpoint, model_summary_depth, optimizer_step_of_last_save,
                                           replace_default_checkpoint_io, save_model_checkpoint,
                                           set_optimizer_step_of_last_save)
from rl_lightning.run_folder import release_run_folders
from rl_lightning.signals import Interrupted, exit_code_for, stop_signals


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

    On SIGTERM or Ctrl-C (``SIGTERMException``, ``Interrupted``: see ``rl_lightning.signals``), which stop the
    run between env steps, the run's state at that moment is written to the same ``last.ckpt``: the weights and
    optimizers of the last completed update, the counters and the envs, so that ``--ckpt_path last`` continues
    from there. A bare ``KeyboardInterrupt`` (a second Ctrl-C) may come in the middle of an update: nothing is saved.
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
        if not isinstance(exception, SIGTERMException):
            # A KeyboardInterrupt raised where the process was (a second Ctrl-C, or Ctrl-C outside the main thread):
            # possibly in the middle of an update, so its state is not saved.
            if trainer.is_global_zero:
                print(f"Stopped by Ctrl-C at once: {self.last_checkpoint_path} left as it was (the last epoch end)",
                      file=sys.stderr, flush=True)
            return
        self._interrupting = True
        try:
            with stop_signals.saving():
                trainer.save_checkpoint(self.last_checkpoint_path, self.save_weights_only)
        finally:
            self._interrupting = False
        if trainer.is_global_zero:
            print(f"Stopped by {'Ctrl-C' if isinstance(exception, Interrupted) else 'SIGTERM'}: saved "
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


class ParameterSummary(ModelSummary):
    """Lightning's model summary (layers, parameters, modes) without its FLOPs column when it measured no FLOPs.

    Lightning 2.6's summary always has a FLOPs column and a "Total FLOPs" line (``ModelSummary.on_fit_start`` in
    ``lightning/pytorch/callbacks/model_summary.py``, ``RichModelSummary.summarize``), measured only in a forward
    pass on the module's ``example_input_array`` (``Summary._forward_example_input`` in
    ``lightning/pytorch/utilities/model_summary/model_summary.py``). The library's modules act on envs and have
    none, so the column read 0 everywhere; Lightning has no setting to leave it out, hence a table of our own.
    FLOPs that were measured are shown in Lightning's own table.
    """

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        if total_flops:
            ModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                   total_training_modes, total_flops, **summarize_kwargs)
            return
        columns = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
        widths = [max([len(name), *map(len, values)]) for name, values in columns]
        header = " | ".join(name.ljust(w) for (name, _), w in zip(columns, widths))
        lines = [header, "-" * len(header)]
        for row in zip(*(values for _, values in columns)):
            lines.append(" | ".join(v.ljust(w) for v, w in zip(row, widths)))
        lines.append("-" * len(header))
        totals = [(get_human_readable_count(trainable_parameters), "Trainable params"),
                  (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
                  (get_human_readable_count(total_parameters), "Total params"),
                  (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
                  (str(total_training_modes["train"]), "Modules in train mode"),
                  (str(total_training_modes["eval"]), "Modules in eval mode")]
        lines += [f"{value:<10} {what}" for value, what in totals]
        rank_zero_info("\n" + "\n".join(lines))


def use_parameter_summary(trainer: L.Trainer) -> None:
    """Put ``ParameterSummary`` in place of the trainer's default model summary (``enable_model_summary``), keeping
    its depth. A summary callback the user chose (a subclass, or none) is left as it is."""
    for i, callback in enumerate(trainer.callbacks):
        if type(callback) in (ModelSummary, RichModelSummary):
            trainer.callbacks[i] = ParameterSummary(max_depth=model_summary_depth(callback))


class RunSupport(L.Callback):
    """What every run of an ``RLModule`` gets, with any trainer.

    - Checkpoints are written atomically (``AtomicCheckpointIO``) unless the trainer was given its own
      checkpoint IO plugin.
    - The module's envs are closed when fit/validate/test raise or are interrupted (Ctrl-C, SIGTERM): Lightning
      then calls ``on_exception`` on callbacks only, not on the LightningModule, nor its ``teardown``. A
      ``LastCheckpoint`` saves first (while the envs it saves are open; Lightning calls checkpoint callbacks
      last), and a run stopped by SIGTERM exits with 143, by Ctrl-C with 130 (``rl_lightning.signals``).
    - During ``fit``, Ctrl-C asks the run to stop at a consistent point, and a stop asked for by Ctrl-C or SIGTERM
      that does not come within ``stop_timeout()`` ends the process (``StopSignals``).
    """

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        replace_default_checkpoint_io(trainer, AtomicCheckpointIO())
        use_parameter_summary(trainer)  # before on_fit_start, where the summary is printed

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # Here, after Lightning registered its SIGTERM handler (which ours then calls); Lightning's teardown puts
        # back the handlers from before the run, for SIGINT too.
        stop_signals.install()  # Ctrl-C stops at a consistent point; a stop takes bounded time

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        # One line per checkpoint folder: where to find the run's checkpoints (before the module's own last lines:
        # Lightning calls the callbacks' on_fit_end first).
        if not trainer.is_global_zero:
            return
        for folder in dict.fromkeys(Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if cb.dirpath):
            names = sorted((p.name for p in folder.glob("*.ckpt")), key=lambda n: (not n.startswith("last"), n))
            if names:
                print(f"Checkpoints: {folder} ({', '.join(names)})")

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            stop_signals.uninstall()
            release_run_folders()

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        exit_code_for(exception)
        try:
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, LastCheckpoint):
                    callback.on_exception(trainer, pl_module, exception)
            pl_module.close_envs()
        finally:
            if trainer.state.fn == "fit":
                stop_signals.uninstall()
                release_run_folders()


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
