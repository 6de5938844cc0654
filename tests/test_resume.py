"""Resuming from a checkpoint continues the run exactly where it stopped."""

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from toy_envs import MaskedEnv, ShiftingMaskEnv

from rl_lightning import A2C, DDPG, DQN, PPO, SAC, TD3, DiscreteSAC

# Small budgets; each crosses epoch boundaries (evaluation, checkpoint) on both sides of the stop.
ALGORITHMS = {
    "PPO": (PPO, dict(env="CartPole-v1", num_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden_sizes=[16],
                      steps_per_epoch=64, lr_schedule="linear", clip_range_schedule="linear")),
    "A2C": (A2C, dict(env="CartPole-v1", num_envs=2, n_steps=5, hidden_sizes=[16], steps_per_epoch=60)),
    "DQN": (DQN, dict(env="CartPole-v1", num_envs=2, learning_starts=40, batch_size=16, buffer_size=100,
                      train_freq=4, gradient_steps=2, target_update_interval=24, hidden_sizes=[16],
                      exploration_fraction=0.5, steps_per_epoch=64)),
    # Envs that give action masks: the current observations' masks must come back with the envs.
    "DQN-masked": (DQN, dict(env=MaskedEnv, num_envs=2, learning_starts=40, batch_size=16, buffer_size=100,
                             train_freq=4, gradient_steps=2, target_update_interval=24, hidden_sizes=[16],
                             exploration_fraction=0.5, steps_per_epoch=64)),
    "PPO-masked": (PPO, dict(env=ShiftingMaskEnv, num_envs=2, n_steps=16, batch_size=16, n_epochs=2,
                             hidden_sizes=[16], steps_per_epoch=64)),
    "DDPG": (DDPG, dict(env="Pendulum-v1", num_envs=2, learning_starts=40, batch_size=16, buffer_size=100,
                        train_freq=4, gradient_steps=1, hidden_sizes=[16], action_noise="ou",
                        steps_per_epoch=64, random_warmup=False)),
    # The delay's phase (critic updates over the run) must survive: 12 updates before the split, a delay of 5.
    "TD3": (TD3, dict(env="Pendulum-v1", num_envs=2, learning_starts=40, batch_size=16, buffer_size=100,
                      train_freq=4, gradient_steps=1, hidden_sizes=[16], policy_delay=5, steps_per_epoch=64)),
    # Observation and reward statistics (model buffers) and the discounted returns under way (run state).
    "PPO-normalized": (PPO, dict(env="Pendulum-v1", num_envs=2, n_steps=16, batch_size=16, n_epochs=2,
                                 hidden_sizes=[16], steps_per_epoch=64, normalize_observations=True,
                                 normalize_rewards=True)),
    "DDPG-normalized": (DDPG, dict(env="Pendulum-v1", num_envs=2, learning_starts=40, batch_size=16, buffer_size=100,
                                   train_freq=4, gradient_steps=1, hidden_sizes=[16], steps_per_epoch=64,
                                   normalize_observations=True, normalize_rewards=True)),
    # The learned temperature and its optimizer, the actor's sampling and the run-wide target-update count.
    "SAC": (SAC, dict(env="Pendulum-v1", num_envs=2, learning_starts=40, batch_size=16, buffer_size=100,
                      train_freq=4, gradient_steps=2, hidden_sizes=[16], target_update_interval=3,
                      steps_per_epoch=64, random_warmup=False)),
    # The categorical policy's draws, and each observation's action mask kept in the buffer beside the next one's.
    "DiscreteSAC-masked": (DiscreteSAC, dict(env=MaskedEnv, num_envs=2, learning_starts=40, batch_size=16,
                                             buffer_size=100, train_freq=4, gradient_steps=2, hidden_sizes=[16],
                                             target_update_interval=3, steps_per_epoch=64, random_warmup=False)),
}


class LastObservations(L.Callback):
    """The envs' observations when training ends (the module closes its envs afterwards)."""

    def on_train_end(self, trainer, pl_module):
        self.obs = pl_module._obs.copy()


def fit(cls, kwargs, total_steps, ckpt_dir, ckpt_path=None, max_epochs=-1):
    model = cls(**kwargs, total_steps=total_steps, seed=3, eval_episodes=2, eval_num_envs=1,
                eval_deterministic=False)
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu", default_root_dir=ckpt_dir,
                        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0), last := LastObservations()])
    trainer.fit(model, ckpt_path=ckpt_path)
    return model, trainer, (torch.get_rng_state(), last.obs)


