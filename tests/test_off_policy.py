"""Replay buffer, DQN and DDPG: the maths pinned with exact values, and bad input."""

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from toy_envs import CounterEnv, GoalImageEnv, MaskedEnv

from rl_lightning import DDPG, DQN, ConfigurationError
from rl_lightning.networks.noise import OrnsteinUhlenbeckNoise
from rl_lightning.algorithms.dqn import dqn_targets, linear_schedule
from rl_lightning.data.replay import ReplayBuffer
from rl_lightning.envs.transforms import GoalConditionedImage
from rl_lightning.networks.encoders import NatureCNN, make_encoder
from rl_lightning.networks.target import soft_update

OBS = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


def add_steps(buf, start, n_steps, num_envs):
    for t in range(start, start + n_steps):
        vals = np.arange(num_envs, dtype=np.float32) + 10 * t
        buf.add(np.stack([vals, vals], 1), np.zeros(num_envs, dtype=np.int64), vals, np.stack([vals, vals], 1),
                np.zeros(num_envs, dtype=bool))


def test_ring_buffer_wraps_and_keeps_the_newest_transitions():
    buf = ReplayBuffer(capacity=7, observation_space=OBS, action_space=gym.spaces.Discrete(2))
    add_steps(buf, 0, 2, num_envs=3)       # rewards 0 1 2 10 11 12 at rows 0..5
    assert (buf.size, buf.pos) == (6, 6)
    add_steps(buf, 2, 1, num_envs=3)       # 20 21 22: row 6, then rows 0 and 1 wrap
    assert (buf.size, buf.pos) == (7, 2)
    assert buf.storage["rewards"].tolist() == [21, 22, 2, 10, 11, 12, 20]
    assert buf.storage["obs"][:, 1].tolist() == [21, 22, 2, 10, 11, 12, 20]
    # Checkpoint state keeps the ring layout and write position: a restore into the same capacity is exact ...
    state = buf.state_dict()
    assert state["storage"]["rewards"].tolist() == [21, 22, 2, 10, 11, 12, 20] and state["pos"] == 2
    same = ReplayBuffer(capacity=7, observation_space=OBS, action_space=gym.spaces.Discrete(2))
    same.load_state_dict(state)
    assert same.storage["rewards"].tolist() == [21, 22, 2, 10, 11, 12, 20] and (same.size, same.pos) == (7, 2)
    add_steps(same, 3, 1, num_envs=1)      # the next write replaces the oldest row
    assert same.storage["rewards"].tolist()[2] == 30
    # ... and a smaller buffer keeps the newest transitions, oldest first.
    smaller = ReplayBuffer(capacity=4, observation_space=OBS, action_space=gym.spaces.Discrete(2))
    smaller.load_state_dict(state)
    assert smaller.storage["rewards"].tolist() == [12, 20, 21, 22] and (smaller.size, smaller.pos) == (4, 0)


@pytest.mark.parametrize("filled", [10, 7])
def test_sampling_is_uniform_over_the_filled_rows(filled):
    buf = ReplayBuffer(capacity=10, observation_space=OBS, action_space=gym.spaces.Discrete(2))
    for i in range(filled):
        buf.add(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), np.array([i]), np.zeros((1, 2)), np.zeros(1, bool))
    draws = 70_000
    torch.manual_seed(0)
    rewards = buf.sample(draws)["rewards"].long()
    counts = torch.bincount(rewards, minlength=10).double()
    assert counts[filled:].sum() == 0  # never an unfilled row
    expected = draws / filled
    chi2 = (((counts[:filled] - expected) ** 2) / expected).sum().item()
    # 99.9% quantile of chi-square with 9 (or 6) degrees of freedom is 27.9 (22.5); an off-by-one
    # that drops or doubles a row moves one count by ~7000-10000 and chi2 into the thousands.
    assert chi2 < 27.9


def test_buffer_refuses_to_allocate_more_than_memory_with_needed_and_available():
    image = gym.spaces.Box(0, 255, (84, 84, 3), np.uint8)
    with pytest.raises(ConfigurationError, match=r"buffer_size=100000000 needs 3944\.06 GiB on cpu but only .* "
                                                 r"available; lower buffer_size to at most \d+"):
        ReplayBuffer(capacity=100_000_000, observation_space=image, action_space=gym.spaces.Discrete(4))


def test_images_are_stored_as_uint8_and_dict_observations_key_by_key():
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8), "goal": gym.spaces.Box(0, 1, (2,))})
    buf = ReplayBuffer(capacity=4, observation_space=space, action_space=gym.spaces.Discrete(2))
    assert buf.storage["obs.image"].dtype == torch.uint8 and buf.storage["next_obs.goal"].dtype == torch.float32
    obs = {"image": np.full((1, 4, 4, 3), 255, np.uint8), "goal": np.array([[0.0, 1.0]], np.float32)}
    buf.add(obs, np.array([1]), np.array([0.5]), obs, np.array([False]))
    batch = buf.sample(3)
    assert batch["obs"]["image"].shape == (3, 4, 4, 3) and int(batch["obs"]["image"].max()) == 255
    assert batch["next_obs"]["goal"][0].tolist() == [0.0, 1.0]


