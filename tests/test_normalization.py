"""Observation and reward normalization: statistics of the training envs only, frozen in evaluation, in the
checkpoint, in act() and the ONNX export, and merged over DDP ranks."""


import gymnasium as gym
import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import normalization_ranks
from two_ranks import run_two_ranks
from rl_lightning import DDPG, DQN, PPO
from rl_lightning.algorithms.normalization import INITIAL_COUNT, Moments, Normalization
from rl_lightning.errors import ConfigurationError
from rl_lightning.export import export_onnx

TINY = {
    "PPO": (PPO, dict(env="Pendulum-v1", num_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden_sizes=[16])),
    "DQN": (DQN, dict(env="CartPole-v1", num_envs=2, learning_starts=32, batch_size=16, buffer_size=500,
                      hidden_sizes=[16])),
    "DDPG": (DDPG, dict(env="Pendulum-v1", num_envs=2, learning_starts=32, batch_size=16, buffer_size=500,
                        hidden_sizes=[16])),
}


def fit(name, tmp_path, total_steps=64, **extra):
    cls, kwargs = TINY[name]
    model = cls(**kwargs, total_steps=total_steps, steps_per_epoch=32, eval_episodes=1, eval_num_envs=1, seed=2,
                normalize_observations=True, normalize_rewards=True, **extra)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu", default_root_dir=tmp_path,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)])
    trainer.fit(model)
    return model, trainer


def stats(model):
    return {k: v.clone() for k, v in model.normalization.state_dict().items()}