def optimizer_tensors(trainer):
    out = []
    for opt in trainer.optimizers:
        for state in opt.state_dict()["state"].values():
            out += [v for v in state.values() if torch.is_tensor(v)]
    return out


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_stopping_and_resuming_gives_the_same_run_bit_for_bit(name, tmp_path):
    cls, kwargs = ALGORITHMS[name]
    per_epoch = kwargs["steps_per_epoch"]
    n, m = 2 * per_epoch, 2 * per_epoch
    whole, whole_trainer, whole_rng = fit(cls, kwargs, n + m, tmp_path / "whole")
    # Stopped after n steps of the same run (schedules follow total_steps), then resumed for the other m.
    with pytest.warns(UserWarning, match="stops training before total_steps"):
        first, _, _ = fit(cls, kwargs, n + m, tmp_path / "split", max_epochs=n // per_epoch)
    assert first.env_steps == n
    stopped = tmp_path / "stopped.ckpt"
    (tmp_path / "split" / "last.ckpt").rename(stopped)
    torch.manual_seed(12345)  # whatever ran in between, the checkpoint's generators take over
    resumed, resumed_trainer, resumed_rng = fit(cls, kwargs, n + m, tmp_path / "split", ckpt_path=stopped)

    assert resumed.env_steps == whole.env_steps == n + m
    assert resumed.episodes == whole.episodes and resumed_trainer.global_step == whole_trainer.global_step
    whole_state, resumed_state = whole.state_dict(), resumed.state_dict()
    assert whole_state.keys() == resumed_state.keys()
    for key, value in whole_state.items():
        assert torch.equal(value, resumed_state[key]), key
    for a, b in zip(optimizer_tensors(whole_trainer), optimizer_tensors(resumed_trainer), strict=True):
        assert torch.equal(a, b)
    # The stream of random numbers continues identically, and so do the envs' episodes.
    assert torch.equal(resumed_rng[0], whole_rng[0]) and (resumed_rng[1] == whole_rng[1]).all()
    if name.startswith(("DQN", "DDPG", "TD3", "SAC", "DiscreteSAC")):
        assert (resumed.buffer.size, resumed.buffer.pos) == (whole.buffer.size, whole.buffer.pos)
        for key, store in whole.buffer.storage.items():
            assert torch.equal(store, resumed.buffer.storage[key]), key
    if name.startswith("DQN"):
        assert resumed.target_updates == whole.target_updates > 0
    if name == "DDPG":
        assert torch.equal(resumed.noise.state, whole.noise.state)
    if name == "TD3":
        assert resumed.critic_updates == whole.critic_updates == 28
    if name in ("SAC", "DiscreteSAC-masked"):
        assert resumed.gradient_updates == whole.gradient_updates > 0
    if name.endswith("normalized"):
        assert float(whole.normalization.obs.count) > n + m  # the buffers compared above hold the statistics
        assert np.array_equal(resumed.normalization.discounted_returns, whole.normalization.discounted_returns)
    # The second half really trained: the weights moved away from the checkpoint's.
    at_stop = torch.load(stopped, weights_only=True)["state_dict"]
    assert any(not torch.equal(at_stop[k], resumed_state[k]) for k in at_stop)


class RestoredState(L.Callback):
    """What a resumed run starts from, seen right before its first batch (after every restore)."""

    def on_train_start(self, trainer, pl_module):
        self.env_steps, self.global_step = pl_module.env_steps, trainer.global_step
        self.lr = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        self.optimizer = [t.clone() for t in optimizer_tensors(trainer)]
        self.buffer = None if getattr(pl_module, "buffer", None) is None else {
            k: v[:pl_module.buffer.size].clone() for k, v in pl_module.buffer.storage.items()}


def unity_cartpole(agents, worker_port):
    return dict(env="unity", env_kwargs=dict(file_name="rl-lightning-unity-player", worker_id=0,
                                             base_port=worker_port, timeout_wait=20,
                                             additional_args=["--env", "CartPole-v1", "--agents", str(agents)]),
                eval_env_kwargs=dict(base_port=worker_port + 1, additional_args=["--env", "CartPole-v1", "--agents", "4"]))


def free_port_pair():
    import socket

    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("localhost", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("localhost", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


PPO_CARTPOLE = dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3,
                    lr_schedule="linear", clip_range_schedule="linear", hidden_sizes=[64, 64])


@pytest.mark.learning  # trains PPO to a return twice (30 s to a minute per kind)
# Unity in both agent-id regimes (conftest.py): ids kept across episodes (the default), and a new id per episode.
@pytest.mark.parametrize("kind", ["async", "unity", "unity-new-id-per-episode"])
def test_envs_without_saved_state_restart_and_learning_goes_on(kind, tmp_path, monkeypatch):
    """Async and Unity envs cannot be saved: they restart on resume, and everything else continues."""
    if kind == "async":
        envs = dict(env="CartPole-v1", num_envs=8, vectorization="async")
    else:
        from rl_lightning.unity.player import ID_REGIME_VARIABLE

        monkeypatch.setenv(ID_REGIME_VARIABLE, "per-episode" if kind == "unity-new-id-per-episode" else "kept")
        envs = unity_cartpole(8, free_port_pair())
    args = dict(**envs, **PPO_CARTPOLE, seed=0, total_steps=40_960, steps_per_epoch=10_240, eval_episodes=12,
                eval_num_envs=4)

    def run(max_epochs, ckpt_path=None):
        model = PPO(**args)
        restored = RestoredState()
        trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                            callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0), restored])
        trainer.fit(model, ckpt_path=ckpt_path)
        return model, restored

    with pytest.warns(UserWarning, match="stops training before total_steps"):
        first, _ = run(max_epochs=2)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["rl_lightning"]["env_steps"] == 20_480
    before = first.last_evaluation.return_mean
    assert before > 100  # it learned something worth continuing (random play: about 22)

    resumed, restored = run(max_epochs=3, ckpt_path=tmp_path / "last.ckpt")
    # The counters, the annealed learning rate and the optimizer state continue from the checkpoint ...
    assert (restored.env_steps, restored.global_step) == (20_480, saved["global_step"])
    lr_now = 1e-3 * (1 - 20_480 / 40_960)
    assert restored.lr == pytest.approx([lr_now] * len(restored.lr))
    saved_opt = [v for opt in saved["optimizer_states"] for s in opt["state"].values()
                 for v in s.values() if torch.is_tensor(v)]
    assert all(torch.equal(a, b) for a, b in zip(restored.optimizer, saved_opt, strict=True))
    # ... and learning goes on: the first evaluation after the resumed epoch is no untrained policy's.
    assert resumed.env_steps == 30_720
    assert resumed.last_evaluation.return_mean > 100


