"""ONNX export: ONNX Runtime reproduces the PyTorch policy; the ML-Agents format follows Unity's loader rules."""

import gymnasium as gym
import lightning as L
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from toy_envs import GoalImageEnv, ShiftingMaskEnv

from rl_lightning import A2C, DDPG, DQN, PPO
from rl_lightning.checkpointing import CheckpointError
from rl_lightning.cli import main
from rl_lightning.export import export_onnx

MODELS = {
    "PPO-discrete": (PPO, dict(env="CartPole-v1", n_steps=32, batch_size=32, hidden_sizes=[16])),
    "PPO-continuous": (PPO, dict(env="Pendulum-v1", n_steps=32, batch_size=32, hidden_sizes=[16])),
    "A2C": (A2C, dict(env="Acrobot-v1", n_steps=8, hidden_sizes=[16])),
    "DQN": (DQN, dict(env="CartPole-v1", learning_starts=32, batch_size=16, hidden_sizes=[16])),
    "DDPG": (DDPG, dict(env="Pendulum-v1", learning_starts=32, batch_size=16, hidden_sizes=[16])),
    "DQN-image": (DQN, dict(env=GoalImageEnv, learning_starts=32, batch_size=16, hidden_sizes=[16],
                            cnn_features=32)),
    "PPO-masked-multidiscrete": (PPO, dict(env=ShiftingMaskEnv, n_steps=32, batch_size=32, hidden_sizes=[16])),
}


def trained(name):
    cls, kwargs = MODELS[name]
    model = cls(**kwargs, total_steps=64, steps_per_epoch=64, eval_episodes=0, seed=1)
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model)
    return model


