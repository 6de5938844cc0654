"""Lightning's everyday features as a Lightning user expects them here: seeding, fine-tuning loaded weights,
what counts env steps and what counts optimizer steps."""

import lightning as L
import pytest
import torch

from rl_lightning import DQN, PPO


def trainer(tmp_path, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(max_epochs=-1, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     default_root_dir=tmp_path, accelerator="cpu", **kwargs)


def ppo(**kwargs):
    kwargs = dict(dict(env="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, n_epochs=1, hidden_sizes=[16],
                       total_steps=128, steps_per_epoch=64, eval_episodes=0), **kwargs)
    return PPO(**kwargs)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.fixture
def no_global_seed(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


def test_the_global_seed_drives_a_model_without_its_own(tmp_path, no_global_seed):
    runs = {}
    for global_seed in (0, 1, 1):
        L.seed_everything(global_seed)
        model = ppo()
        trainer(tmp_path).fit(model)
        runs.setdefault(global_seed, []).append(weights(model))
    assert torch.equal(runs[1][0], runs[1][1])  # the same global seed, the same run
    assert not torch.equal(runs[0][0], runs[1][0])  # another global seed, another run


def test_a_model_seed_wins_over_the_global_seed_with_a_warning(tmp_path, no_global_seed):
    unseeded = ppo()
    trainer(tmp_path).fit(unseeded)  # no global seed, no model seed: 0
    L.seed_everything(5)
    with pytest.warns(UserWarning, match=r"the model's seed=0 differs from the global seed 5"):
        seeded = ppo(seed=0)
        trainer(tmp_path).fit(seeded)
    assert torch.equal(weights(unseeded), weights(seeded))


def test_validate_without_fit_builds_seeded_networks(tmp_path, no_global_seed):
    results = []
    for _ in range(2):
        torch.manual_seed(torch.randint(1000, (1,)).item())  # whatever the global generator holds
        model = ppo(seed=3, eval_episodes=2, eval_num_envs=1)
        trainer(tmp_path).validate(model)
        results.append((weights(model), model.last_evaluation.returns))
    assert torch.equal(results[0][0], results[1][0])
    assert (results[0][1] == results[1][1]).all()


def test_fitting_loaded_weights_is_a_new_run_of_total_steps(tmp_path, no_global_seed):
    model = ppo(total_steps=128)
    fit = trainer(tmp_path)
    fit.fit(model)
    fit.save_checkpoint(tmp_path / "ppo.ckpt")
    loaded = PPO.load_from_checkpoint(tmp_path / "ppo.ckpt")
    assert loaded.env_steps == 128 and torch.equal(weights(loaded), weights(model))
    start = {}

    class StartWeights(L.Callback):
        def on_train_start(self, trainer, pl_module):
            start["weights"], start["env_steps"] = weights(pl_module), pl_module.env_steps

    trainer(tmp_path, callbacks=[StartWeights()]).fit(loaded)
    assert start["env_steps"] == 0 and torch.equal(start["weights"], weights(model))  # from the loaded weights
    assert loaded.env_steps == 128  # its own total_steps, not 0 (the old run's budget was spent)
    longer = PPO.load_from_checkpoint(tmp_path / "ppo.ckpt", total_steps=192)  # a new budget
    trainer(tmp_path).fit(longer)
    assert longer.env_steps == 192
    # Resuming the checkpoint's run (ckpt_path) continues its counters instead.
    resumed = ppo(total_steps=192)
    trainer(tmp_path).fit(resumed, ckpt_path=tmp_path / "ppo.ckpt")
    assert resumed.env_steps == 192


def test_fitting_a_loaded_dqn_restarts_its_target_update_counter(tmp_path, no_global_seed):
    model = DQN(env="CartPole-v1", learning_starts=64, batch_size=32, train_freq=16, total_steps=256,
                steps_per_epoch=256, eval_episodes=0, target_update_interval=100, hidden_sizes=[16])
    fit = trainer(tmp_path)
    fit.fit(model)
    fit.save_checkpoint(tmp_path / "dqn.ckpt")
    loaded = DQN.load_from_checkpoint(tmp_path / "dqn.ckpt")
    assert loaded.target_updates == 2
    start = {}

    class StartCounters(L.Callback):
        def on_train_start(self, trainer, pl_module):
            start.update(env_steps=pl_module.env_steps, target_updates=pl_module.target_updates)

    trainer(tmp_path, callbacks=[StartCounters()]).fit(loaded)
    assert start == {"env_steps": 0, "target_updates": 0}
    assert loaded.env_steps == 256 and loaded.target_updates == 2  # counted afresh over the new run


class Batches(L.Callback):
    def __init__(self):
        self.count, self.updates = 0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.count += 1
        self.updates = trainer.global_step


@pytest.mark.parametrize("algorithm", ["PPO", "A2C", "DQN", "DDPG"])
def test_fast_dev_run_runs_n_real_batches_that_reach_updates(tmp_path, algorithm):
    import rl_lightning

    env = "Pendulum-v1" if algorithm == "DDPG" else "CartPole-v1"
    kwargs = dict(env=env, hidden_sizes=[16], total_steps=100_000, steps_per_epoch=10_000, eval_episodes=1,
                  eval_num_envs=1)
    if algorithm in ("DQN", "DDPG"):
        kwargs.update(learning_starts=1000, batch_size=32)  # the warm-up is longer than three batches
    model = getattr(rl_lightning, algorithm)(**kwargs)
    batches = Batches()
    trainer(tmp_path, fast_dev_run=3, callbacks=[batches]).fit(model)
    assert batches.count == 3
    assert batches.updates > 0  # every algorithm made gradient steps
    assert model.env_steps == 3 * model.rounds_per_batch * model.round_steps


def test_env_step_checkpoints_land_every_n_env_steps(tmp_path):
    from rl_lightning.callbacks import EnvStepCheckpoint

    # Batches of 64 env steps, saves every 96: after the batches reaching 128, 192, 320, 384 (96 x 1..4) ...
    saver = EnvStepCheckpoint(every_n_env_steps=96, dirpath=tmp_path / "ckpt")
    model = ppo(total_steps=384, steps_per_epoch=128, rounds_per_batch=2)
    trainer(tmp_path, callbacks=[saver], enable_checkpointing=True).fit(model)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name != "last.ckpt")
    steps = sorted(int(name.split("env_steps=")[1].removesuffix(".ckpt")) for name in names)
    assert steps == [128, 192, 320, 384]
    # Beside them, the run's last.ckpt (the module adds a LastCheckpoint to any checkpointing trainer).
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["rl_lightning"]["env_steps"] == 384
    saved = torch.load(tmp_path / "ckpt" / names[0], weights_only=True)
    assert saved["rl_lightning"]["env_steps"] in steps


def test_step_counting_options_warn_with_the_env_step_setting_to_use(tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    with pytest.warns(UserWarning) as caught:
        trainer(tmp_path, max_steps=10_000, limit_train_batches=1,
                callbacks=[ModelCheckpoint(every_n_train_steps=5, dirpath=tmp_path), LearningRateMonitor()],
                logger=L.pytorch.loggers.TensorBoardLogger(tmp_path), enable_checkpointing=True).fit(ppo())
    text = " ".join(str(w.message) for w in caught)
    assert "max_steps=10000 counts optimizer steps" in text and "total_steps" in text
    assert "limit_train_batches=1 cuts every epoch" in text
    assert "every_n_train_steps=5" in text and "EnvStepCheckpoint" in text
    assert "LearningRateMonitor plots" in text and "lr/<optimizer>" in text


def test_overfit_batches_is_refused(tmp_path):
    from rl_lightning import ConfigurationError

    with pytest.raises(ConfigurationError, match="overfit_batches=2 does not apply"):
        trainer(tmp_path, overfit_batches=2).fit(ppo())


def test_learning_rates_are_logged_against_env_steps_by_optimizer_name(tmp_path):
    from rl_lightning.plotting import read_scalars

    model = ppo(lr_schedule="linear", learning_rate=1e-3, critic_learning_rate=2e-3, log_interval=64)
    trainer(tmp_path, logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"),
            log_every_n_steps=1).fit(model)
    steps, actor = read_scalars(tmp_path / "run", "lr/actor")
    _, critic = read_scalars(tmp_path / "run", "lr/critic")
    assert list(steps) == [64, 128]
    # Linear annealing: the rate of the last round before each point (SB3: set after its collection).
    assert actor[0] == pytest.approx(1e-3 * (1 - 64 / 128)) and critic[0] == pytest.approx(2e-3 * (1 - 64 / 128))
