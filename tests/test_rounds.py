"""Several collect-then-update rounds per training batch: the same training as one round per batch."""

import lightning as L
import numpy as np
import pytest
import torch

from rl_lightning import A2C, DDPG, DQN, PPO, SAC, TD3, ConfigurationError, DiscreteSAC
from rl_lightning.algorithms.schedule import RoundSchedule
from rl_lightning.plotting import read_scalars


class RoundCounter(L.Callback):
    def __init__(self):
        self.batches, self.epoch_ends = 0, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_ends.append(pl_module.env_steps)


def trainer(tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    return L.Trainer(max_epochs=-1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=tmp_path, **kwargs)


# Every case: 2 envs, rounds of 10 (on-policy: 5 steps) or 6 (off-policy: train_freq 3) env steps.
CASES = {
    # epochs of ceil(95 / 10) = 10 rounds, a budget of 23 rounds (230 steps)
    "A2C": (A2C, dict(env="CartPole-v1", n_steps=5, total_steps=230, steps_per_epoch=95,
                                            lr_schedule="linear"), 10, [100, 200, 230], 23),
    "PPO": (PPO, dict(env="CartPole-v1", n_steps=5, total_steps=230, steps_per_epoch=95,
                                            batch_size=4, n_epochs=2), 10, [100, 200, 230], 23),
    # epochs of ceil(40 / 6) = 7 rounds, a budget of 17 rounds (102 steps); updates from 24 env steps on
    "DQN": (DQN, dict(env="CartPole-v1", total_steps=100, steps_per_epoch=40, train_freq=3,
                                          gradient_steps=2, batch_size=8, learning_starts=24, buffer_size=500),
            7, [42, 84, 102], 17),
    "DDPG": (DDPG, dict(env="Pendulum-v1", total_steps=100, steps_per_epoch=40, train_freq=3,
                                            gradient_steps=2, batch_size=8, learning_starts=24, buffer_size=500),
             7, [42, 84, 102], 17),
    "TD3": (TD3, dict(env="Pendulum-v1", total_steps=100, steps_per_epoch=40, train_freq=3,
                                          gradient_steps=2, batch_size=8, learning_starts=24, buffer_size=500),
             7, [42, 84, 102], 17),
    "SAC": (SAC, dict(env="Pendulum-v1", total_steps=100, steps_per_epoch=40, train_freq=3,
                      gradient_steps=2, batch_size=8, learning_starts=24, buffer_size=500, target_update_interval=3),
            7, [42, 84, 102], 17),
    "DiscreteSAC": (DiscreteSAC, dict(env="CartPole-v1", total_steps=100, steps_per_epoch=40, train_freq=3,
                                      gradient_steps=2, batch_size=8, learning_starts=24, buffer_size=500,
                                      target_update_interval=3), 7, [42, 84, 102], 17),
}


@pytest.mark.parametrize("name", list(CASES))
def test_several_rounds_per_batch_train_exactly_like_one_per_batch(name, tmp_path):
    algo, kwargs, per_epoch, epoch_ends, total_rounds = CASES[name]
    kwargs = dict(kwargs, num_envs=2, hidden_sizes=[16], eval_episodes=0, seed=3)
    runs = {}
    for per_batch in (1, 3, None):
        model = algo(rounds_per_batch=per_batch, **kwargs)
        counter = RoundCounter()
        fit = trainer(tmp_path / str(per_batch), callbacks=[counter])
        fit.fit(model)
        runs[per_batch] = model, counter, fit.global_step
    # Automatic: about 256 env steps wanted, but at most an epoch's rounds.
    assert runs[None][0].rounds_per_batch == per_epoch
    last_epoch_rounds = total_rounds - 2 * per_epoch
    for per_batch, rounds in ((1, 1), (3, 3), (None, per_epoch)):
        model, counter, _ = runs[per_batch]
        assert model.env_steps == epoch_ends[-1]
        assert counter.epoch_ends == epoch_ends  # an epoch's last batch holds the rounds that are left
        assert counter.batches == 2 * -(-per_epoch // rounds) + -(-last_epoch_rounds // rounds)
    reference, _, steps = runs[1]
    for per_batch in (3, None):
        model, _, global_step = runs[per_batch]
        assert global_step == steps  # the same optimizer steps ...
        for (key, a), b in zip(reference.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), key  # ... on the same data: identical weights
    with pytest.raises(ConfigurationError, match="rounds_per_batch=0 must be a positive integer"):
        algo(rounds_per_batch=0, **kwargs)


class RecordingDQN(DQN):
    """A DQN that keeps the diagnostics each of its rounds returned."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rounds = []

    def train_round(self, batch):
        metrics = super().train_round(batch)
        self.rounds.append((self.env_steps, {k: float(v) for k, v in metrics.items()}))
        return metrics


def test_a_training_point_is_the_mean_over_the_rounds_that_gave_each_diagnostic(tmp_path):
    # One point per epoch (log_interval beyond it). The first epoch's 7 rounds, in batches of 3, 3 and 1, are 3 of
    # warm-up (no loss) and 4 with updates: its loss point is the mean of those 4 (not a mean of batch means,
    # nor their sum over all rounds).
    model = RecordingDQN(env="CartPole-v1", num_envs=2, hidden_sizes=[16], total_steps=84, steps_per_epoch=40,
                         train_freq=3, gradient_steps=2, batch_size=8, learning_starts=24, buffer_size=500,
                         eval_episodes=0, seed=3, rounds_per_batch=3, log_interval=10_000)
    trainer(tmp_path, logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run")).fit(model)
    first_epoch = [m for steps, m in model.rounds if steps <= 42]
    losses = [m["model/loss"] for m in first_epoch if "model/loss" in m]
    assert len(first_epoch) == 7 and len(losses) == 4
    steps, logged = read_scalars(tmp_path / "run", "model/loss")
    assert steps[0] == 42 and np.isclose(logged[0], np.mean(losses), rtol=1e-5)
    _, epsilons = read_scalars(tmp_path / "run", "model/epsilon")
    assert np.isclose(epsilons[0], np.mean([m["model/epsilon"] for m in first_epoch]), rtol=1e-5)


def test_the_schedule_divides_the_budget_into_whole_rounds_batches_and_epochs():
    # Rounds of 6 env steps, epochs of ceil(40 / 6) = 7 rounds, batches of 3 rounds, a budget of ceil(100 / 6) = 17.
    schedule = RoundSchedule(total_steps=100, steps_per_epoch=40, round_steps=6, rounds_per_batch=3)
    assert schedule.epoch_steps == 42
    assert schedule.epoch_batches(0) == [3, 3, 1]
    assert schedule.epoch_batches(84) == [3]  # the budget's last 3 rounds
    assert schedule.epoch_batches(102) == []
    assert [schedule.epochs_left(s) for s in (0, 42, 84, 102)] == [3, 2, 1, 0]
    assert not schedule.spent(96) and schedule.spent(102)


def test_a_checkpoint_written_before_the_rename_of_rounds_per_batch_still_loads(tmp_path):
    model = A2C(env="CartPole-v1", n_steps=5, rounds_per_batch=2, total_steps=40, steps_per_epoch=40,
                hidden_sizes=[8], eval_episodes=0)
    L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, default_root_dir=tmp_path).fit(model)
    path = next(tmp_path.rglob("*.ckpt"))
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["rollouts_per_batch"] = checkpoint["hyper_parameters"].pop("rounds_per_batch")
    torch.save(checkpoint, path)
    loaded = A2C.load_from_checkpoint(path)
    assert loaded.hparams.rounds_per_batch == 2 and "rollouts_per_batch" not in loaded.hparams
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
