"""Trained policies exported to ONNX: a plain graph, or the format Unity ML-Agents' inference engine loads.

    rl-lightning export --ckpt_path last.ckpt --output policy.onnx
    rl-lightning export --ckpt_path last.ckpt --output Dodge.onnx --format mlagents

The graph is traced from the trained module by PyTorch's TorchScript-based exporter, so ONNX Runtime
reproduces ``model.act``. It takes what the env gives and returns what the env takes: the training
config's ``wrappers`` are folded into it. A wrapper folds in through torch-side methods of its own:
``export_observation(obs)`` (an observation wrapper: a batch of the wrapped env's observations, as
tensors, to what the wrapper returns), ``export_action(action)`` (an action wrapper: the policy's actions
to the wrapped env's) and, for discrete actions, ``export_action_mask(mask)`` (the wrapped env's masks to
the policy's). ``GoalConditionedImage`` and ``ActionOffset`` have them; a wrapper without them makes the
export refuse (``ConfigurationError`` naming it). The env's spaces before the wrappers are stored in the
checkpoint (``env_spaces``).

Plain format
    Inputs: ``obs`` (or one input per key of a Dict observation, ``obs_<key>``) in the env's observation
    space's dtype and layout, batch first; ``action_masks`` (bool, one column per action, branches side
    by side) when the policy has discrete actions and was trained on an env that gives masks
    (``model.env_gives_action_masks``; a checkpoint that does not record it, from an older version: whenever
    the actions are discrete, as before). Output: ``actions``, the most likely action: int64
    ``[batch]`` (Discrete), int64 ``[batch, branches]`` (MultiDiscrete) or float32 ``[batch, dim]`` (Box,
    within its bounds). A discrete space's ``start`` is added (``Discrete(3, start=1)`` gives 1, 2 or 3); the
    masks' columns stay one per action from the first. The ML-Agents format refuses such a space.

ML-Agents format (model API version 3, com.unity.ml-agents 2.2.1-exp.1 / Release 19 and later; the
rules below were read from ML-Agents' ``mlagents/trainers/torch_entities/model_serialization.py``,
``networks.py`` (``SimpleActor``), ``action_model.py`` and ``distributions.py``, and from the C# side's
``Runtime/Inference/TensorNames.cs``, ``SentisModelParamLoader.cs`` / ``BarracudaModelParamLoader.cs``,
``TensorGenerator.cs``, ``GeneratorImpl.cs``, ``ApplierImpl.cs`` and ``ModelRunner.cs``):

- Inputs, float32, only dimension 0 (``batch``) dynamic: ``obs_0 .. obs_{N-1}``, one per sensor in the
  order of the sensors' names (Unity sorts them by name; a Dict observation's keys are those names and
  are taken in sorted order); vector observations ``[batch, size]``, images NCHW ``[batch, C, H, W]``
  with values in [0, 1]. ``action_masks`` ``[batch, sum of branch sizes]``, 1 = allowed, 0 = masked,
  for discrete actions only, whether or not the env masks (Unity feeds it; the loader warns when a discrete
  model lacks it; ML-Agents' own exporter always lists it, ``ModelSerializer.__init__``'s ``input_names``).
- Constant outputs, float32, stored as initializers named like the output (the C# loaders read them
  as constants by name, without running the graph; Sentis casts them to float tensors), each its own
  initializer even where values are equal: ``version_number`` = [3.0], ``memory_size`` = [0.0]
  (no recurrent state), ``continuous_action_output_shape`` = [number of continuous actions],
  ``discrete_action_output_shape`` = [[size of each branch]] (shape [1, branches]).
- Action outputs: ``continuous_actions`` / ``deterministic_continuous_actions`` float32 ``[batch, n]``,
  applied by Unity unchanged; ``discrete_actions`` / ``deterministic_discrete_actions`` int64
  ``[batch, branches]`` action indices (Sentis reads them as integer tensors). As in ML-Agents'
  ``ActionModel.get_action_out``, ``*_actions`` samples the policy and ``deterministic_*`` is its most
  likely action, so Unity's "Deterministic Inference" switch picks between them. PPO/A2C: a discrete
  branch samples ``Multinomial`` over the softmax of its logits, masked as ML-Agents masks them
  (``logits * mask - 1e8 * (1 - mask)``); a Gaussian samples ``mean + std * RandomNormalLike``, and both
  it and the mean are clipped to the action space's bounds, as our training clipped the actions it sent
  (ML-Agents clips to [-3, 3] / 3 because that is what its trainer sends; ours sends the clip to the
  Box, [-1, 1] for Unity). DQN, DDPG and TD3 act deterministically (their exploration is a training
  device), so their sampled outputs equal the deterministic ones. SAC samples its squashed Gaussian in the
  graph, ``tanh(mean + exp(log_std) * RandomNormalLike)`` scaled to the bounds (its log std clamped as in
  training), and its deterministic output is ``tanh(mean)`` scaled: what ``model.act`` gives. Both are then
  clipped to the bounds: ONNX Runtime's ``Tanh`` can return a float32 step beyond +-1. ML-Agents'
  own SAC (``sac/trainer.py``: ``tanh_squash=True``) samples the same way (``distributions.py``,
  ``TanhGaussianDistInstance.sample``: ``TanhTransform`` of the Gaussian sample) but inherits
  ``GaussianDistInstance.deterministic_sample``, the mean before tanh, unclipped (``ActionModel`` clips only
  without tanh_squash); ours squashes it, so both outputs lie within the bounds.
- Output order: ``version_number``, ``memory_size``, then the continuous trio, then the discrete trio.
- Opset 9 (what ML-Agents' exporter uses) and only operators Unity's Barracuda 1.x-2.0 supports
  (``tests/test_export.py`` checks every graph against its list): e.g. no ``ReduceLogSumExp``, so
  log-softmax and ``torch.distributions`` stay out of the graph.
Unity's runtime check (``ModelRunner``) refuses versions outside [2, 3]; the Editor's Inspector warns on
observation or action sizes that do not match the agent's Behavior Parameters.

How an algorithm's policy is exported
    A model may define ``export_actions(obs, action_mask) -> (sampled, most_likely)``; both formats use it
    (the plain format keeps ``most_likely``). ``obs``: what the model's networks take, batch first, float
    tensors (a dict of them for a Dict space), already through the folded observation wrappers and the
    model's observation normalization. ``action_mask``: ``None`` for Box actions; for discrete ones a bool
    tensor ``[batch, sum of branch sizes]``, True = allowed, branches side by side, in the model's action
    space (after the wrappers' ``export_action_mask``). Returns two tensors in the layout of the model's
    action space, as ``predict_actions`` gives it: float ``[batch, dim]`` within the Box's bounds, or integer
    branch indices from 0, ``[batch]`` (Discrete) / ``[batch, branches]`` (MultiDiscrete); the exporter adds
    a space's ``start``, applies the action wrappers and casts (float32 / int64). ``sampled`` draws from the
    policy anew for each row and each run: noise from ``torch.randn_like`` / ``torch.rand_like`` of a
    batch-shaped tensor (``RandomNormalLike`` / ``RandomUniformLike``; ``torch.randn(shape)`` would freeze the
    batch size) or ``torch.multinomial`` over a softmax (``Multinomial``). ``most_likely`` is the action
    ``model.act(obs, deterministic=True)`` takes. Masked actions are never returned by either: mask logits
    as ``logits * mask - MASKED_LOGIT * (1 - mask)``. Only operators on Barracuda's list (above) at opset 9.
    SAC defines the hook; a model without it gets PPO/A2C's Gaussian or categorical head (``policy.policy_head``)
    read as above, or else (DQN, DDPG, TD3) ``predict_actions(deterministic=True)`` for both outputs.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_lightning.envs.spaces import action_start, is_hybrid
from rl_lightning.errors import ConfigurationError
from rl_lightning.networks.encoders import channels_last
from rl_lightning.output_paths import check_output_file, write_failure

MLAGENTS_API_VERSION = 3
MLAGENTS_OPSET = 9
Format = Literal["onnx", "mlagents"]

# Masked logits, as ML-Agents' MultiCategoricalDistribution._mask_branch: far below any real logit, finite.
MASKED_LOGIT = 1e8


def _branches(space: gym.Space) -> list[int] | None:
    if isinstance(space, gym.spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [int(n) for n in np.asarray(space.nvec).ravel()]
    return None


def _obs_spaces(space: gym.Space) -> dict[str | None, gym.spaces.Box]:
    """``{key: Box}`` of the observation inputs, in sorted key order (``{None: space}`` for a single Box)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: space.spaces[k] for k in sorted(space.spaces)}
    if isinstance(space, gym.spaces.Box):
        return {None: space}
    raise ConfigurationError(f"cannot export a policy for observation space {space}: use Box or a Dict of Boxes")


