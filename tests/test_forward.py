"""``model(obs)`` (``RLModule.forward``): the deterministic actions as tensors, for ``trainer.predict``,
``to_onnx`` and ``to_torchscript``; and the observation shape check of ``forward`` and ``act``."""

from __future__ import annotations

import re
import warnings

import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rl_lightning import DDPG, DQN, PPO
from rl_lightning.errors import ConfigurationError

warnings.filterwarnings("ignore", message=r".*(GPU available|to_torchscript|TorchScript|does not have many workers).*")

CASES = {
    "ppo-discrete": lambda: PPO(env="CartPole-v1", hidden_sizes=[8]),
    "ppo-box": lambda: PPO(env="Pendulum-v1", hidden_sizes=[8], log_std_init=0.0),
    "ppo-multidiscrete": lambda: PPO(env="toy_envs:MultiDiscreteEnv", hidden_sizes=[8], check_env=False),
    "dqn": lambda: DQN(env="CartPole-v1", hidden_sizes=[8]),
    "ddpg": lambda: DDPG(env="Pendulum-v1", hidden_sizes=[8]),
    "ppo-discrete-start": lambda: PPO(env="toy_envs:StartDiscreteEnv", hidden_sizes=[8], check_env=False),
    "dqn-discrete-start": lambda: DQN(env="toy_envs:StartDiscreteEnv", hidden_sizes=[8], check_env=False),
}


def built(make):
    """A model whose networks exist (its spaces from an evaluation env), the env closed again."""
    model = make()
    model.hparams.eval_num_envs = 1
    model.setup("validate")
    model.close_envs()
    model.eval()
    return model


def observations(model, n=6, seed=0):
    model.observation_space.seed(seed)
    return np.stack([model.observation_space.sample() for _ in range(n)]).astype(np.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_gives_acts_actions_as_tensors(case):
    model = built(CASES[case])
    obs = observations(model)
    expected = model.act(obs)
    with torch.no_grad():
        got = model(torch.as_tensor(obs))
        one = model(torch.as_tensor(obs[0]))
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    assert got.dtype == (torch.float32 if case in ("ppo-box", "ddpg") else torch.int64)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one.numpy(), expected[0], rtol=0, atol=1e-6)  # one observation: no batch dim
    if case in ("ppo-box", "ddpg"):  # Box: within the env's bounds (clipped by PPO, scaled by DDPG)
        assert (got >= torch.as_tensor(model.action_space.low)).all()
        assert (got <= torch.as_tensor(model.action_space.high)).all()


def test_trainer_predict_on_user_batches():
    model = built(CASES["dqn"])
    obs = observations(model, n=10)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batches = trainer.predict(model, DataLoader(TensorDataset(torch.as_tensor(obs)), batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(torch.cat(batches).numpy(), model.act(obs))
    # Plain observation tensors as batches too; and (observations, action mask) pairs.
    batches = trainer.predict(model, DataLoader(torch.as_tensor(obs), batch_size=5))
    np.testing.assert_array_equal(torch.cat(batches).numpy(), model.act(obs))
    only_one = torch.tensor([[False, True]]).expand(10, 2)
    batches = trainer.predict(model, DataLoader(TensorDataset(torch.as_tensor(obs), only_one), batch_size=5))
    assert torch.cat(batches).tolist() == [1] * 10


@pytest.mark.parametrize("case", ["ppo-discrete", "ppo-box", "dqn", "ddpg", "dqn-discrete-start"])
def test_to_onnx_reproduces_act_in_onnx_runtime(case, tmp_path):
    model = built(CASES[case])
    obs = observations(model)
    path = tmp_path / "policy.onnx"
    # dynamo=False: the TorchScript-based exporter (the dynamo one needs onnxscript, see rl_lightning/export.py).
    model.to_onnx(path, torch.as_tensor(obs[:2]), dynamo=False, input_names=["obs"], output_names=["actions"],
                  dynamic_axes={"obs": {0: "batch"}, "actions": {0: "batch"}})
    got = ort.InferenceSession(str(path)).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(got, model.act(obs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["ppo-discrete", "ddpg"])
def test_to_torchscript_by_tracing_reproduces_act(case, tmp_path):
    # method="trace": scripting the whole LightningModule fails on its Python-only attributes (envs, logs).
    model = built(CASES[case])
    obs = observations(model)
    traced = model.to_torchscript(tmp_path / "policy.pt", method="trace", example_inputs=torch.as_tensor(obs[:2]))
    loaded = torch.jit.load(str(tmp_path / "policy.pt"))
    for module in (traced, loaded):
        np.testing.assert_allclose(module(torch.as_tensor(obs)).detach().numpy(), model.act(obs), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["ppo-discrete", "dqn", "ddpg"])
def test_a_wrong_observation_shape_names_both_shapes(case):
    model = built(CASES[case])
    expected = tuple(model.observation_space.shape)
    for bad in (np.zeros(7, np.float32), np.zeros((3, 7), np.float32), np.zeros((), np.float32)):
        message = re.escape(f"observation has shape {tuple(bad.shape)}, but the model's observation space has "
                            f"shape {expected}")
        with pytest.raises(ConfigurationError, match=message):
            model.act(bad)
        with pytest.raises(ConfigurationError, match="observation space has shape"):
            model(torch.as_tensor(bad))


def test_dict_observations_are_checked_by_key():
    model = built(lambda: PPO(env="toy_envs:GoalImageEnv", hidden_sizes=[8], check_env=False))
    obs = {"image": np.zeros((2, 36, 40, 3), np.uint8), "goal": np.zeros((2, 2), np.float32)}
    assert model.act(obs).shape == (2,)
    with torch.no_grad():
        assert model({k: torch.as_tensor(v) for k, v in obs.items()}).tolist() == model.act(obs).tolist()
    with pytest.raises(ConfigurationError, match=r"lacks the keys \['goal'\]"):
        model.act({"image": obs["image"]})
    with pytest.raises(ConfigurationError, match=r"observation 'image' has shape \(2, 40, 36, 3\).*\(36, 40, 3\)"):
        model.act({"image": obs["image"].transpose(0, 2, 1, 3), "goal": obs["goal"]})


def test_forward_and_act_apply_the_observation_statistics(tmp_path):
    model = PPO(env="Pendulum-v1", hidden_sizes=[8], n_steps=64, batch_size=64, total_steps=256,
                steps_per_epoch=256, eval_episodes=0, normalize_observations=True)
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    model.eval()
    obs = observations(model)
    stats = model.normalization.obs
    assert not torch.allclose(stats.mean, torch.zeros_like(stats.mean))  # the statistics moved in training
    normalized = torch.as_tensor(obs, dtype=torch.float32)
    normalized = torch.clamp((normalized - stats.mean.float()) / torch.sqrt(stats.var.float() + 1e-8), -10, 10)
    with torch.no_grad():
        expected = model.predict_actions(normalized, True)
        torch.testing.assert_close(model(torch.as_tensor(obs)), expected)
    np.testing.assert_allclose(model.act(obs), expected.numpy(), rtol=1e-6, atol=1e-6)