def test_td_targets_zero_the_future_on_termination_and_bootstrap_on_truncation():
    rewards = torch.tensor([1.0, 1.0])
    terminated = torch.tensor([True, False])  # the second transition was truncated (or simply went on)
    next_q_target = torch.tensor([[5.0, 3.0], [2.0, 4.0]])
    assert dqn_targets(rewards, terminated, next_q_target, 0.5).tolist() == [1.0, 1.0 + 0.5 * 4.0]
    # Double DQN: the online net picks action 0, the target net values it.
    next_q_online = torch.tensor([[0.0, 9.0], [9.0, 0.0]])
    assert dqn_targets(rewards, terminated, next_q_target, 0.5, next_q_online).tolist() == [1.0, 1.0 + 0.5 * 2.0]
    # A masked best action is never chosen.
    mask = torch.tensor([[True, True], [True, False]])
    assert dqn_targets(rewards, terminated, next_q_target, 0.5, next_action_mask=mask).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("env_kwargs", [{"truncate_at": 3}, {"terminate_at": 3}])
def test_collected_transitions_keep_the_final_observation_and_only_termination(env_kwargs):
    model = DQN(env=CounterEnv, env_kwargs=env_kwargs, learning_starts=64, batch_size=32, train_freq=8)
    model.setup("fit")
    model.collect_round()
    buf = model.buffer
    obs, next_obs = buf.storage["obs"][:8, 0].tolist(), buf.storage["next_obs"][:8, 0].tolist()
    assert obs == [0, 1, 2, 0, 1, 2, 0, 1]
    assert next_obs == [1, 2, 3, 1, 2, 3, 1, 2]  # 3 is the final observation, not the reset one
    expected_term = "terminate_at" in env_kwargs
    assert buf.storage["terminated"][:8].tolist() == [False, False, expected_term] * 2 + [False, False]


def test_epsilon_schedule_gives_exact_values():
    assert [linear_schedule(1.0, 0.04, 0.08, p) for p in (0.0, 0.04, 0.08, 0.5)] == pytest.approx(
        [1.0, 0.52, 0.04, 0.04])
    model = DQN(total_steps=1000, exploration_initial_eps=1.0, exploration_final_eps=0.1, exploration_fraction=0.5,
                learning_starts=300)
    for steps, eps in [(0, 1.0), (250, 0.55), (500, 0.1), (900, 0.1)]:
        model.env_steps = steps
        assert model.epsilon == pytest.approx(eps)


def test_soft_and_hard_target_updates_give_exact_values():
    online, target = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    t0 = [p.detach().clone() for p in target.parameters()]
    soft_update(target, online, 0.25)
    for p_t, p_0, p_o in zip(target.parameters(), t0, online.parameters()):
        torch.testing.assert_close(p_t, 0.75 * p_0 + 0.25 * p_o, rtol=0, atol=1e-7)
    soft_update(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))

    # DQN: updates fall due every target_update_interval env steps; two due at once with tau 0.5
    # leave 0.25 of the old target.
    model = DQN(env=CounterEnv, env_kwargs={"terminate_at": 5}, target_update_interval=10, tau=0.5, batch_size=8,
                learning_starts=8)
    model.setup("fit")
    with torch.no_grad():
        for p in model.q_net.parameters():
            p.add_(1.0)
    before = [p.detach().clone() for p in model.q_target.parameters()]
    model.env_steps = 25
    model.update_target()
    assert model.target_updates == 2
    for p_t, p_0, p_o in zip(model.q_target.parameters(), before, model.q_net.parameters()):
        torch.testing.assert_close(p_t, 0.25 * p_0 + 0.75 * p_o)
    model.update_target()  # nothing new is due
    assert model.target_updates == 2


def test_ou_noise_reverts_to_its_mean_at_rate_theta():
    noise = OrnsteinUhlenbeckNoise(num_envs=2, action_dim=1, theta=0.1, sigma=0.0, mu=0.0, dt=1.0)
    noise.state.fill_(1.0)
    path = [noise.sample()[0, 0].item() for _ in range(5)]
    assert path == pytest.approx([0.9 ** k for k in range(1, 6)])
    noise.reset(np.array([True, False]))
    assert noise.state[:, 0].tolist() == pytest.approx([0.0, 0.9 ** 5])
    # With noise, the stationary spread is sigma^2 dt / (1 - (1 - theta dt)^2) around mu.
    torch.manual_seed(0)
    noise = OrnsteinUhlenbeckNoise(num_envs=4000, action_dim=1, theta=0.2, sigma=0.3, mu=0.5, dt=1.0)
    for _ in range(200):
        x = noise.sample()
    assert x.mean().item() == pytest.approx(0.5, abs=0.02)
    assert x.std().item() == pytest.approx((0.09 / (1 - 0.8 ** 2)) ** 0.5, rel=0.05)