def random_observations(space, n, rng):
    """Observations spread over the space (unbounded dimensions: a few units around zero)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: random_observations(s, n, rng) for k, s in space.spaces.items()}
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
    low = np.where(np.isfinite(space.low), space.low, -3.0)
    high = np.where(np.isfinite(space.high), space.high, 3.0)
    return rng.uniform(low, high, (n, *space.shape)).astype(np.float32)


def random_masks(model, n, rng):
    """Masks with at least one allowed action per branch."""
    branches = branch_sizes(model.action_space)
    cols = []
    for b in branches:
        m = rng.random((n, b)) < 0.5
        m[np.arange(n), rng.integers(0, b, n)] = True
        cols.append(m)
    return np.concatenate(cols, axis=1)


def branch_sizes(space):
    return [int(space.n)] if isinstance(space, gym.spaces.Discrete) else [int(n) for n in space.nvec]


def discrete(model):
    return not isinstance(model.action_space, gym.spaces.Box)


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_runtime_reproduces_the_policy(name, tmp_path):
    model = trained(name)
    rng = np.random.default_rng(0)
    obs = random_observations(model.observation_space, 64, rng)
    masks = random_masks(model, 64, rng) if discrete(model) else None
    expected = model.act(obs, deterministic=True, action_mask=masks)

    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "plain.onnx")))
    feeds = {f"obs_{k}": v for k, v in obs.items()} if isinstance(obs, dict) else {"obs": obs}
    if masks is not None:
        feeds["action_masks"] = masks
    (actions,) = session.run(None, feeds)
    assert [o.name for o in session.get_outputs()] == ["actions"]
    if discrete(model):
        assert actions.dtype == np.int64 and np.array_equal(actions, expected)
        offsets = np.r_[0, np.cumsum(branch_sizes(model.action_space))[:-1]]
        assert masks[np.arange(64)[:, None], actions.reshape(64, -1) + offsets].all()  # only allowed actions
    else:
        np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)
    # Variety: the checks above would pass trivially for a policy stuck on one action.
    assert len(np.unique(np.round(actions, 3), axis=0)) > 1


def mlagents_inputs(model, obs, masks):
    """What Unity feeds: float32 obs_i in sorted sensor-name order, images NCHW in [0, 1], float masks."""
    items = [obs[k] for k in sorted(obs)] if isinstance(obs, dict) else [obs]
    feeds = {}
    for i, x in enumerate(items):
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        feeds[f"obs_{i}"] = x.astype(np.float32)
    if masks is not None:
        feeds["action_masks"] = masks.astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", ["PPO-masked-multidiscrete", "DQN-image", "PPO-continuous", "DDPG"])
def test_mlagents_format_follows_unitys_loader_rules(name, tmp_path):
    model = trained(name)
    path = export_onnx(model, tmp_path / "policy.onnx", format="mlagents")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [9]

    graph = proto.graph
    inputs = {i.name: i for i in graph.input}
    is_discrete = discrete(model)
    n_obs = len(model.observation_space.spaces) if isinstance(model.observation_space, gym.spaces.Dict) else 1
    assert list(inputs) == [f"obs_{i}" for i in range(n_obs)] + (["action_masks"] if is_discrete else [])
    for i in inputs.values():
        assert i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = i.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and all(d.dim_value > 0 for d in dims[1:])  # only the batch is dynamic
    if name == "DQN-image":  # sorted names: goal (vector) is obs_0, image is obs_1 in NCHW
        assert [d.dim_value for d in inputs["obs_1"].type.tensor_type.shape.dim[1:]] == [3, 36, 40]

    kind = "discrete" if is_discrete else "continuous"
    assert [o.name for o in graph.output] == ["version_number", "memory_size", f"{kind}_actions",
                                              f"{kind}_action_output_shape", f"deterministic_{kind}_actions"]
    # Constants are initializers named like their outputs (Unity reads them without running the graph), float32.
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    assert constants["version_number"].tolist() == [3.0] and constants["memory_size"].tolist() == [0.0]
    if is_discrete:
        branches = [float(n) for n in branch_sizes(model.action_space)]
        assert constants["discrete_action_output_shape"].tolist() == [branches]
    else:
        assert constants["continuous_action_output_shape"].tolist() == [float(model.action_space.shape[0])]
    assert all(constants[n].dtype == np.float32 for n in ("version_number", "memory_size"))

    rng = np.random.default_rng(1)
    obs = random_observations(model.observation_space, 32, rng)
    masks = random_masks(model, 32, rng) if is_discrete else None
    expected = model.act(obs, deterministic=True, action_mask=masks)
    session = ort.InferenceSession(str(path))
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, mlagents_inputs(model, obs, masks))))
    actions, deterministic = out[f"{kind}_actions"], out[f"deterministic_{kind}_actions"]
    assert np.array_equal(actions, deterministic)
    if is_discrete:
        assert actions.dtype == np.int64 and actions.shape == (32, len(branches))
        assert np.array_equal(actions, expected.reshape(32, -1))
    else:
        assert actions.dtype == np.float32 and actions.shape == expected.shape
        np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)


def test_export_command_writes_a_checkpoints_policy(tmp_path, capsys):
    model = trained("PPO-discrete")
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "ppo.ckpt")
    main(["export", "--ckpt_path", str(tmp_path / "ppo.ckpt"), "--output", str(tmp_path / "ppo.onnx"),
          "--format", "mlagents"])
    assert f"Wrote {tmp_path / 'ppo.onnx'} (mlagents format)" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "ppo.onnx"))
    obs = np.random.default_rng(2).uniform(-1, 1, (8, 4)).astype(np.float32)
    out = session.run(["discrete_actions"], {"obs_0": obs, "action_masks": np.ones((8, 2), np.float32)})[0]
    assert np.array_equal(out[:, 0], model.act(obs))


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_text("nope")
    with pytest.raises(CheckpointError, match="cannot be read"):
        main(["export", "--ckpt_path", str(tmp_path / "x.ckpt"), "--output", str(tmp_path / "x.onnx")])
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="was not written by rl_lightning"):
        main(["export", "--ckpt_path", str(tmp_path / "other.ckpt"), "--output", str(tmp_path / "x.onnx")])