def _wrapper_name(spec: Any) -> str:
    if isinstance(spec, dict):
        return str(spec.get("class_path"))
    return spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))


def folded_wrappers(model: Any) -> tuple[gym.Space, gym.Space, list[gym.Wrapper]]:
    """The env's observation and action spaces before the model's ``wrappers``, and those wrappers, innermost first.

    The wrappers are rebuilt over the stored spaces alone (no env is made); each must be able to fold into a
    graph (``export_observation`` / ``export_action`` / ``export_action_mask``), else ``ConfigurationError``.
    """
    from rl_lightning.envs.factory import _apply_wrapper, _import_object
    from rl_lightning.envs.transforms import _SpacesOnly

    specs = list(model.hparams.get("wrappers") or [])
    if not specs:
        return model.observation_space, model.action_space, []
    discrete = _branches(model.action_space) is not None
    for spec in specs:
        name = _wrapper_name(spec)
        cls = _import_object(name) if isinstance(spec, (str, dict)) else spec
        if isinstance(cls, type) and issubclass(cls, gym.ObservationWrapper):
            needed = ["export_observation"]
        elif isinstance(cls, type) and issubclass(cls, gym.ActionWrapper):
            needed = ["export_action"] + (["export_action_mask"] if discrete else [])
        else:
            needed = None
        if needed is None or not all(callable(getattr(cls, m, None)) for m in needed):
            what = "a gymnasium ObservationWrapper or ActionWrapper" if needed is None else " and ".join(needed)
            raise ConfigurationError(
                f"wrappers entry {name!r} cannot be folded into the exported graph: it needs {what} (see "
                "rl_lightning.export); give the wrapper those methods, or train without it to export the policy")
    if model.env_spaces is None:
        # A checkpoint from before env spaces were recorded (or an async-vectorized run): build the evaluation env
        # its settings describe, once, and read the spaces off it.
        try:
            envs = model.make_envs(evaluation=True)
        except Exception as e:  # noqa: BLE001 (any failure to build the env is reported with the remedy)
            raise ConfigurationError(
                "the checkpoint does not record its env's spaces before its wrappers (a checkpoint from an older "
                f"version, or vectorization='async'), and building its env to read them failed ({e}); export it "
                "where its env (env, env_kwargs, eval_env_kwargs of the checkpoint) can be built") from e
        try:
            model._note_env_spaces(envs)
        finally:
            envs.close()
    env: gym.Env = _SpacesOnly(*model.env_spaces)
    wrappers = []
    for spec in specs:
        env = _apply_wrapper(env, spec)
        wrappers.append(env)
    if (env.observation_space, env.action_space) != (model.observation_space, model.action_space):
        raise ConfigurationError(
            f"the wrappers turn the env's spaces into observations {env.observation_space} and actions "
            f"{env.action_space}, not the model's {model.observation_space} and {model.action_space}")
    return model.env_spaces[0], model.env_spaces[1], wrappers


