"""Each Lightning internal ``rl_lightning.lightning_compat`` relies on, checked on a real small fit.

A Lightning upgrade that renames or changes one of them fails here, naming the attribute, instead of deep in a run
(``global_step`` stuck at 0, logs never written, a resumed run one epoch short).
"""

import inspect

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy

from rl_lightning import DQN, PPO
from rl_lightning import lightning_compat as compat
from rl_lightning.checkpointing import AtomicCheckpointIO

UPGRADE_HINT = (f"Lightning {L.__version__} changed an internal rl_lightning.lightning_compat relies on: "
                "update that module (and setup.cfg's lightning range)")


def internal(obj, path: str):
    """``obj.<path>``, or a failure that names the missing part of the dotted path."""
    for part in path.split("."):
        assert hasattr(obj, part), f"{UPGRADE_HINT}: {type(obj).__name__} has no attribute {part!r} (in {path!r})"
        obj = getattr(obj, part)
    return obj


class Probe(L.Callback):
    """Records, at each training batch, what the compat functions read from the live trainer."""

    def __init__(self):
        self.attached, self.fetched, self.logs_due, self.step_counts = [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.attached.append(compat.attached_trainer(pl_module) is trainer)
        self.fetched.append((batch_idx, internal(trainer, "fit_loop.epoch_loop.batch_progress.current.ready"),
                             compat.batches_fetched_this_epoch(trainer), trainer.num_training_batches))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        due = internal(trainer, "_logger_connector.should_update_logs")
        assert type(due) is bool, f"{UPGRADE_HINT}: _logger_connector.should_update_logs is {type(due).__name__}"
        self.logs_due.append(compat.logs_due(trainer))
        if batch_idx == 0 and trainer.current_epoch == 0:
            # Counting steps on the progress object moves trainer.global_step, Lightning's public count.
            progress = compat.optimizer_step_progress(trainer)
            assert progress is not None, f"{UPGRADE_HINT}: no fit_loop.epoch_loop.manual_optimization.optim_step_progress"
            before = trainer.global_step
            compat.count_optimizer_steps(progress, 3)
            self.step_counts.append((before, trainer.global_step))


def count_steps(module):
    """Count the module's gradient steps (calls of its stepper, times the optimizers stepped) as they happen."""
    calls = []

    def on_train_start():
        type(module).on_train_start(module)
        stepper, step = module._stepper, module._stepper.gradient_step
        stepper.gradient_step = lambda loss, optimizers, max_grad_norm: (calls.append(len(optimizers)),
                                                                step(loss, optimizers, max_grad_norm))
    module.on_train_start = on_train_start
    return calls


RUNS = {
    # one rollout (32 env steps) per batch, 4 batches an epoch, 2 epochs; DQN: one round (8 env steps) per batch
    "PPO": lambda: PPO(env="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, n_epochs=2, total_steps=256,
                       steps_per_epoch=128, rounds_per_batch=1, hidden_sizes=[16], eval_episodes=0, seed=0),
    "DQN": lambda: DQN(env="CartPole-v1", num_envs=2, total_steps=240, steps_per_epoch=120, train_freq=4,
                       learning_starts=64, buffer_size=500, batch_size=16, rounds_per_batch=1, hidden_sizes=[16],
                       eval_episodes=0, seed=0),
}


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory):
    """A finished small fit of PPO or DQN on CartPole (max_epochs=-1, every 3rd batch logged), with its probe."""
    model, probe = RUNS[request.param](), Probe()
    calls = count_steps(model)
    assert compat.attached_trainer(model) is None
    trainer = L.Trainer(max_epochs=-1, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=3, logger=False,
                        default_root_dir=tmp_path_factory.mktemp(request.param), callbacks=[probe])
    trainer.fit(model)
    return model, trainer, probe, calls


def test_module_trainer_is_read_from_private_attribute_when_attached_and_public_one_raises_otherwise(run):
    model, trainer, probe, _ = run
    assert probe.attached and all(probe.attached)
    detached = PPO(env="CartPole-v1")
    assert compat.attached_trainer(detached) is None
    with pytest.raises(RuntimeError):  # why the library cannot simply ask module.trainer
        _ = detached.trainer


def test_direct_gradient_steps_move_global_step_through_optim_step_progress(run):
    model, trainer, probe, calls = run
    assert model._stepper.direct, "the run took Lightning's own route: the direct route's counting is not exercised"
    assert calls, "the run made no gradient steps"
    # Every optimizer step of the direct route is in global_step, plus the 3 counted by the probe.
    assert trainer.global_step == sum(calls) + 3
    assert probe.step_counts and probe.step_counts[0][1] == probe.step_counts[0][0] + 3
    assert internal(trainer, "fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.completed") \
        == trainer.global_step


def test_batches_fetched_counts_the_current_batch_and_reaches_num_training_batches_at_an_epochs_end(run):
    _, _, probe, _ = run
    for batch_idx, ready, fetched, num_batches in probe.fetched:
        assert ready == fetched == batch_idx + 1
    # Each epoch's last batch is recognised: its count equals the epoch's number of batches.
    last_batches = [(fetched, n) for (i, _, fetched, n), nxt in zip(probe.fetched, probe.fetched[1:] + [(0,) * 4])
                    if nxt[0] == 0]
    assert len(last_batches) == 2 and all(fetched == n for fetched, n in last_batches)


def test_logger_connector_follows_log_every_n_steps(run):
    _, _, probe, _ = run
    # log_every_n_steps=3: one batch in three, not all and not none.
    assert len(probe.logs_due) >= 6
    assert 0 < sum(probe.logs_due) < len(probe.logs_due)
    assert probe.logs_due[2] and not probe.logs_due[0] and not probe.logs_due[1]


