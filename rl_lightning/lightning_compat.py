"""The library's one door into Lightning's internals: each private or undocumented part it relies on, in one place.

Written against Lightning ``>=2.4,<2.7`` (``setup.cfg``'s ``install_requires``; read in 2.6's source). Everything
else in the package uses only Lightning's public, documented API (``trainer.global_step``, ``trainer.max_epochs``,
``trainer.should_stop``, ``trainer.received_sigterm``, ``trainer.strategy.reduce`` ...). Each function below names
the Lightning file and attribute it reaches and why the library needs it; ``tests/test_lightning_compat.py`` runs a
real small fit and checks each one still exists and behaves so, so that a Lightning upgrade that changes one of them
fails there, by name, rather than deep in a training run.

Relied on elsewhere, without a call: ``rl_lightning/cli.py`` overrides ``LightningCLI._parse_ckpt_path``
(``lightning/pytorch/cli.py``) to keep the config over a checkpoint's hyperparameters (checked by the same test file).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import DDPStrategy, Strategy


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` runs in, or ``None`` outside any Trainer call.

    ``LightningModule.trainer`` (``lightning/pytorch/core/module.py``) raises when no trainer is attached; the library's
    modules are also used on their own (export, acting, tests), so they ask the private ``_trainer`` it reads.
    """
    return module._trainer


def world_size(module: L.LightningModule) -> int:
    """Processes of the run ``module`` is in (DDP ranks); 1 outside any Trainer call."""
    trainer = attached_trainer(module)
    return trainer.world_size if trainer is not None else 1


def fitting(module: L.LightningModule) -> bool:
    """Whether ``module`` is in a ``Trainer.fit`` call (not validate, test, or none)."""
    trainer = attached_trainer(module)
    return trainer is not None and trainer.state.fn == "fit"


def optimizer_step_progress(trainer: L.Trainer) -> Any | None:
    """The counter behind ``trainer.global_step`` under manual optimization, for ``count_optimizer_steps``.

    ``_TrainingEpochLoop.global_step`` (``lightning/pytorch/loops/training_epoch_loop.py``) is
    ``fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed``; Lightning's optimizer wrapper moves
    it (``loops/optimization/manual.py``, ``_on_before_step``/``_on_after_step``). ``GradientStepper``'s direct route
    steps the torch optimizer itself, so it moves the counter for it and ``global_step`` (``max_steps``, step-based
    checkpoints, loggers' x axis) keeps counting. ``None`` if the trainer has no such loop (the count is then skipped).
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return getattr(getattr(loop, "manual_optimization", None), "optim_step_progress", None)


def count_optimizer_steps(progress: Any | None, n: int = 1) -> None:
    """Count ``n`` optimizer steps on ``optimizer_step_progress(trainer)``, as Lightning's optimizer wrapper would."""
    if progress is None:
        return
    for _ in range(n):
        progress.increment_ready()
        progress.increment_completed()


def plain_precision(strategy: Strategy) -> bool:
    """Whether the strategy's precision plugin does nothing to a backward or step beyond calling hooks (32-bit).

    ``precision="32-true"`` gives the base ``Precision`` (``lightning/pytorch/trainer/connectors/
    accelerator_connector.py``, ``_check_and_init_precision``), whose ``pre_backward``/``post_backward`` only call the
    ``on_before_backward``/``on_after_backward`` hooks (``plugins/precision/precision.py``); with no hook overridden,
    ``GradientStepper`` may then skip the plugin and call ``strategy.pre_backward``, ``loss.backward()`` and
    ``strategy.post_backward`` as ``Strategy.backward`` (``strategies/strategy.py``) would.
    """
    return type(strategy.precision_plugin) is Precision


