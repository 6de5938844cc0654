"""ONNX export: ONNX Runtime reproduces the PyTorch policy; the ML-Agents format follows Unity's loader rules."""

import math
import os

import gymnasium as gym
import lightning as L
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
import yaml
from toy_envs import ActionLayoutEnv, GoalImageEnv, MaskedEnv, ShiftingMaskEnv

from rl_lightning import A2C, DDPG, DQN, PPO, SAC, TD3, DiscreteSAC
from rl_lightning.checkpointing import CheckpointError
from rl_lightning.cli import main
from rl_lightning.envs.transforms import GoalConditionedImage
from rl_lightning.errors import ConfigurationError
from rl_lightning.export import export_onnx, load_model
from rl_lightning.export import main as export_main

# buffer_size: 64 training steps need no more; the default 1M preallocates GBs for image observations.
MODELS = {
    "PPO-discrete": (PPO, dict(env="CartPole-v1", n_steps=32, batch_size=32, hidden_sizes=[16])),
    "PPO-continuous": (PPO, dict(env="Pendulum-v1", n_steps=32, batch_size=32, hidden_sizes=[16])),
    "A2C": (A2C, dict(env="Acrobot-v1", n_steps=8, hidden_sizes=[16])),
    "DQN": (DQN, dict(env="CartPole-v1", learning_starts=32, batch_size=16, hidden_sizes=[16], buffer_size=1000)),
    "DDPG": (DDPG, dict(env="Pendulum-v1", learning_starts=32, batch_size=16, hidden_sizes=[16], buffer_size=1000)),
    "TD3": (TD3, dict(env="Pendulum-v1", learning_starts=32, batch_size=16, hidden_sizes=[16], buffer_size=1000)),
    "SAC": (SAC, dict(env="Pendulum-v1", learning_starts=32, batch_size=16, hidden_sizes=[16], buffer_size=1000)),
    "DiscreteSAC-masked": (DiscreteSAC, dict(env=MaskedEnv, learning_starts=32,
                                             batch_size=16, hidden_sizes=[16], buffer_size=1000)),
    "DQN-image": (DQN, dict(env=GoalImageEnv, learning_starts=32, batch_size=16, hidden_sizes=[16],
                            cnn_features=32, buffer_size=1000)),
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
    # Only the envs that give masks make a plain graph with an action_masks input (CartPole's takes obs only).
    assert model.env_gives_action_masks == ("masked" in name)
    rng = np.random.default_rng(0)
    obs = random_observations(model.observation_space, 64, rng)
    masks = random_masks(model, 64, rng) if model.env_gives_action_masks else None
    expected = model.act(obs, deterministic=True, action_mask=masks)

    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "plain.onnx")))
    feeds = {f"obs_{k}": v for k, v in obs.items()} if isinstance(obs, dict) else {"obs": obs}
    if masks is not None:
        feeds["action_masks"] = masks
    assert sorted(i.name for i in session.get_inputs()) == sorted(feeds)
    (actions,) = session.run(None, feeds)
    assert [o.name for o in session.get_outputs()] == ["actions"]
    if discrete(model):
        assert actions.dtype == np.int64 and np.array_equal(actions, expected)
        if masks is not None:
            offsets = np.r_[0, np.cumsum(branch_sizes(model.action_space))[:-1]]
            assert masks[np.arange(64)[:, None], actions.reshape(64, -1) + offsets].all()  # only allowed actions
    else:
        np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)
    # Variety: the checks above would pass trivially for a policy stuck on one action. (64 env steps leave the image
    # DQN's Q values preferring one action on every observation; with no masks to vary its choice, it stays there.
    # test_gridworld_export_takes_camera_and_goal_and_returns_unitys_five_actions checks an image DQN's variety.)
    if name != "DQN-image":
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