def _policy_actions(model: Any, obs: Any, mask: torch.Tensor | None,
                    bounds: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sampled, most likely) actions of the model's policy, in its action space's layout, with Barracuda's ops.

    ``bounds``: a Box action space's (low, high), which PPO/A2C's Gaussian actions are clipped to.
    """
    export_actions = getattr(model, "export_actions", None)
    if callable(export_actions):  # the algorithm's own hook (module docstring: its contract)
        return export_actions(obs, mask)
    policy = getattr(model, "policy", None)
    space = model.action_space
    if policy is None or not hasattr(policy, "policy_head"):
        # DQN, DDPG, TD3: deterministic policies; their exploration noise is not part of the policy.
        action = model.predict_actions(obs, deterministic=True, action_mask=mask)
        return action, action
    out = policy.policy_head(policy.actor_body(obs))
    if policy.log_std is not None:
        # ML-Agents' GaussianDistInstance.sample: mean + RandomNormalLike * std.
        sample = out + torch.randn_like(out) * torch.exp(policy.log_std)
        low, high = bounds
        return (torch.maximum(torch.minimum(sample, high), low), torch.maximum(torch.minimum(out, high), low))
    return categorical_actions(out, mask, space)


def categorical_actions(logits: torch.Tensor, mask: torch.Tensor | None,
                        space: gym.Space) -> tuple[torch.Tensor, torch.Tensor]:
    """(sampled, most likely) actions of categorical branches, with Barracuda's ops: ``logits`` and ``mask``
    ``[batch, sum of branch sizes]`` (the branches of a Discrete or MultiDiscrete ``space`` side by side), masked
    as ML-Agents masks them; branch indices from 0, ``[batch]`` (Discrete) or ``[batch, branches]``."""
    branches = _branches(space)
    parts = logits.split(branches, dim=-1) if len(branches) > 1 else [logits]
    masks = [None] * len(branches) if mask is None else (
        mask.float().split(branches, dim=-1) if len(branches) > 1 else [mask.float()])
    sampled, likeliest = [], []
    for branch_logits, branch_mask in zip(parts, masks):
        if branch_mask is not None:
            branch_logits = branch_logits * branch_mask - MASKED_LOGIT * (1.0 - branch_mask)
        likeliest.append(branch_logits.argmax(dim=-1, keepdim=True))
        # CategoricalDistInstance.sample: Multinomial over the softmax (the exporter writes Log + Multinomial).
        sampled.append(torch.multinomial(torch.softmax(branch_logits, dim=-1), 1))
    if isinstance(space, gym.spaces.Discrete):
        return sampled[0].reshape(-1), likeliest[0].reshape(-1)
    return torch.cat(sampled, dim=-1), torch.cat(likeliest, dim=-1)


class _Policy(nn.Module):
    """The module's policy as a traceable graph, wrappers folded in, with the chosen format's inputs and outputs."""

    def __init__(self, model: Any, fmt: Format) -> None:
        super().__init__()
        self.model, self.fmt = model, fmt
        env_obs_space, self.env_action_space, wrappers = folded_wrappers(model)
        self.obs_wrappers = [w for w in wrappers if isinstance(w, gym.ObservationWrapper)]
        self.action_wrappers = [w for w in wrappers if isinstance(w, gym.ActionWrapper)]
        self.obs_spaces = _obs_spaces(env_obs_space)
        # The model's image_layout describes its own inputs; the env's images before a wrapper are read by shape.
        layout = model.hparams.get("image_layout", "auto") if not self.obs_wrappers else "auto"
        # Images the env gives as HWC: ML-Agents feeds NCHW, so the graph permutes them back.
        self.hwc = {key: len(space.shape) == 3 and channels_last(space.shape, layout)
                    for key, space in self.obs_spaces.items()}
        if is_hybrid(model.action_space):
            raise ConfigurationError("hybrid actions are not exported yet (continuous + discrete branches); "
                                     "use the checkpoint with model.act() instead")
        self.branches = _branches(self.env_action_space)
        self.continuous = isinstance(self.env_action_space, gym.spaces.Box)
        # ML-Agents' exporter gives every discrete policy an action_masks input, masks or not (ModelSerializer.__init__
        # in mlagents/trainers/torch_entities/model_serialization.py: input_names are obs_i, action_masks,
        # recurrent_in), and Unity feeds it. A plain graph takes one only where the env masks: CartPole's is obs in,
        # actions out. Unknown (None: a checkpoint from before this was recorded) keeps the input, as exports did then.
        self.takes_masks = self.branches is not None and (
            fmt == "mlagents" or getattr(model, "env_gives_action_masks", None) is not False)
        box = model.action_space if isinstance(model.action_space, gym.spaces.Box) else None
        self.register_buffer("action_low", torch.as_tensor(box.low if box else [0.0], dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(box.high if box else [0.0], dtype=torch.float32))
        if not self.continuous and self.branches is None:
            raise ConfigurationError(f"cannot export a policy for action space {self.env_action_space}")
        # Discrete(n, start=s): the policy picks index i, the env takes s + i (rl_lightning.envs.spaces.action_start).
        start = action_start(model.action_space)
        if fmt == "mlagents" and action_start(self.env_action_space) is not None:
            raise ConfigurationError(f"the env's action space {self.env_action_space} does not start at 0; ML-Agents "
                                     "discrete actions are branch indices from 0: export it with format='onnx'")
        self.register_buffer("action_start", None if start is None else torch.as_tensor(start, dtype=torch.int64))

    def _observations(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        obs = {}
        for x, (key, space) in zip(inputs, self.obs_spaces.items()):
            if self.fmt == "mlagents":
                if len(space.shape) == 3:  # NCHW in [0, 1] -> the layout and scale the env gives
                    if self.hwc[key]:
                        x = x.permute(0, 2, 3, 1)
                    if space.dtype == np.uint8:
                        x = x * 255.0
                x = x.to(torch.float32)
            obs[key] = x
        obs = obs[None] if None in obs else obs
        for wrapper in self.obs_wrappers:  # innermost first, as the env's observations went through them
            obs = wrapper.export_observation(obs)
        normalization = getattr(self.model, "normalization", None)
        if normalization is not None:  # the model's observation statistics, as constants of the graph
            obs = normalization.normalize_tensor(obs)
        return obs

    def forward(self, *inputs: torch.Tensor) -> Any:
        n_obs = len(self.obs_spaces)
        obs = self._observations(inputs[:n_obs])
        mask = None
        if self.takes_masks:
            mask = inputs[n_obs] if self.fmt == "onnx" else inputs[n_obs] > 0.5
            for wrapper in self.action_wrappers:
                mask = wrapper.export_action_mask(mask)
        sampled, likeliest = _policy_actions(self.model, obs, mask, (self.action_low, self.action_high))
        if self.action_start is not None:
            sampled, likeliest = sampled + self.action_start, likeliest + self.action_start
        for wrapper in reversed(self.action_wrappers):  # the outermost wrapper gets the policy's action first
            sampled, likeliest = wrapper.export_action(sampled), wrapper.export_action(likeliest)
        if self.fmt == "onnx":
            return likeliest
        if self.continuous:
            return sampled.to(torch.float32), likeliest.to(torch.float32)
        batch = (-1, len(self.branches))
        return sampled.reshape(batch).to(torch.int64), likeliest.reshape(batch).to(torch.int64)

    def example_inputs(self, batch: int = 2) -> tuple[list[str], tuple[torch.Tensor, ...]]:
        names, tensors = [], []
        for i, (key, space) in enumerate(self.obs_spaces.items()):
            sample = torch.as_tensor(np.stack([space.sample() for _ in range(batch)]))
            if self.fmt == "mlagents":
                names.append(f"obs_{i}")
                if len(space.shape) == 3:
                    if self.hwc[key]:
                        sample = sample.permute(0, 3, 1, 2)
                    sample = sample.float() / (255.0 if space.dtype == np.uint8 else 1.0)
                tensors.append(sample.float())
            else:
                names.append("obs" if key is None else f"obs_{key}")
                tensors.append(sample)
        if self.takes_masks:
            names.append("action_masks")
            ones = torch.ones(batch, sum(self.branches))
            tensors.append(ones if self.fmt == "mlagents" else ones.bool())
        return names, tuple(tensors)

    def action_output_names(self) -> list[str]:
        if self.fmt == "onnx":
            return ["actions"]
        kind = "continuous" if self.continuous else "discrete"
        return [f"{kind}_actions", f"deterministic_{kind}_actions"]

    def constants(self) -> dict[str, list[Any]]:
        """The ML-Agents format's constant outputs and their values."""
        consts: dict[str, list[Any]] = {"version_number": [float(MLAGENTS_API_VERSION)], "memory_size": [0.0]}
        if self.continuous:
            consts["continuous_action_output_shape"] = [float(self.env_action_space.shape[0])]
        else:
            consts["discrete_action_output_shape"] = [[float(n) for n in self.branches]]
        return consts