def logs_due(trainer: L.Trainer) -> bool:
    """Whether Lightning's ``log_every_n_steps`` rule writes this batch's logged values.

    ``_LoggerConnector.should_update_logs`` (``lightning/pytorch/trainer/connectors/logger_connector/
    logger_connector.py``; Lightning's own ``LearningRateMonitor`` and ``ThroughputMonitor`` ask it too) is the rule;
    ``RLModule`` asks it before reducing episode statistics across ranks, which is only worth doing for a point that is
    written. ``True`` (write) if the connector is missing.
    """
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def batches_fetched_this_epoch(trainer: L.Trainer) -> int:
    """Training batches of the current epoch fetched so far, the one being trained on included.

    ``fit_loop.epoch_loop.batch_progress.current.ready`` (``lightning/pytorch/loops/training_epoch_loop.py``:
    incremented in ``advance`` once the batch is fetched, before ``training_step``; ``epoch_loop.batch_idx`` is it
    minus one).
    Compared with ``trainer.num_training_batches`` it tells an epoch's last batch, whose training point is always
    written so that epoch-end callbacks see fresh values.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def set_max_epochs(trainer: L.Trainer, epochs: int) -> None:
    """Set the epoch limit of a running ``fit``.

    ``trainer.max_epochs`` is read-only; it reads ``fit_loop.max_epochs`` (``lightning/pytorch/trainer/trainer.py``),
    which the fit loop checks after each epoch (``loops/fit_loop.py``, ``done``) and progress bars show. An unbounded
    run (``max_epochs=-1``) is told the epochs its env-step budget takes, so a bar shows "epoch 3/9".
    """
    trainer.fit_loop.max_epochs = epochs


def replace_default_checkpoint_io(trainer: L.Trainer, checkpoint_io: CheckpointIO) -> bool:
    """Give the trainer ``checkpoint_io`` unless it was configured with a checkpoint IO plugin of its own.

    ``Strategy.checkpoint_io`` (``lightning/pytorch/strategies/strategy.py``) falls back to a plain
    ``TorchCheckpointIO`` when none was given, and its setter is honoured until the first save or load (Lightning reads
    it then, after the callbacks' ``setup``). The library writes checkpoints atomically by default this way. Returns
    whether it replaced the default.
    """
    if type(trainer.strategy.checkpoint_io) is not TorchCheckpointIO:
        return False
    trainer.strategy.checkpoint_io = checkpoint_io
    return True


LIGHTNING_NOTICES = (
    # Advertisements, printed by every Trainer: "💡 Tip: For seamless cloud logging ... [litlogger]" when it has no
    # LitLogger (``_LoggerConnector.configure_logger``, ``trainer/connectors/logger_connector/logger_connector.py``)
    # and "💡 Tip: For seamless cloud uploads ... [litmodels]" (``_CallbackConnector._maybe_show_litmodels_tip``,
    # ``trainer/connectors/callback_connector.py``), both through ``rank_zero_info``.
    "💡 Tip: ",
    # ``trainer.save_checkpoint(path)`` without ``weights_only`` (``_CheckpointConnector.dump_checkpoint``,
    # ``trainer/connectors/checkpoint_connector.py``, ``log.info``): the full checkpoint it then writes is the default.
    "`weights_only` was not set, defaulting to `False`.",
    # ``FitLoop.done`` (``loops/fit_loop.py``): "`Trainer.fit` stopped: `max_epochs=10` reached." The module sets
    # max_epochs to the epochs its budget needs, so the line named a setting the user never gave; the run's own last
    # line says when the budget ended it, and when a Trainer setting ended it early, which one.
    "`Trainer.fit` stopped: `max_epochs=",
)
"""The start of each info message of Lightning that ``quiet_lightning_notices`` drops; warnings are never dropped."""


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(LIGHTNING_NOTICES))


def quiet_lightning_notices() -> None:
    """Drop ``LIGHTNING_NOTICES`` from the log records of the Lightning loggers that write them; nothing else.

    A logger's filters see only the records made on that logger (not its children's), so the filter goes on each
    one: ``rank_zero_info``'s (``lightning_utilities.core.rank_zero.log``, which ``lightning/fabric/utilities/
    rank_zero.py`` and then ``lightning/pytorch/utilities/rank_zero.py`` point at their own module's logger on
    import) and the checkpoint connector's module logger.
    """
    import lightning_utilities.core.rank_zero as rank_zero

    names = ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
             "lightning.pytorch.trainer.connectors.checkpoint_connector")
    for logger in {rank_zero.log, *map(logging.getLogger, names)}:
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    # Lightning 2.6's own use of torch's pytree (lightning/pytorch/utilities/_pytree.py) on newer torch: a deprecation
    # inside Lightning that no user of the library can act on; the CLI, scripts and notebooks alike.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


def model_summary_depth(callback: Any) -> int:
    """A ``ModelSummary``'s ``max_depth`` (kept as ``_max_depth``, ``lightning/pytorch/callbacks/model_summary.py``)."""
    return int(callback._max_depth)


def find_unused_parameters_under_ddp(trainer: L.Trainer | None) -> None:
    """Under ``DDPStrategy``, have DDP find parameters that get no gradient, unless the strategy says otherwise.

    ``DDPStrategy`` keeps its ``DistributedDataParallel`` keyword arguments in the private ``_ddp_kwargs``
    (``lightning/pytorch/strategies/ddp.py``, ``__init__``; used in ``_setup_model``, after the module's ``setup``).
    DDPG's critic backward gives the actor no gradients, and DDP's default waits for them ("Expected to have finished
    reduction ..." at the next backward); an explicit ``DDPStrategy(find_unused_parameters=...)`` is left as given.
    """
    strategy = trainer.strategy if trainer is not None else None
    if isinstance(strategy, DDPStrategy):
        strategy._ddp_kwargs.setdefault("find_unused_parameters", True)


