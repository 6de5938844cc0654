"""Gymnasium spaces as plain data (checkpoints load with ``torch.load(weights_only=True)``); the hybrid action space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rl_lightning.errors import ConfigurationError


def _bound(values: np.ndarray) -> Any:
    # A bound that is the same everywhere (the usual case, images too) is stored as one number.
    flat = values.reshape(-1)
    if flat.size and (flat == flat[0]).all():
        return float(flat[0])
    return flat.astype(np.float64).tolist()


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    """Describe a Box, Discrete, MultiDiscrete, MultiBinary or Dict space with lists, numbers and strings."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": np.dtype(space.dtype).name,
                "low": _bound(space.low), "high": _bound(space.high)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        out = {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist()}
        if np.any(space.start != 0):  # only then: checkpoints of 0-based spaces stay as they were
            out["start"] = np.asarray(space.start).tolist()
        return out
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(s) for k, s in space.spaces.items()}}
    raise TypeError(f"cannot describe {space}: only Box, Discrete, MultiDiscrete, MultiBinary and Dict spaces")


def space_from_dict(data: dict[str, Any]) -> gym.Space:
    """Rebuild the space ``space_to_dict`` described."""
    kind = data["type"]
    if kind == "Box":
        shape = tuple(data["shape"])
        dtype = np.dtype(data["dtype"])

        def bound(v: Any) -> np.ndarray:
            return np.full(shape, v, dtype=dtype) if np.isscalar(v) else np.asarray(v, dtype=dtype).reshape(shape)

        return gym.spaces.Box(bound(data["low"]), bound(data["high"]), shape=shape, dtype=dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(data["n"], start=data["start"])
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(data["nvec"], start=data.get("start"))
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_dict(v) for k, v in data["spaces"].items()})
    raise ValueError(f"unknown space type {kind!r}")


# ---------------------------------------------------------------------- discrete actions that do not start at 0
def action_start(space: gym.Space) -> Any:
    """The first action of a ``Discrete`` (an int) or ``MultiDiscrete`` (an array, per branch) space whose actions do
    not start at 0 (``Discrete(3, start=1)`` acts in {1, 2, 3}); ``None`` for any other space.

    Networks, buffers and action masks number a space's actions from 0 (mask column ``i`` is action ``start + i``,
    as ``Discrete.sample(mask=...)`` reads a mask); the env gets ``index + start`` (``to_space_actions``).
    """
    if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)) and np.any(space.start != 0):
        return int(space.start) if isinstance(space, gym.spaces.Discrete) else np.asarray(space.start)
    return None


def to_space_actions(indices: Any, space: gym.Space) -> Any:
    """0-based action indices (NumPy or torch) as the actions of ``space``: ``index + start``."""
    start = action_start(space)
    if start is None:
        return indices
    if not isinstance(indices, np.ndarray) and hasattr(indices, "device"):  # a tensor
        import torch

        return indices + torch.as_tensor(start, device=indices.device, dtype=indices.dtype)
    return indices + start


def to_action_indices(actions: np.ndarray, space: gym.Space) -> np.ndarray:
    """Actions of ``space`` (e.g. drawn by ``space.sample()``) as the 0-based indices networks and buffers use."""
    start = action_start(space)
    return actions if start is None else actions - start


# ---------------------------------------------------------------------- hybrid (continuous + discrete) actions
HYBRID_KEYS = ("continuous", "discrete")


def hybrid_action_space(continuous_size: int, branches: Sequence[int]) -> gym.spaces.Dict:
    """The Gymnasium form of an ML-Agents hybrid action: continuous actions and discrete branches taken together.

    ``Dict({"continuous": Box(-1, 1, (n,)), "discrete": MultiDiscrete(branches)})``. A Dict rather than a
    Tuple because its keys are the names ML-Agents gives the two parts (``ActionTuple.continuous`` and
    ``ActionTuple.discrete``, mlagents_envs/base_env.py), because Gymnasium batches it into a dict of arrays
    that says which part is which, and because checkpoints already describe Dict spaces (``space_to_dict``).
    Continuous actions lie in [-1, 1] as for any ML-Agents continuous action (Unity clips them there).
    """
    return gym.spaces.Dict({
        "continuous": gym.spaces.Box(-1.0, 1.0, shape=(int(continuous_size),), dtype=np.float32),
        "discrete": gym.spaces.MultiDiscrete([int(b) for b in branches]),
    })


def is_hybrid(space: gym.Space) -> bool:
    """Whether ``space`` is a hybrid action space as ``hybrid_action_space`` makes them."""
    return (isinstance(space, gym.spaces.Dict) and tuple(space.spaces) == HYBRID_KEYS
            and isinstance(space["continuous"], gym.spaces.Box) and len(space["continuous"].shape) == 1
            and isinstance(space["discrete"], gym.spaces.MultiDiscrete) and space["discrete"].nvec.ndim == 1)


ACTION_SPACE_KINDS = {
    "discrete": "Discrete",
    "multi_discrete": "MultiDiscrete",
    "box": "1-D Box (continuous)",
    "hybrid": "hybrid (continuous + discrete branches)",
}
"""The kinds of action space an algorithm may declare it acts in (``RLModule.ACTION_SPACES``), as messages name them."""


def action_space_kind(space: gym.Space) -> str | None:
    """Which of ``ACTION_SPACE_KINDS`` ``space`` is, or ``None``."""
    if is_hybrid(space):
        return "hybrid"
    if isinstance(space, gym.spaces.Discrete):
        return "discrete"
    if isinstance(space, gym.spaces.MultiDiscrete):
        return "multi_discrete"
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return "box"
    return None


def describe_action_space(space: gym.Space) -> str:
    if is_hybrid(space):
        return (f"a hybrid action space (continuous {space['continuous'].shape[0]} + discrete branches "
                f"{space['discrete'].nvec.tolist()}, an ML-Agents hybrid action spec)")
    return str(space)


def check_action_space(space: gym.Space, algorithm: str, supported: Sequence[str],
                       alternatives: Sequence[str] = ()) -> None:
    """Raise ``ConfigurationError`` unless ``space`` is of a kind in ``supported``, naming what the algorithm needs
    and ``alternatives`` (algorithms that act in it)."""
    if action_space_kind(space) in supported:
        return
    names = [ACTION_SPACE_KINDS[kind] for kind in supported]
    needs = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    advice = (f"; train it with {', '.join(alternatives[:-1])} or {alternatives[-1]}" if len(alternatives) > 1
              else f"; train it with {alternatives[0]}" if alternatives else "")
    raise ConfigurationError(f"{algorithm} needs a {needs} action space; the env's is "
                             f"{describe_action_space(space)}{advice}")