def export_onnx(model: Any, output: str | os.PathLike, format: Format = "onnx",  # noqa: A002 - the CLI's name
                opset: int | None = None) -> Path:
    """Write ``model``'s policy to ``output`` as ONNX (``format="mlagents"`` for Unity); returns the path.

    ``model`` is a trained or loaded ``RLModule`` (``PPO.load_from_checkpoint(path)`` needs no env). The file
    appears only once it is complete: the graph is written to a temporary file beside it, then renamed.
    """
    if format not in ("onnx", "mlagents"):
        raise ConfigurationError(f"format={format!r} must be 'onnx' or 'mlagents'")
    if model.observation_space is None:
        raise ConfigurationError("the model has no networks yet: export a trained model or a loaded checkpoint")
    check_output_file(output, "output")  # before the graph is traced, and before anything is written
    graph = _Policy(model, format).eval()
    names, example = graph.example_inputs()
    outputs = graph.action_output_names()
    dynamic = {name: {0: "batch"} for name in [*names, *outputs]}
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as err:
        raise write_failure(err, output, "exported policy") from err  # type: ignore[misc] - an OSError: never None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # the permissions of a file written directly (mkstemp's are 0600)
    was_training = model.training
    model.eval()
    try:
        # The TorchScript-based exporter (dynamo=False): the dynamo one needs onnxscript and onnx >= 1.18, whose
        # protobuf >= 4 cannot be installed beside mlagents-envs 0.28 (protobuf 3.20). It warns that it is deprecated.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(graph, example, str(tmp), input_names=names, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset or (MLAGENTS_OPSET if format == "mlagents"
                                                                            else 17),
                              dynamo=False, do_constant_folding=True)
        _finish_graph(tmp, graph.constants() if format == "mlagents" else {}, outputs)
        os.replace(tmp, output)
    except (OSError, RuntimeError) as err:
        failure = write_failure(err, output, "exported policy", partial=tmp)  # None: not a failed write
        if failure is None:
            raise
        raise failure from err
    finally:
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return output