def hand_moments(values, initial_count=INITIAL_COUNT):
    """The running statistics in closed form: the prior (mean 0, variance 1, weight 1e-4) joined with ``values``."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    mean = x.sum(axis=0) / (initial_count + n)
    m2 = initial_count * (1.0 + mean ** 2) + ((x - mean) ** 2).sum(axis=0)
    return mean, m2 / (initial_count + n), initial_count + n


def test_reward_scaling_divides_by_the_running_std_of_the_discounted_return():
    norm = Normalization(None, False, True, gamma=0.5, clip_obs=10.0, clip_reward=10.0, epsilon=1e-8)
    norm.envs_reset(np.zeros((2, 1)), 2)
    norm.begin_round(None)
    steps = [([1.0, 2.0], [False, False]), ([3.0, -1.0], [True, False]), ([4.0, 0.5], [False, False])]
    # By hand: the discounted returns per sub-env (gamma 0.5, zeroed after the step that ended an episode).
    returns = [[1.0, 2.0], [3.5, 0.0], [4.0, 0.5]]
    seen = []
    for (reward, ended), ret in zip(steps, returns):
        scaled = norm.observe_rewards(np.array(reward), np.array(ended))
        seen += ret
        _, var, _ = hand_moments(np.array(seen))
        np.testing.assert_allclose(scaled, np.array(reward) / np.sqrt(var + 1e-8), rtol=1e-6)
    # Clipped to clip_reward, and the mean of the returns is never subtracted.
    tight = Normalization(None, False, True, gamma=0.5, clip_obs=10.0, clip_reward=0.5, epsilon=1e-8)
    tight.envs_reset(np.zeros((1, 1)), 1)
    tight.begin_round(None)
    assert tight.observe_rewards(np.array([100.0]), np.array([False]))[0] == pytest.approx(0.5)


def test_observation_statistics_are_those_of_every_training_observation():
    norm = Normalization(gym.spaces.Box(-np.inf, np.inf, (3,)), True, False, 0.99, 10.0, 10.0, 1e-8)
    rng = np.random.default_rng(0)
    reset = rng.normal(5.0, 2.0, (4, 3))
    norm.envs_reset(reset, 4)
    batches = [rng.normal(5.0, 2.0, (4, 3)) for _ in range(5)]
    norm.begin_round(reset)
    for obs in batches:
        out = norm.observe(obs)
    norm.end_round()
    mean, var, count = hand_moments(np.concatenate([reset, *batches]))
    np.testing.assert_allclose(norm.obs.mean.numpy(), mean)
    np.testing.assert_allclose(norm.obs.var.numpy(), var)
    assert float(norm.obs.count) == pytest.approx(count)
    np.testing.assert_allclose(out, np.clip((batches[-1] - mean) / np.sqrt(var + 1e-8), -10, 10), rtol=1e-5)


@pytest.mark.parametrize("name", list(TINY))
def test_only_training_envs_update_the_statistics_and_evaluation_leaves_them_frozen(name, tmp_path):
    model, trainer = fit(name, tmp_path)
    # 2 reset observations, then 2 per env step: evaluation episodes (one after each epoch) added none.
    assert float(model.normalization.obs.count) == pytest.approx(INITIAL_COUNT + 2 + model.env_steps)
    assert float(model.normalization.returns.count) == pytest.approx(INITIAL_COUNT + model.env_steps)
    before = stats(model)
    model.setup("validate")
    result = model.evaluate(n_episodes=2)
    trainer.validate(model, verbose=False)
    assert result.lengths.sum() > 0
    for key, value in stats(model).items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", list(TINY))
def test_a_loaded_checkpoint_acts_with_the_trained_statistics(name, tmp_path):
    model, _ = fit(name, tmp_path)
    loaded = type(model).load_from_checkpoint(tmp_path / "last.ckpt")
    # Seeded, and many: with an unseeded handful, a small policy's raw and normalized actions could agree by chance.
    model.observation_space.seed(0)
    obs = np.stack([model.observation_space.sample() for _ in range(256)]) * 3.0
    np.testing.assert_array_equal(loaded.act(obs), model.act(obs))
    for key, value in stats(model).items():
        assert torch.equal(stats(loaded)[key], value), key
    # act() normalizes: the policy on raw observations would mostly act otherwise.
    with torch.no_grad():
        raw = loaded.predict_actions(torch.as_tensor(obs, dtype=torch.float32)).numpy()
    assert not np.array_equal(raw, loaded.act(obs))


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("fmt", ["onnx", "mlagents"])
def test_exported_graph_normalizes_as_act_does(name, fmt, tmp_path):
    model, _ = fit(name, tmp_path)
    path = export_onnx(model, tmp_path / "policy.onnx", fmt)
    session = ort.InferenceSession(str(path))
    obs = (np.stack([model.observation_space.sample() for _ in range(32)]) * 3.0).astype(np.float32)
    inputs = {"obs" if fmt == "onnx" else "obs_0": obs}
    discrete = isinstance(model.action_space, gym.spaces.Discrete)
    if discrete and fmt == "mlagents":  # ML-Agents' graphs always take masks; the plain one only for masked envs
        inputs["action_masks"] = np.ones((32, model.action_space.n), dtype=np.float32)
    assert {i.name for i in session.get_inputs()} == set(inputs)
    output = "actions" if fmt == "onnx" else f"deterministic_{'discrete' if discrete else 'continuous'}_actions"
    (exported,) = session.run([output], inputs)
    expected = model.act(obs)
    if discrete:
        np.testing.assert_array_equal(exported.reshape(-1), expected)
    else:
        np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-6)


def test_image_and_dict_observations_are_refused_with_the_setting_named():
    with pytest.raises(ConfigurationError, match="normalize_observations"):
        Normalization(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), True, False, 0.99, 10.0, 10.0, 1e-8)
    with pytest.raises(ConfigurationError, match="normalize_observations"):
        Normalization(gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,))}), True, False, 0.99, 10.0, 10.0, 1e-8)
    with pytest.raises(ConfigurationError, match="clip_obs"):
        PPO(env="Pendulum-v1", normalize_observations=True, clip_obs=0)


def test_ddp_ranks_merge_to_the_statistics_of_all_their_data():
    out = {rank: ({k: torch.as_tensor(v) for k, v in state.items()}, calls)
           for rank, state, calls in run_two_ranks(normalization_ranks.run_rank)}
    # One collective per batch (two batches), and the same statistics on both ranks.
    assert out[0][1] == out[1][1] == 2
    for key, value in out[0][0].items():
        assert torch.equal(value, out[1][0][key]), key
    # Those of one process that saw both ranks' data (the discounted returns run per rank and sub-env).
    obs, returns = [], []
    for rank in range(2):
        running = np.zeros(3)
        for batch in normalization_ranks.rank_data(rank):
            for o, reward in batch:
                obs.append(o)
                running = running * 0.9 + reward
                returns.append(running.copy())
    state = out[0][0]
    for prefix, data in (("obs", np.concatenate(obs)), ("returns", np.concatenate(returns))):
        mean, var, count = hand_moments(data)
        np.testing.assert_allclose(state[f"{prefix}.mean"].numpy(), mean, rtol=1e-10)
        np.testing.assert_allclose(state[f"{prefix}.var"].numpy(), var, rtol=1e-10)
        assert float(state[f"{prefix}.count"]) == pytest.approx(count)


def test_moments_combine_in_any_order_to_the_same_statistics():
    rng = np.random.default_rng(1)
    parts = [rng.normal(i, 1 + i, (5 + i, 2)) for i in range(3)]
    a = Moments(np.zeros(2), np.ones(2), INITIAL_COUNT)
    for p in parts:
        a.update(p)
    b = Moments(np.zeros(2), np.ones(2), INITIAL_COUNT)
    for p in reversed(parts):
        step = Moments.empty((2,))
        step.update(p)
        b.combine(step)
    np.testing.assert_allclose(a.mean, b.mean)
    np.testing.assert_allclose(a.var, b.var)