@pytest.mark.parametrize("name", ["PPO-masked-multidiscrete", "DQN-image", "PPO-continuous", "DDPG", "TD3", "SAC",
                                  "DiscreteSAC-masked"])
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
    sampled, actions = out[f"{kind}_actions"], out[f"deterministic_{kind}_actions"]
    assert sampled.dtype == actions.dtype and sampled.shape == actions.shape
    if name in ("DQN-image", "DDPG", "TD3"):  # deterministic exports: the sampled output is the same action
        assert np.array_equal(sampled, actions)
    else:  # a sample of the policy, not its most likely action
        assert not np.array_equal(sampled, actions)
    if is_discrete:
        assert actions.dtype == np.int64 and actions.shape == (32, len(branches))
        assert np.array_equal(actions, expected.reshape(32, -1))
        offsets = np.r_[0, np.cumsum(branches)[:-1]].astype(int)
        assert masks[np.arange(32)[:, None], sampled + offsets].all()  # samples keep to the allowed actions
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
    out = session.run(["deterministic_discrete_actions"],
                      {"obs_0": obs, "action_masks": np.ones((8, 2), np.float32)})[0]
    assert np.array_equal(out[:, 0], model.act(obs))


def test_plain_export_of_an_env_without_masks_takes_obs_only_and_older_checkpoints_keep_the_masks_input(tmp_path):
    model = trained("PPO-discrete")  # CartPole: discrete actions, no masks
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "ppo.ckpt")
    main(["export", "--ckpt_path", str(tmp_path / "ppo.ckpt"), "--output", str(tmp_path / "ppo.onnx")])
    session = ort.InferenceSession(str(tmp_path / "ppo.onnx"))
    assert [i.name for i in session.get_inputs()] == ["obs"]
    obs = np.random.default_rng(5).uniform(-1, 1, (8, 4)).astype(np.float32)
    (actions,) = session.run(None, {"obs": obs})
    assert np.array_equal(actions, model.act(obs, deterministic=True))

    # A checkpoint from before the env's masks were recorded: the input stays, as such exports had it.
    checkpoint = torch.load(tmp_path / "ppo.ckpt", weights_only=True)
    assert checkpoint["rl_lightning"]["env_gives_action_masks"] is False
    del checkpoint["rl_lightning"]["env_gives_action_masks"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    session = ort.InferenceSession(str(export_onnx(load_model(tmp_path / "old.ckpt"), tmp_path / "old.onnx")))
    assert [i.name for i in session.get_inputs()] == ["obs", "action_masks"]


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_text("nope")
    with pytest.raises(CheckpointError, match="cannot be read"):
        export_main(["--ckpt_path", str(tmp_path / "x.ckpt"), "--output", str(tmp_path / "x.onnx")])
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="was not written by rl_lightning"):
        export_main(["--ckpt_path", str(tmp_path / "other.ckpt"), "--output", str(tmp_path / "x.onnx")])


# ONNX operators Unity's Barracuda supports: the "Operations" and "Activations" lists of Barracuda's
# documentation page "Supported ONNX operators" (Documentation~/SupportedOperators.md of the
# com.unity.barracuda package, versions 1.3-2.0, the inference engine of ML-Agents Release 19/20;
# docs.unity3d.com/Packages/com.unity.barracuda@2.0/manual/SupportedOperators.html).
BARRACUDA_OPERATORS = {
    "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "DepthToSpace", "Div", "Dropout", "Equal", "Expand", "Flatten",
    "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "Identity", "ImageScaler",
    "InstanceNormalization", "Less", "LessOrEqual", "LRN", "LSTM", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul",
    "Multinomial", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "Pow", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "Reshape", "Resize", "Shape", "Slice", "SpaceToDepth", "Split", "Squeeze", "Sub", "Sum", "Tile",
    "TopK", "Transpose", "Unsqueeze", "Upsample", "Where", "Xor",
    # Activations
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Clip", "Cos", "Cosh", "Elu", "Exp", "Floor",
    "LeakyRelu", "Log", "LogSoftmax", "Neg", "PRelu", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sin", "Sinh",
    "Softmax", "Sqrt", "Tan", "Tanh",
}