def test_bad_off_policy_settings_are_rejected_before_training():
    with pytest.raises(ConfigurationError, match=r"DQN needs a Discrete action space; the env's is Box.*; train it "
                                                 r"with A2C, PPO, DDPG, SAC or TD3$"):
        DQN(env="Pendulum-v1", batch_size=32, learning_starts=100).setup("fit")
    with pytest.raises(ConfigurationError, match=r"DDPG needs a 1-D Box \(continuous\) action space.*Discrete"):
        DDPG(env="CartPole-v1", batch_size=32, learning_starts=100).setup("fit")
    with pytest.raises(ConfigurationError, match=r"batch_size=64 is larger than learning_starts=10"):
        DQN(batch_size=64, learning_starts=10)
    with pytest.raises(ConfigurationError, match=r"batch_size=64 is larger than buffer_size=32"):
        DDPG(batch_size=64, buffer_size=32, learning_starts=100)
    with pytest.raises(ConfigurationError, match=r"buffer_size=1000000000000 needs .* GiB"):
        DQN(env="CartPole-v1", buffer_size=10**12, batch_size=32, learning_starts=100).setup("fit")
    for name, value in [("exploration_final_eps", -0.1), ("exploration_initial_eps", 1.5), ("eval_epsilon", 2.0)]:
        with pytest.raises(ConfigurationError, match=rf"{name}={value} must lie in \[0, 1\]"):
            DQN(**{name: value})
    for algo, tau in [(DQN, 0.0), (DQN, 1.5), (DDPG, -0.1), (DDPG, 2.0)]:
        with pytest.raises(ConfigurationError, match=rf"tau={tau} must lie in \(0, 1\]"):
            algo(tau=tau)


def test_dqn_never_takes_a_masked_action(tmp_path):
    # MaskedEnv asserts if any action but 2 is taken, in random warm-up, exploration and evaluation.
    model = DQN(env=MaskedEnv, learning_starts=16, batch_size=16, train_freq=4, total_steps=128, steps_per_epoch=64,
                eval_episodes=2, exploration_final_eps=0.5)
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    assert model.env_steps == 128
    assert model.buffer.storage["next_action_mask"][:model.buffer.size].all(dim=0).tolist() == [False, False, True,
                                                                                                  False]


@pytest.mark.parametrize("random_warmup", [True, False])
def test_warmup_plays_random_actions_or_the_policy(random_warmup, tmp_path):
    # No updates happen (the first epoch ends before learning_starts): with random_warmup off, every stored action is
    # the untrained actor's own (no noise), as in programs that act with their policy and only delay training.
    model = DDPG(env="Pendulum-v1", num_envs=2, learning_starts=100, batch_size=16, total_steps=256, steps_per_epoch=64,
                 eval_episodes=0, action_noise="none", random_warmup=random_warmup)
    with pytest.warns(UserWarning, match="stops training before total_steps"):
        L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    assert model.env_steps == 64
    stored = model.buffer.storage["actions"][:64]
    with torch.no_grad():
        policy = model.actor(model.buffer.storage["obs"][:64])
    assert torch.allclose(stored, policy, atol=1e-6) is (not random_warmup)


def test_encoders_follow_the_observation_space():
    hwc = gym.spaces.Box(0, 255, (64, 84, 3), np.uint8)
    chw = gym.spaces.Box(0, 255, (3, 64, 84), np.uint8)
    for space in (hwc, chw):
        enc = make_encoder(space)
        assert isinstance(enc, NatureCNN) and enc.out_dim == 512
        assert enc(torch.zeros(2, *space.shape, dtype=torch.uint8)).shape == (2, 512)
    assert make_encoder(hwc).channels_last and not make_encoder(chw).channels_last
    vec = make_encoder(gym.spaces.Box(-1, 1, (5,)), hidden_sizes=[32, 16])
    assert vec.out_dim == 16
    both = make_encoder(gym.spaces.Dict({"image": hwc, "goal": gym.spaces.Box(0, 1, (2,))}), hidden_sizes=[8])
    assert both.out_dim == 512 + 8
    assert both({"image": torch.zeros(3, 64, 84, 3, dtype=torch.uint8), "goal": torch.zeros(3, 2)}).shape == (3, 520)