def _finish_graph(path: Path, constants: dict[str, list[Any]], action_outputs: list[str]) -> None:
    """Add the constant outputs, each an initializer of its own named like it, in ML-Agents' output order; check.

    They are added after tracing, not traced: the exporter's constant folding would merge equal constants into one
    initializer (``continuous_action_output_shape`` [3] and ``version_number`` [3]), which Unity cannot find by name.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    if constants:
        by_name = {o.name: o for o in graph.output}
        taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
        for name, value in constants.items():
            if name in taken:
                raise RuntimeError(f"the traced graph already has a tensor named {name!r}")
            array = np.asarray(value, dtype=np.float32)
            graph.initializer.append(numpy_helper.from_array(array, name=name))
            by_name[name] = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(array.shape))
        kind = "continuous" if "continuous_action_output_shape" in constants else "discrete"
        order = ["version_number", "memory_size", action_outputs[0], f"{kind}_action_output_shape",
                 action_outputs[1]]
        outputs = [by_name[n] for n in order]
        del graph.output[:]
        graph.output.extend(outputs)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def load_model(ckpt_path: str | os.PathLike) -> Any:
    """The ``RLModule`` a checkpoint holds, whatever its algorithm (no env is built)."""
    import rl_lightning
    from rl_lightning.checkpointing import CheckpointError, load_checkpoint_file

    state = load_checkpoint_file(ckpt_path).get("rl_lightning")
    if state is None:
        raise CheckpointError(f"checkpoint {str(ckpt_path)!r} was not written by rl_lightning")
    cls = getattr(rl_lightning, state["algorithm"], None)
    if cls is None:
        raise CheckpointError(f"checkpoint {str(ckpt_path)!r} holds a {state['algorithm']} model, which this version "
                              "of rl_lightning does not have")
    return cls.load_from_checkpoint(ckpt_path, map_location="cpu")


def newest_last_checkpoint(logs: str | os.PathLike) -> str:
    """The most recently written ``last.ckpt`` of any run under ``logs`` (``<logs>/<name>/<version>/checkpoints``)."""
    from rl_lightning.checkpointing import CheckpointError

    found = sorted(Path(logs).glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(f"--ckpt_path last: no last.ckpt under {str(logs)!r}; pass a checkpoint's path, or "
                              "the folder of the runs with --logs")
    print(f"Exporting {found[-1]}")
    return str(found[-1])


def main(argv: list[str]) -> None:
    """``rl-lightning export``: a checkpoint's policy to ONNX."""
    import argparse

    parser = argparse.ArgumentParser(prog="rl-lightning export", description=main.__doc__)
    parser.add_argument("--ckpt_path", required=True,
                        help="checkpoint written by rl-lightning fit (or a Trainer); 'last': the newest last.ckpt "
                             "under --logs")
    parser.add_argument("--logs", default="lightning_logs",
                        help="where --ckpt_path last looks for runs (default: lightning_logs)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--format", choices=["onnx", "mlagents"], default="onnx",
                        help="onnx: plain graph (obs -> actions); mlagents: Unity ML-Agents' model format")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 9 for mlagents)")
    args = parser.parse_args(argv)
    if args.ckpt_path == "last":
        args.ckpt_path = newest_last_checkpoint(args.logs)
    model = load_model(args.ckpt_path)
    path = export_onnx(model, args.output, args.format, args.opset)
    print(f"Wrote {path} ({args.format} format) from {args.ckpt_path}")