def unsupported_operators(path):
    return sorted({node.op_type for node in onnx.load(str(path)).graph.node} - BARRACUDA_OPERATORS)


def built(cls, **kwargs):
    """A module with its networks built for its env (setup, no training): exports need spaces and weights only."""
    model = cls(**kwargs, eval_episodes=0, seed=3)
    model.setup("fit")
    return model


LAYOUTS = {f"continuous-{n}": dict(continuous=n) for n in range(1, 6)}
LAYOUTS.update({"discrete-5": dict(branches=[5]), "discrete-3x3": dict(branches=[3, 3]),
                "discrete-2x4x6": dict(branches=[2, 4, 6]), "discrete-3-masked": dict(branches=[3], masked=True)})


def layout_models(layout):
    """Every algorithm that can act in ``layout``, built for an ``ActionLayoutEnv`` of it."""
    kwargs = dict(env=ActionLayoutEnv, env_kwargs=LAYOUTS[layout], hidden_sizes=[16])
    models = [PPO(**kwargs, n_steps=8, batch_size=8), A2C(**kwargs, n_steps=8)]
    if layout.startswith("continuous"):
        models.append(DDPG(**kwargs, buffer_size=100, learning_starts=16, batch_size=16))
        models.append(SAC(**kwargs, buffer_size=100, learning_starts=16, batch_size=16))
    elif len(LAYOUTS[layout]["branches"]) == 1:
        models.append(DQN(**kwargs, buffer_size=100, learning_starts=16, batch_size=16))
        models.append(DiscreteSAC(**kwargs, buffer_size=100, learning_starts=16, batch_size=16))
    for model in models:
        model.hparams.eval_episodes = 0
        model.setup("fit")
    return models


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_action_layout_exports_in_both_formats_with_barracudas_operators(layout, tmp_path):
    rng = np.random.default_rng(4)
    for model in layout_models(layout):
        for fmt in ("mlagents", "onnx"):
            path = export_onnx(model, tmp_path / f"{type(model).__name__}-{fmt}.onnx", format=fmt)
            onnx.checker.check_model(onnx.load(str(path)))
            assert unsupported_operators(path) == [], f"{type(model).__name__} {fmt}"
            obs = random_observations(model.observation_space, 16, rng)
            # ML-Agents' format takes masks for every discrete policy; the plain one where the env gives them.
            takes_masks = discrete(model) and (fmt == "mlagents" or LAYOUTS[layout].get("masked", False))
            masks = random_masks(model, 16, rng) if takes_masks else None
            expected = model.act(obs, deterministic=True, action_mask=masks)
            session = ort.InferenceSession(str(path))
            names = [o.name for o in session.get_outputs()]
            assert ("action_masks" in [i.name for i in session.get_inputs()]) == takes_masks
            if fmt == "onnx":
                feeds = {"obs": obs, **({} if masks is None else {"action_masks": masks})}
                (actions,) = session.run(None, feeds)
            else:
                out = dict(zip(names, session.run(None, mlagents_inputs(model, obs, masks))))
                kind = "discrete" if discrete(model) else "continuous"
                actions = out[f"deterministic_{kind}_actions"]
                assert out[f"{kind}_actions"].shape == actions.shape
                if discrete(model):
                    assert out["discrete_action_output_shape"].tolist() == [LAYOUTS[layout]["branches"]]
                else:
                    assert out["continuous_action_output_shape"].tolist() == [LAYOUTS[layout]["continuous"]]
                assert out["version_number"].tolist() == [3.0] and out["memory_size"].tolist() == [0.0]
                expected = expected.reshape(actions.shape)
            if discrete(model):
                assert np.array_equal(actions, expected)
            else:
                np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)