def test_goal_conditioned_image_gives_the_seed_six_channel_input():
    env = GoalConditionedImage(GoalImageEnv())
    assert env.observation_space.shape == (36, 40, 6) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    goal = env.unwrapped.goal
    image = env.unwrapped._obs()["image"]
    np.testing.assert_array_equal(obs[..., 3 * goal:3 * goal + 3], image)
    assert (obs[..., 3 * (1 - goal):3 * (1 - goal) + 3] == 0).all()


class FirstBatchState(L.Callback):
    """Reads a value off the module when the first training batch starts (a resumed run's state is restored by then)."""

    def __init__(self, read):
        self.read, self.value, self.done = read, None, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.done:
            self.value, self.done = self.read(pl_module), True


def test_replay_buffer_and_target_network_come_back_from_a_checkpoint(tmp_path):
    model = DQN(env="CartPole-v1", learning_starts=64, batch_size=32, train_freq=16, gradient_steps=4,
                total_steps=256, steps_per_epoch=256, eval_episodes=0, target_update_interval=100)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model)
    trainer.save_checkpoint(tmp_path / "dqn.ckpt")
    loaded = DQN.load_from_checkpoint(tmp_path / "dqn.ckpt")
    loaded.setup("fit")
    assert loaded.buffer.size == 256 and loaded.env_steps == 256 and loaded.target_updates == 2
    for name, store in model.buffer.storage.items():
        assert torch.equal(loaded.buffer.storage[name], store), name
    assert all(torch.equal(a, b) for a, b in zip(loaded.q_target.parameters(), model.q_target.parameters()))

    no_buffer = DQN(env="CartPole-v1", learning_starts=64, batch_size=32, buffer_in_checkpoint=False)
    no_buffer.setup("fit")
    ckpt = {"rl_lightning": {}}
    no_buffer.on_save_checkpoint(ckpt)
    assert "replay_buffer" not in ckpt["rl_lightning"]


def test_dqn_trains_on_goal_conditioned_images_from_a_yaml_style_wrapper(tmp_path):
    model = DQN(env="toy_envs:GoalImageEnv", wrappers=[{"class_path": "rl_lightning.envs.transforms.GoalConditionedImage"}],
                learning_starts=32, batch_size=16, train_freq=8, total_steps=96, steps_per_epoch=96, eval_episodes=2,
                eval_num_envs=1, buffer_size=200)
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    conv = model.q_net[0].conv[0]
    assert conv.in_channels == 6 and model.buffer.storage["obs"].dtype == torch.uint8
    assert model.buffer.storage["obs"].shape[1:] == (36, 40, 6)


def test_ddpg_ou_noise_state_survives_a_checkpoint(tmp_path):
    # Written at the end of fit's last epoch (the noise is run state: a resumed fit has it at its first batch).
    def ddpg(total_steps):
        return DDPG(env="Pendulum-v1", action_noise="ou", noise_sigma=0.3, ou_theta=0.15, learning_starts=32,
                    batch_size=32, train_freq=8, total_steps=total_steps, steps_per_epoch=96, eval_episodes=0,
                    hidden_sizes=[16])

    model = ddpg(96)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="ddpg")
    L.Trainer(max_epochs=-1, logger=False, callbacks=[saver], enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(model)
    assert model.noise is not None and model.noise.state.abs().sum() > 0
    seen = FirstBatchState(lambda m: None if m.noise is None else m.noise.state.clone())
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[seen],
              enable_model_summary=False, default_root_dir=tmp_path).fit(ddpg(104), ckpt_path=tmp_path / "ddpg.ckpt")
    assert seen.value is not None and torch.equal(seen.value, model.noise.state)


def test_dqn_orthogonal_init_option():
    from toy_envs import GoalImageEnv

    env = GoalImageEnv()
    default = DQN(env=GoalImageEnv, hidden_sizes=[16], cnn_features=32, seed=0)
    default._attach_spaces(env.observation_space, env.action_space)
    ortho = DQN(env=GoalImageEnv, hidden_sizes=[16], cnn_features=32, seed=0, ortho_init=True)
    ortho._attach_spaces(env.observation_space, env.action_space)
    layers = [m for m in ortho.q_net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert len(layers) == 6  # three convs and a linear layer (image), one hidden layer (goal), the Q head
    for layer in layers:
        w = layer.weight.flatten(1)
        rows, cols = w.shape
        gram = w @ w.T if rows <= cols else w.T @ w
        gain = 1.0 if layer is ortho.q_net[1] else 2.0 ** 0.5
        torch.testing.assert_close(gram, gain ** 2 * torch.eye(min(rows, cols)), atol=1e-4, rtol=0)
        assert not layer.bias.any()
    assert default.q_net[1].bias.any()  # PyTorch's default init is left alone without the option
    # The target network starts as a copy of the initialised online network.
    for a, b in zip(ortho.q_net.parameters(), ortho.q_target.parameters()):
        assert torch.equal(a, b)

