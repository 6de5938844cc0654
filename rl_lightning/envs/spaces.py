"""Gymnasium spaces as plain data, so checkpoints load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


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
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist()}
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
        return gym.spaces.MultiDiscrete(data["nvec"])
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return gym.spaces.Dict({k: space_from_dict(v) for k, v in data["spaces"].items()})
    raise ValueError(f"unknown space type {kind!r}")