def test_mlagents_constants_are_initializers_of_their_own_even_when_equal(tmp_path):
    # Three continuous actions: continuous_action_output_shape [3] equals version_number [3].
    (ddpg,) = [m for m in layout_models("continuous-3") if isinstance(m, DDPG)]
    graph = onnx.load(str(export_onnx(ddpg, tmp_path / "drone.onnx", format="mlagents"))).graph
    constants = {i.name: numpy_helper.to_array(i).tolist() for i in graph.initializer}
    assert constants["version_number"] == [3.0] and constants["continuous_action_output_shape"] == [3.0]
    assert constants["memory_size"] == [0.0]


def test_a_failed_export_leaves_no_file(tmp_path, monkeypatch):
    (model,) = [m for m in layout_models("discrete-5") if isinstance(m, DQN)]

    def half_written_then_fails(module, args, f, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half a graph")
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(torch.onnx, "export", half_written_then_fails)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        export_onnx(model, tmp_path / "policy.onnx", format="mlagents")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file
    (tmp_path / "policy.onnx").write_bytes(b"the previous export")
    with pytest.raises(RuntimeError, match="the exporter failed"):
        export_onnx(model, tmp_path / "policy.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["policy.onnx"]
    assert (tmp_path / "policy.onnx").read_bytes() == b"the previous export"


def test_an_exported_file_gets_the_permissions_of_any_new_file(tmp_path):
    (model,) = [m for m in layout_models("discrete-5") if isinstance(m, DQN)]
    umask = os.umask(0o022)
    try:
        path = export_onnx(model, tmp_path / "policy.onnx", format="mlagents")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the Unity project's user, not only its writer


def policy_with_fixed_output(model, logits):
    """Make the policy head ignore the observation and output ``logits`` (or Gaussian means)."""
    head = model.policy.policy_head
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.as_tensor(logits))
    return model


def test_sampled_discrete_actions_follow_the_policys_probabilities(tmp_path):
    model = built(PPO, env=ActionLayoutEnv, env_kwargs=dict(branches=[4, 3]), hidden_sizes=[16], n_steps=8,
                  batch_size=8)
    logits = np.array([1.0, 0.0, -1.0, 0.5, 0.3, -0.2, 0.6], np.float32)
    policy_with_fixed_output(model, logits)
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "p.onnx", format="mlagents")))
    n = 20000
    obs = np.random.default_rng(5).uniform(-1, 1, (n, 4)).astype(np.float32)
    masks = np.ones((n, 7), np.float32)
    masks[:, 1] = 0  # branch 0, action 1 is never allowed
    sampled, likeliest = session.run(["discrete_actions", "deterministic_discrete_actions"],
                                     {"obs_0": obs, "action_masks": masks})
    for branch, (lo, hi) in enumerate([(0, 4), (4, 7)]):
        branch_logits = np.where(masks[0, lo:hi] > 0, logits[lo:hi], -np.inf)
        probs = np.exp(branch_logits - branch_logits.max())
        probs /= probs.sum()
        counts = np.bincount(sampled[:, branch], minlength=hi - lo)
        sigma = np.sqrt(n * probs * (1 - probs))
        assert np.all(np.abs(counts - n * probs) <= 5 * sigma + 1e-9), (branch, counts, n * probs)
        assert np.array_equal(likeliest[:, branch], np.full(n, probs.argmax()))
    assert not (sampled[:, 0] == 1).any()  # the masked action never appears
    np.testing.assert_array_equal(likeliest[:100], model.act(obs[:100], deterministic=True,
                                                              action_mask=masks[:100] > 0))