def end_epoch_in_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Make a checkpoint written in the middle of an epoch resume as if that epoch had ended after its last whole batch.

    Lightning resumes a mid-epoch checkpoint inside the epoch (``FitLoop.update_restart_stage`` in
    ``lightning/pytorch/loops/fit_loop.py``) and counts its batches against a dataloader length that
    ``RoundStream`` computes afresh from the env steps left, so the resumed epoch came out short and, in the
    budget's last epoch, training ended before ``total_steps``. Marked as finished (every counter of the epoch
    and of its batches at "completed", as in a checkpoint written after an epoch's end), the run resumes at the
    next epoch, whose length and the budget's remaining epochs follow from the env steps. The interrupted epoch
    has no evaluation.

    Relies on the loops' checkpoint layout (``Trainer._checkpoint_connector.dump_checkpoint`` stores
    ``fit_loop.state_dict()``, ``loops/loop.py``): ``checkpoint["loops"]["fit_loop"]`` with ``"epoch_progress"`` and
    ``"epoch_loop.batch_progress"``, each with ``"total"``/``"current"`` counters ``ready``/``started``/``processed``/
    ``completed`` (``loops/progress.py``), and the batch progress's ``"is_last_batch"``.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop")
    if loop is None:
        return
    epochs = loop["epoch_progress"]
    for counters in (epochs["total"], epochs["current"]):
        counters.update(dict.fromkeys(("ready", "started", "processed", "completed"), counters["started"]))
    batches = loop["epoch_loop.batch_progress"]
    for counters in (batches["total"], batches["current"]):  # a batch being collected when the signal came is dropped
        counters.update(dict.fromkeys(("ready", "started", "processed"), counters["completed"]))
    batches["is_last_batch"] = True
    checkpoint["epoch"] = epochs["current"]["completed"]


def every_n_train_steps(callback: Any) -> int:
    """A ``ModelCheckpoint``'s ``every_n_train_steps`` setting (kept as ``_every_n_train_steps``; 0 when unset)."""
    return int(getattr(callback, "_every_n_train_steps", 0) or 0)


def lift_fast_dev_run_step_limit(trainer: L.Trainer) -> None:
    """Undo the ``max_steps = fast_dev_run`` that ``_init_debugging_flags`` (``lightning/pytorch/trainer/setup.py``)
    sets: it counts optimizer steps, many per batch here, so it would stop after the first batch. The batch limits
    it also sets (``limit_train_batches`` ...) stay."""
    trainer.fit_loop.epoch_loop.max_steps = -1


def save_model_checkpoint(callback: Any, trainer: L.Trainer, **metrics: Any) -> None:
    """Save as a ``ModelCheckpoint`` does when a save is due: its top-k files by ``monitor`` and its ``last.ckpt``
    (``_monitor_candidates``, ``_save_topk_checkpoint``, ``_save_last_checkpoint`` in
    ``lightning/pytorch/callbacks/model_checkpoint.py``); ``metrics`` join the logged ones (for the file name)."""
    candidates = {**callback._monitor_candidates(trainer), **metrics}
    callback._save_topk_checkpoint(trainer, candidates)
    callback._save_last_checkpoint(trainer, candidates)



def optimizer_step_of_last_save(callback: Any) -> int:
    """The ``trainer.global_step`` of a ``ModelCheckpoint``'s last save (``_last_global_step_saved``; 0 before any).

    ``ModelCheckpoint._should_skip_saving_checkpoint`` (``lightning/pytorch/callbacks/model_checkpoint.py``) skips a
    save when it equals ``trainer.global_step``: an epoch without optimizer steps (an off-policy warm-up of
    ``learning_starts`` env steps) is never saved, though its env steps, replay buffer and counters moved. Setting it
    to -1 (``set_optimizer_step_of_last_save``) lets the next due save happen; ``_save_checkpoint`` sets it again.
    """
    return int(callback._last_global_step_saved)


def set_optimizer_step_of_last_save(callback: Any, step: int) -> None:
    callback._last_global_step_saved = step


def logger_version_given(logger: Any) -> bool:
    """Whether a ``TensorBoardLogger``/``CSVLogger`` has its version already (given, or chosen at first use): the
    ``version`` property chooses one (``_get_next_version``) when ``_version`` is ``None``
    (``lightning/fabric/loggers/tensorboard.py``, ``csv_logs.py``)."""
    return logger._version is not None


def next_logger_version(logger: Any) -> int:
    """One more than the highest ``version_N`` folder under the logger's ``root_dir`` (0 when none)."""
    return int(logger._get_next_version())


def set_logger_version(logger: Any, version: int) -> None:
    logger._version = version