def test_replay_buffer_survives_a_resume_on_envs_that_restart(tmp_path):
    args = dict(env="CartPole-v1", num_envs=2, vectorization="async", learning_starts=64, batch_size=32,
                buffer_size=500, train_freq=8, hidden_sizes=[16], total_steps=1024, steps_per_epoch=256,
                eval_episodes=0, seed=0)
    # default_root_dir: the resumed fit's default ModelCheckpoint writes there (not into the working directory)
    trainer_kwargs = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                          default_root_dir=tmp_path)
    with pytest.warns(UserWarning, match="stops training before total_steps"):
        L.Trainer(max_epochs=2, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=1)],
                  **trainer_kwargs).fit(DQN(**args))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["rl_lightning"]
    restored = RestoredState()
    model = DQN(**args)
    L.Trainer(max_epochs=-1, callbacks=[restored], **trainer_kwargs).fit(model, ckpt_path=tmp_path / "last.ckpt")
    assert restored.env_steps == saved["env_steps"] == 512
    for key, stored in saved["replay_buffer"]["storage"].items():
        assert torch.equal(restored.buffer[key], stored), key
    assert model.env_steps == 1024 and model.buffer.size == 500


def test_saved_envs_continue_the_same_episodes_and_box2d_envs_are_not_saved():
    from rl_lightning import checkpointing
    from rl_lightning.checkpointing import env_state, restore_env_state
    from rl_lightning.envs.factory import make_vector_env

    envs = make_vector_env("Acrobot-v1", num_envs=2, seed=0)
    envs.reset(seed=0)
    for _ in range(7):
        envs.step(envs.action_space.sample())
    other = make_vector_env("Acrobot-v1", num_envs=2, seed=9)
    other.reset(seed=9)
    restore_env_state(other, env_state(envs))
    for _ in range(30):  # same actions -> same observations, rewards and episode ends
        action = envs.action_space.sample()
        assert other.action_space.sample().tolist() == action.tolist()  # the action space's generator came along
        a, b = envs.step(action), other.step(action)
        assert all(np.array_equal(x, y) for x, y in zip(a[:4], b[:4]))

    box2d = make_vector_env("LunarLander-v3", num_envs=1, seed=0)
    box2d.reset(seed=0)
    checkpointing._warned.clear()  # warned once per process: an earlier test's LunarLander run may have been first
    with pytest.warns(UserWarning, match="Box2D.* objects, whose state cannot be saved"):
        assert env_state(box2d) is None