def test_sampled_continuous_actions_have_the_policys_mean_and_std(tmp_path):
    model = built(PPO, env=ActionLayoutEnv, env_kwargs=dict(continuous=3), hidden_sizes=[16], n_steps=8,
                  batch_size=8)
    means = np.array([0.2, -0.3, 0.9], np.float32)
    stds = np.array([0.1, 0.05, 0.5], np.float32)
    policy_with_fixed_output(model, means)
    with torch.no_grad():
        model.policy.log_std.copy_(torch.as_tensor(np.log(stds)))
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "p.onnx", format="mlagents")))
    n = 20000
    obs = np.random.default_rng(6).uniform(-1, 1, (n, 4)).astype(np.float32)
    sampled, mean = session.run(["continuous_actions", "deterministic_continuous_actions"], {"obs_0": obs})
    # Far inside the bounds the samples are the Gaussian's: mean within 5 standard errors, std within 5%.
    for i in (0, 1):
        assert abs(sampled[:, i].mean() - means[i]) < 5 * stds[i] / np.sqrt(n)
        assert abs(sampled[:, i].std() - stds[i]) < 0.05 * stds[i]
    # Near a bound, clipped to the action space as the training envs got them: within [-1, 1], often exactly 1.
    assert sampled[:, 2].min() >= -1.0 and sampled[:, 2].max() == 1.0 and (sampled[:, 2] == 1.0).mean() > 0.3
    np.testing.assert_allclose(mean, np.broadcast_to(means, mean.shape), atol=1e-6)
    np.testing.assert_allclose(mean[:50], model.act(obs[:50], deterministic=True), atol=1e-6)


def test_sac_samples_its_squashed_gaussian_in_the_graph(tmp_path):
    # Bounds [-2, 2], [0, 4], [1, 3]: scale(tanh(u)) = low + (tanh(u) + 1) * (high - low) / 2.
    low, high = np.array([-2.0, 0.0, 1.0], np.float32), np.array([2.0, 4.0, 3.0], np.float32)
    model = built(SAC, env=ActionLayoutEnv, env_kwargs=dict(continuous=3, low=low.tolist(), high=high.tolist()),
                  hidden_sizes=[16], buffer_size=100, learning_starts=16, batch_size=16)
    means = np.array([0.3, -0.5, 0.0], np.float32)
    # The third log std lies above LOG_STD_MAX = 2: the graph must clamp it to 2, as training does.
    log_stds = np.array([np.log(0.2), np.log(0.5), 4.0], np.float32)
    with torch.no_grad():  # a policy whose Gaussian ignores the observation
        for head, bias in ((model.actor.mean, means), (model.actor.log_std, log_stds)):
            head.weight.zero_()
            head.bias.copy_(torch.as_tensor(bias))
    n = 20000
    obs = np.random.default_rng(7).uniform(-1, 1, (n, 4)).astype(np.float32)
    path = export_onnx(model, tmp_path / "sac.onnx", format="mlagents")
    assert unsupported_operators(path) == []
    assert {"RandomNormalLike", "Tanh", "Exp"} <= {node.op_type for node in onnx.load(str(path)).graph.node}
    session = ort.InferenceSession(str(path))
    names = ["continuous_actions", "deterministic_continuous_actions"]
    sampled, likeliest = session.run(names, {"obs_0": obs})
    again, _ = session.run(names, {"obs_0": obs[:100]})
    assert sampled.dtype == np.float32 and sampled.shape == (n, 3)
    assert not np.array_equal(again, sampled[:100])  # a fresh draw on every run
    assert len(np.unique(sampled[:, 0])) > n // 2  # and on every row
    assert (sampled >= low).all() and (sampled <= high).all()
    # Undo the scaling and the tanh: the pre-tanh values are the Gaussian's, mean within 5 standard errors,
    # std within 5%.
    u = np.arctanh(2.0 * (sampled.astype(np.float64) - low) / (high - low) - 1.0)
    stds = np.exp(log_stds)
    for i in (0, 1):
        assert abs(u[:, i].mean() - means[i]) < 5 * stds[i] / np.sqrt(n), (i, u[:, i].mean())
        assert abs(u[:, i].std() - stds[i]) < 0.05 * stds[i], (i, u[:, i].std())
    # Clamped std exp(2): |tanh(u)| < 1/2 iff |u| < atanh(1/2), for ~5.9% of the draws (exp(4) would give ~0.3%).
    unscaled = np.abs(2.0 * (sampled[:, 2] - low[2]) / (high[2] - low[2]) - 1.0)
    p = math.erf(np.arctanh(0.5) / np.exp(2.0) / math.sqrt(2.0))  # P(|N(0, 1)| < x) = erf(x / sqrt(2))
    assert abs((unscaled < 0.5).mean() - p) < 5 * np.sqrt(p * (1 - p) / n), (unscaled < 0.5).mean()
    # The deterministic output is model.act's action: tanh(mean), scaled; in the plain format too.
    np.testing.assert_allclose(likeliest, np.broadcast_to(low + (np.tanh(means) + 1) * (high - low) / 2,
                                                          likeliest.shape), atol=1e-5)
    expected = model.act(obs[:64], deterministic=True)
    np.testing.assert_allclose(likeliest[:64], expected, atol=1e-5, rtol=0)
    plain = export_onnx(model, tmp_path / "plain.onnx")
    assert unsupported_operators(plain) == []
    (actions,) = ort.InferenceSession(str(plain)).run(None, {"obs": obs[:64]})
    np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0)