def test_unbounded_run_is_given_the_epochs_its_budget_takes(run):
    model, trainer, _, _ = run
    # max_epochs=-1 became the 2 epochs of the budget (set on fit_loop, read back through the public property).
    assert internal(trainer, "fit_loop.max_epochs") == trainer.max_epochs == 2
    assert trainer.current_epoch == 2


def test_default_checkpoint_io_is_replaced_and_an_explicit_one_kept(run, tmp_path):
    _, trainer, _, _ = run
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    fresh = L.Trainer(logger=False, default_root_dir=tmp_path)
    assert type(fresh.strategy.checkpoint_io) is TorchCheckpointIO, f"{UPGRADE_HINT}: the default checkpoint IO"

    class OwnIO(TorchCheckpointIO):
        pass

    own = L.Trainer(logger=False, default_root_dir=tmp_path, plugins=[OwnIO()])
    assert not compat.replace_default_checkpoint_io(own, AtomicCheckpointIO())
    assert type(own.strategy.checkpoint_io) is OwnIO


def test_32_bit_precision_is_plain_and_mixed_is_not(tmp_path):
    assert compat.plain_precision(L.Trainer(logger=False, precision="32-true", default_root_dir=tmp_path).strategy)
    assert not compat.plain_precision(L.Trainer(logger=False, precision="bf16-mixed",
                                                default_root_dir=tmp_path).strategy)
    assert "self.pre_backward(" in inspect.getsource(L.pytorch.strategies.Strategy.backward)
    assert "self.post_backward(" in inspect.getsource(L.pytorch.strategies.Strategy.backward)


def test_ddp_kwargs_reach_distributed_data_parallel(tmp_path):
    strategy = DDPStrategy()
    trainer = L.Trainer(strategy=strategy, accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path)
    compat.find_unused_parameters_under_ddp(trainer)
    assert internal(strategy, "_ddp_kwargs") == {"find_unused_parameters": True}
    explicit = DDPStrategy(find_unused_parameters=False)
    compat.find_unused_parameters_under_ddp(L.Trainer(strategy=explicit, accelerator="cpu", devices=1, logger=False,
                                                      default_root_dir=tmp_path))
    assert explicit._ddp_kwargs == {"find_unused_parameters": False}
    # The dict is what Lightning passes to DistributedDataParallel (a one-process gloo group, in this process).
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = strategy._setup_model(torch.nn.Linear(2, 2))
        assert wrapped.find_unused_parameters is True
    finally:
        torch.distributed.destroy_process_group()


def test_mid_epoch_checkpoint_has_the_loop_layout_that_end_epoch_in_checkpoint_rewrites(tmp_path):
    class SaveMidEpoch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 0:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    model = PPO(env="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, n_epochs=1, total_steps=256,
                steps_per_epoch=96, rounds_per_batch=1, hidden_sizes=[16], eval_episodes=0, seed=0)
    L.Trainer(max_epochs=-1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, logger=False, default_root_dir=tmp_path, callbacks=[SaveMidEpoch()]).fit(model)
    checkpoint = torch.load(tmp_path / "mid.ckpt", weights_only=False)
    loop = checkpoint.get("loops", {}).get("fit_loop")
    assert loop is not None, f"{UPGRADE_HINT}: checkpoint['loops']['fit_loop']"
    for key in ("epoch_progress", "epoch_loop.batch_progress"):
        assert key in loop, f"{UPGRADE_HINT}: checkpoint['loops']['fit_loop'][{key!r}]"
        for scope in ("total", "current"):
            assert set(loop[key][scope]) >= {"ready", "started", "processed", "completed"}, (key, scope, loop[key])
    assert "is_last_batch" in loop["epoch_loop.batch_progress"]
    # Written in epoch 1 after its first batch: the epoch started but not finished.
    assert loop["epoch_progress"]["current"]["started"] == 2 and loop["epoch_progress"]["current"]["completed"] == 1
    compat.end_epoch_in_checkpoint(checkpoint)
    assert set(loop["epoch_progress"]["current"].values()) == {2} and checkpoint["epoch"] == 2
    assert loop["epoch_loop.batch_progress"]["is_last_batch"] is True


def test_cli_still_parses_ckpt_path_through_the_method_the_library_overrides():
    assert hasattr(LightningCLI, "_parse_ckpt_path"), f"{UPGRADE_HINT}: LightningCLI._parse_ckpt_path"
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__), \
        f"{UPGRADE_HINT}: LightningCLI.__init__ no longer calls _parse_ckpt_path (see rl_lightning/cli.py)"


def test_model_checkpoint_internals_the_env_step_checkpoint_and_the_step_warning_use():
    from lightning.pytorch.callbacks import ModelCheckpoint

    assert compat.every_n_train_steps(ModelCheckpoint(every_n_train_steps=7)) == 7, UPGRADE_HINT
    assert compat.every_n_train_steps(ModelCheckpoint()) == 0, UPGRADE_HINT
    for name in ("_monitor_candidates", "_save_topk_checkpoint", "_save_last_checkpoint"):
        assert callable(getattr(ModelCheckpoint, name, None)), f"{UPGRADE_HINT}: ModelCheckpoint.{name}"
    trainer = L.Trainer(fast_dev_run=3, logger=False, enable_progress_bar=False)
    assert trainer.fit_loop.max_steps == 3
    compat.lift_fast_dev_run_step_limit(trainer)
    assert trainer.fit_loop.max_steps == -1 and trainer.limit_train_batches == 3, UPGRADE_HINT
