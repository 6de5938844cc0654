"""Deterministic policies exported to ONNX: a plain graph, or the format Unity ML-Agents' inference engine loads.

    rl-lightning export --ckpt_path last.ckpt --output policy.onnx
    rl-lightning export --ckpt_path last.ckpt --output Dodge.onnx --format mlagents

The graph is the trained module's own ``predict_actions(obs, deterministic=True, action_mask)``
traced by PyTorch's TorchScript-based exporter, so ONNX Runtime reproduces ``model.act``.
Observation wrappers of the training config (e.g. ``GoalConditionedImage``) and action
wrappers (``ActionOffset``) are not part of the graph: the exported policy takes the
observations the network took and returns the actions the network chose.

Plain format
    Inputs: ``obs`` (or one input per key of a Dict observation, ``obs_<key>``) in the observation
    space's dtype and layout, batch first; ``action_masks`` (bool, one column per action, branches side
    by side) when the policy has discrete actions. Output: ``actions``: int64 ``[batch]`` (Discrete),
    int64 ``[batch, branches]`` (MultiDiscrete) or float32 ``[batch, dim]`` (Box, within its bounds).

ML-Agents format (model API version 3, com.unity.ml-agents 2.2.1-exp.1 / Release 19 and later; the
rules below were read from ML-Agents' ``mlagents/trainers/torch_entities/model_serialization.py``,
``networks.py`` (``SimpleActor``) and ``distributions.py``, and from the C# side's
``Runtime/Inference/TensorNames.cs``, ``SentisModelParamLoader.cs`` / ``BarracudaModelParamLoader.cs``,
``TensorGenerator.cs``, ``GeneratorImpl.cs``, ``ApplierImpl.cs`` and ``ModelRunner.cs``):

- Inputs, float32, only dimension 0 (``batch``) dynamic: ``obs_0 .. obs_{N-1}``, one per sensor in the
  order of the sensors' names (Unity sorts them by name; a Dict observation's keys are those names and
  are taken in sorted order); vector observations ``[batch, size]``, images NCHW ``[batch, C, H, W]``
  with values in [0, 1]. ``action_masks`` ``[batch, sum of branch sizes]``, 1 = allowed, 0 = masked,
  for discrete actions only (Unity feeds it; the loader warns when a discrete model lacks it).
- Constant outputs, float32, stored as initializers named like the output (the C# loaders read them
  as constants by name, without running the graph; Sentis casts them to float tensors):
  ``version_number`` = [3.0], ``memory_size`` = [0.0] (no recurrent state),
  ``continuous_action_output_shape`` = [number of continuous actions],
  ``discrete_action_output_shape`` = [[size of each branch]] (shape [1, branches]).
- Action outputs: ``continuous_actions`` / ``deterministic_continuous_actions`` float32
  ``[batch, n]``, applied by Unity unchanged (our Unity envs' continuous actions lie in [-1, 1]);
  ``discrete_actions`` / ``deterministic_discrete_actions`` int64 ``[batch, branches]`` action indices
  (Sentis reads them as integer tensors). This exporter writes the deterministic policy to both the
  stochastic and the deterministic outputs, so Unity's "Deterministic Inference" switch changes nothing.
- Output order: ``version_number``, ``memory_size``, then the continuous trio, then the discrete trio.
- Opset 9 (what ML-Agents' exporter uses and Barracuda supports).
Unity's runtime check (``ModelRunner``) refuses versions outside [2, 3]; the Editor's Inspector warns on
observation or action sizes that do not match the agent's Behavior Parameters.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_lightning.envs.spaces import is_hybrid
from rl_lightning.errors import ConfigurationError
from rl_lightning.networks.encoders import channels_last

MLAGENTS_API_VERSION = 3
MLAGENTS_OPSET = 9
Format = Literal["onnx", "mlagents"]


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


class _Policy(nn.Module):
    """The module's deterministic policy as a traceable graph, with the chosen format's inputs and outputs."""

    def __init__(self, model: Any, fmt: Format) -> None:
        super().__init__()
        self.model, self.fmt = model, fmt
        self.obs_spaces = _obs_spaces(model.observation_space)
        layout = model.hparams.get("image_layout", "auto")
        # Images the encoder reads as HWC: ML-Agents feeds NCHW, so the graph permutes them back.
        self.hwc = {key: len(space.shape) == 3 and channels_last(space.shape, layout)
                    for key, space in self.obs_spaces.items()}
        self.branches = _branches(model.action_space)
        self.continuous = isinstance(model.action_space, gym.spaces.Box)
        if is_hybrid(model.action_space):
            raise ConfigurationError("hybrid actions are not exported yet (continuous + discrete branches); "
                                     "use the checkpoint with model.act() instead")
        if not self.continuous and self.branches is None:
            raise ConfigurationError(f"cannot export a policy for action space {model.action_space}")
        if fmt == "mlagents":
            consts = {"version_number": [float(MLAGENTS_API_VERSION)], "memory_size": [0.0]}
            if self.continuous:
                consts["continuous_action_output_shape"] = [float(model.action_space.shape[0])]
            else:
                consts["discrete_action_output_shape"] = [[float(n) for n in self.branches]]
            for name, value in consts.items():
                self.register_buffer(name, torch.tensor(value, dtype=torch.float32))

    def _observations(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        obs = {}
        for x, (key, space) in zip(inputs, self.obs_spaces.items()):
            if self.fmt == "mlagents":
                if len(space.shape) == 3:  # NCHW in [0, 1] -> the layout and scale the encoder was trained on
                    if self.hwc[key]:
                        x = x.permute(0, 2, 3, 1)
                    if space.dtype == np.uint8:
                        x = x * 255.0
                x = x.to(torch.float32)
            obs[key] = x
        return obs[None] if None in obs else obs

    def forward(self, *inputs: torch.Tensor) -> Any:
        n_obs = len(self.obs_spaces)
        obs = self._observations(inputs[:n_obs])
        mask = None
        if self.branches is not None:
            mask = inputs[n_obs] if self.fmt == "onnx" else inputs[n_obs] > 0.5
        action = self.model.predict_actions(obs, deterministic=True, action_mask=mask)
        if self.fmt == "onnx":
            return action
        if self.continuous:
            action = action.to(torch.float32)
            return (self.version_number, self.memory_size, action, self.continuous_action_output_shape, action)
        action = action.reshape(action.shape[0], len(self.branches)).to(torch.int64)
        return (self.version_number, self.memory_size, action, self.discrete_action_output_shape, action)

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
        if self.branches is not None:
            names.append("action_masks")
            ones = torch.ones(batch, sum(self.branches))
            tensors.append(ones if self.fmt == "mlagents" else ones.bool())
        return names, tuple(tensors)

    def output_names(self) -> list[str]:
        if self.fmt == "onnx":
            return ["actions"]
        kind = "continuous" if self.continuous else "discrete"
        return ["version_number", "memory_size", f"{kind}_actions", f"{kind}_action_output_shape",
                f"deterministic_{kind}_actions"]


def export_onnx(model: Any, output: str | os.PathLike, format: Format = "onnx",  # noqa: A002 - the CLI's name
                opset: int | None = None) -> Path:
    """Write ``model``'s deterministic policy to ``output`` as ONNX (``format="mlagents"`` for Unity); returns the path.

    ``model`` is a trained or loaded ``RLModule`` (``PPO.load_from_checkpoint(path)`` needs no env).
    """
    if format not in ("onnx", "mlagents"):
        raise ConfigurationError(f"format={format!r} must be 'onnx' or 'mlagents'")
    if model.observation_space is None:
        raise ConfigurationError("the model has no networks yet: export a trained model or a loaded checkpoint")
    graph = _Policy(model, format).eval()
    names, example = graph.example_inputs()
    outputs = graph.output_names()
    batched = ["actions"] if format == "onnx" else [n for n in outputs if n.endswith("_actions")]
    dynamic = {name: {0: "batch"} for name in [*names, *batched]}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        # The TorchScript-based exporter (dynamo=False): the dynamo one needs onnxscript and onnx >= 1.18, whose
        # protobuf >= 4 cannot be installed beside mlagents-envs 0.28 (protobuf 3.20). It warns that it is deprecated.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(graph, example, str(output), input_names=names, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset or (MLAGENTS_OPSET if format == "mlagents"
                                                                            else 17),
                              dynamo=False, do_constant_folding=True)
    finally:
        model.train(was_training)
    if format == "mlagents":
        _constants_as_named_initializers(output, [n for n in outputs if not n.endswith("_actions")])
    return output


def _constants_as_named_initializers(path: Path, names: list[str]) -> None:
    """Make each constant output an initializer carrying the output's own name (how Unity's loaders find them)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    for name in names:
        if name in inits:
            continue
        producer = next((n for n in graph.node if name in n.output), None)
        value = None
        if producer is not None and producer.op_type == "Identity" and producer.input[0] in inits:
            value = numpy_helper.to_array(inits[producer.input[0]])
        elif producer is not None and producer.op_type == "Constant":
            value = numpy_helper.to_array(producer.attribute[0].t)
        if value is None:
            raise RuntimeError(f"the exported graph computes {name!r} instead of holding it as a constant")
        graph.node.remove(producer)
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name=name))
        source = producer.input[0] if producer.op_type == "Identity" else None
        if source is not None and not any(source in n.input for n in graph.node):
            graph.initializer.remove(inits.pop(source))
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


def main(argv: list[str]) -> None:
    """``rl-lightning export``: a checkpoint's deterministic policy to ONNX."""
    import argparse

    parser = argparse.ArgumentParser(prog="rl-lightning export", description=main.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by rl-lightning fit (or a Trainer)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--format", choices=["onnx", "mlagents"], default="onnx",
                        help="onnx: plain graph (obs -> actions); mlagents: Unity ML-Agents' model format")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 9 for mlagents)")
    args = parser.parse_args(argv)
    model = load_model(args.ckpt_path)
    path = export_onnx(model, args.output, args.format, args.opset)
    print(f"Wrote {path} ({args.format} format) from {args.ckpt_path}")