def seed_model(config, env_id, **overrides):
    """The module of a seed config with its network settings, on the stand-in game as a plain Gymnasium env."""
    with open(f"configs/{config}") as f:
        spec = yaml.safe_load(f)["model"]
    init = dict(spec["init_args"], env=env_id, **overrides)
    for key in ("env_kwargs", "eval_env_kwargs"):
        init.pop(key, None)
    if "buffer_size" in init:
        init["buffer_size"] = 1000  # the seed's replay memory is not needed to export
    init["eval_episodes"] = 0
    cls = {"rl_lightning.DQN": DQN, "rl_lightning.DDPG": DDPG, "rl_lightning.PPO": PPO}[spec["class_path"]]
    model = cls(**init)
    model.setup("fit")
    return model


@pytest.mark.parametrize("config,env_id", [("dqn_gridworld.yaml", "rl_lightning/GridWorld-v0"),
                                           ("ddpg_drone.yaml", "rl_lightning/Drone-v0"),
                                           ("ppo_dodge.yaml", "rl_lightning/Dodge-v0")])
def test_seed_configs_policies_export_with_barracudas_operators(config, env_id, tmp_path):
    model = seed_model(config, env_id)
    for fmt in ("mlagents", "onnx"):
        path = export_onnx(model, tmp_path / f"{fmt}.onnx", format=fmt)
        assert unsupported_operators(path) == []
        ort.InferenceSession(str(path))


def gridworld_observations(n):
    """Raw GridWorld observations and masks, as the game (and Unity) gives them, from several episodes."""
    env = gym.make("rl_lightning/GridWorld-v0")
    images, goals, masks = [], [], []
    obs, info = env.reset(seed=0)
    rng = np.random.default_rng(0)
    while len(images) < n:
        images.append(obs["CameraSensor"])
        goals.append(obs["GoalSensor"])
        masks.append(info["action_mask"])
        obs, _, terminated, truncated, info = env.step(int(rng.integers(1, 5)))
        if terminated or truncated:
            obs, info = env.reset()
    return np.stack(images), np.stack(goals), np.stack(masks).astype(bool)


def test_gridworld_export_takes_camera_and_goal_and_returns_unitys_five_actions(tmp_path):
    model = seed_model("dqn_gridworld.yaml", "rl_lightning/GridWorld-v0")
    with torch.no_grad():  # an untrained head prefers one action everywhere: make the choice depend on the inputs
        head = model.q_net[1]
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0)))
        head.bias.zero_()
    # Through a checkpoint, as `rl-lightning export` reads it: the env's spaces before the wrappers travel with it.
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "dqn.ckpt")
    loaded = load_model(tmp_path / "dqn.ckpt")
    path = export_onnx(loaded, tmp_path / "GridWorld.onnx", format="mlagents")

    graph = onnx.load(str(path)).graph
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim[1:]] for i in graph.input}
    # Sensors in name order, as Unity sends them: "CameraSensor" (the camera, NCHW) before "GoalSensor".
    assert inputs == {"obs_0": [3, 64, 84], "obs_1": [2], "action_masks": [5]}
    constants = {i.name: numpy_helper.to_array(i).tolist() for i in graph.initializer}
    assert constants["discrete_action_output_shape"] == [[5.0]]

    images, goals, masks = gridworld_observations(64)
    wrapper = GoalConditionedImage(gym.make("rl_lightning/GridWorld-v0"))
    wrapped = np.stack([wrapper.observation({"CameraSensor": i, "GoalSensor": g}) for i, g in zip(images, goals)])
    session = ort.InferenceSession(str(path))
    feeds = {"obs_0": images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, "obs_1": goals}
    for mask in (masks, np.ones_like(masks)):  # the game's masks, then everything allowed (action 0 too)
        sampled, actions = session.run(["discrete_actions", "deterministic_discrete_actions"],
                                       {**feeds, "action_masks": mask.astype(np.float32)})
        expected = model.act(wrapped, deterministic=True, action_mask=mask[:, 1:]) + 1
        assert np.array_equal(actions[:, 0], expected)
        assert np.array_equal(sampled, actions)  # DQN acts deterministically
        assert actions.min() >= 1 and mask[np.arange(64), actions[:, 0]].all()
    assert len(np.unique(actions)) > 1

    # The plain format takes the game's own observations (uint8 HWC image) and gives the game's actions.
    plain = ort.InferenceSession(str(export_onnx(loaded, tmp_path / "plain.onnx")))
    (actions,) = plain.run(None, {"obs_GoalSensor": goals, "obs_CameraSensor": images, "action_masks": masks})
    assert np.array_equal(actions, model.act(wrapped, deterministic=True, action_mask=masks[:, 1:]) + 1)


def test_export_refuses_a_wrapper_that_cannot_fold_into_the_graph(tmp_path):
    rescale = {"class_path": "gymnasium.wrappers:RescaleAction", "init_args": {"min_action": -1.0, "max_action": 1.0}}
    model = built(DDPG, env="Pendulum-v1", wrappers=[rescale], hidden_sizes=[16], buffer_size=100, learning_starts=16,
                  batch_size=16)
    with pytest.raises(ConfigurationError, match="gymnasium.wrappers:RescaleAction"):
        export_onnx(model, tmp_path / "p.onnx", format="mlagents")
    assert list(tmp_path.iterdir()) == []


def test_env_spaces_before_wrappers_are_found_behind_per_sub_env_wrappers():
    # A vector env of its own (as Unity's) gets its wrappers as PerSubEnv layers, the statistics wrapper outside.
    import rl_lightning.games  # noqa: F401 (registers the stand-in games)
    from rl_lightning.envs.transforms import ActionOffset, spaces_before_wrappers, wrap_sub_envs

    game = gym.vector.SyncVectorEnv([lambda: gym.make("rl_lightning/GridWorld-v0")])
    venv = wrap_sub_envs(wrap_sub_envs(game, GoalConditionedImage), ActionOffset)
    venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    assert venv.single_action_space == gym.spaces.Discrete(4)
    assert spaces_before_wrappers(venv, 2) == (game.single_observation_space, gym.spaces.Discrete(5))
    assert spaces_before_wrappers(venv, 0) == (venv.single_observation_space, gym.spaces.Discrete(4))


def test_a_checkpoint_without_env_spaces_is_exported_by_building_its_env(tmp_path):
    # Checkpoints written before the env's spaces were recorded: the exporter builds the env to read them.
    model = seed_model("dqn_gridworld.yaml", "rl_lightning/GridWorld-v0")
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "dqn.ckpt")
    checkpoint = torch.load(tmp_path / "dqn.ckpt", weights_only=False)
    del checkpoint["rl_lightning"]["env_spaces"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = load_model(tmp_path / "old.ckpt")
    assert loaded.env_spaces is None
    path = export_onnx(loaded, tmp_path / "GridWorld.onnx", format="mlagents")
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim[1:]] for i in onnx.load(str(path)).graph.input}
    assert inputs == {"obs_0": [3, 64, 84], "obs_1": [2], "action_masks": [5]}
