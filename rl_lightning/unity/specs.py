"""ML-Agents behavior specs as Gymnasium spaces, and arrays converted between the two.

A ``BehaviorSpec`` (mlagents_envs/base_env.py) becomes a ``UnityVectorEnv``'s single observation and action
spaces; observations from mlagents' ``DecisionSteps``/``TerminalSteps`` become arrays of those spaces
(``convert_observation``), their action masks Gymnasium's (``allowed_actions``), and a batch of actions
becomes mlagents' ``ActionTuple`` (``action_tuple``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from mlagents_envs.base_env import ActionTuple, BehaviorSpec

from rl_lightning.envs.spaces import HYBRID_KEYS, hybrid_action_space, is_hybrid


def observation_keys(spec: BehaviorSpec) -> list[str]:
    """Dict keys of the behavior's observations, in Unity's order: their names, or ``obs_<i>``."""
    return [obs_spec.name or f"obs_{i}" for i, obs_spec in enumerate(spec.observation_specs)]


def observation_space_from_spec(spec: BehaviorSpec, uint8_images: bool = True,
                                png: Sequence[bool] | None = None) -> gym.Space:
    """One observation -> Box; several -> Dict keyed by ``observation_keys``. Images stay HWC.

    ``png`` says, per observation, whether Unity sends it PNG-compressed (``UnityProcess.png_observations``;
    ``None``: none is). mlagents decodes a PNG image to its bytes / 255, float32 in [0, 1]; with
    ``uint8_images`` such images are kept as their uint8 bytes instead (exact, and a quarter of the memory in
    a replay buffer). Uncompressed images (``float_data``) are whatever floats the sensor wrote, not
    necessarily in [0, 1] (Unity's ``CountingGridSensor`` sends counts, uncompressed:
    com.unity.ml-agents/Runtime/Sensors/CountingGridSensor.cs): they stay float32, unbounded and unclipped.
    """
    boxes = {}
    png = tuple(png) if png is not None else (False,) * len(spec.observation_specs)
    for key, obs_spec, compressed in zip(observation_keys(spec), spec.observation_specs, png):
        shape = tuple(obs_spec.shape)
        if len(shape) == 3 and compressed and uint8_images:
            boxes[key] = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
            continue
        low, high = (0.0, 1.0) if len(shape) == 3 and compressed else (-np.inf, np.inf)
        boxes[key] = gym.spaces.Box(low, high, shape=shape, dtype=np.float32)
    if len(boxes) == 1:
        return next(iter(boxes.values()))
    return gym.spaces.Dict(boxes)


def action_space_from_spec(spec: BehaviorSpec) -> gym.Space:
    """One discrete branch -> Discrete; several -> MultiDiscrete; continuous -> Box(-1, 1); both -> the hybrid Dict.

    A hybrid spec (continuous actions and discrete branches together, ``ActionSpec`` in mlagents_envs/base_env.py)
    becomes ``hybrid_action_space``: ``Dict({"continuous": Box(-1, 1, (n,)), "discrete": MultiDiscrete(branches)})``.
    """
    action = spec.action_spec
    if action.continuous_size and action.discrete_size:
        return hybrid_action_space(action.continuous_size, action.discrete_branches)
    if action.continuous_size:
        return gym.spaces.Box(-1.0, 1.0, shape=(action.continuous_size,), dtype=np.float32)
    if len(action.discrete_branches) == 1:
        return gym.spaces.Discrete(action.discrete_branches[0])
    return gym.spaces.MultiDiscrete(list(action.discrete_branches))


def warn_if_blind(spec: BehaviorSpec, behavior_name: str, no_graphics: bool) -> None:
    """Warn that a behavior's visual observations will be blank when its build runs with ``no_graphics``.

    ``-nographics`` starts Unity without a graphics device, so cameras render nothing; ML-Agents says to use it
    only without visual observations (``--no-graphics`` help in ml-agents/mlagents/trainers/cli_utils.py).
    Sensors that are rank 3 without a camera (grid sensors) are not told apart: the warning names the fix.
    """
    images = [key for key, obs_spec in zip(observation_keys(spec), spec.observation_specs)
              if len(obs_spec.shape) == 3]
    if no_graphics and images:
        warnings.warn(f"no_graphics=True but behavior {behavior_name!r} has visual observations {images}: a Unity "
                      "build started with -nographics renders no camera, so camera images arrive blank; set "
                      "no_graphics=False (ML-Agents' default) unless these come from a sensor that needs no "
                      "rendering (e.g. a grid sensor)", UserWarning, stacklevel=3)


def empty_observations(space: gym.Space, num_envs: int) -> Any:
    """Zeros for a batch of ``num_envs`` observations of ``space`` (a Box, or a Dict of Boxes)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: np.zeros((num_envs, *s.shape), s.dtype) for k, s in space.spaces.items()}
    return np.zeros((num_envs, *space.shape), space.dtype)


def convert_observation(obs: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """An observation as mlagents decoded it, in its space's ``dtype``."""
    if dtype == np.uint8:  # a PNG image (its bytes / 255) back to its bytes
        # Only PNG images get a uint8 space, and they lie in [0, 1]; the clip makes a wrap impossible anyway.
        return np.rint(np.clip(obs, 0.0, 1.0) * 255.0).astype(np.uint8)
    return obs


def allowed_actions(decisions: Any) -> np.ndarray | None:
    """The action mask of ``DecisionSteps`` as one bool array over all branches, True = allowed (``None``: no mask)."""
    if decisions.action_mask is None:
        return None
    return ~np.concatenate(decisions.action_mask, axis=1)  # Unity's True means forbidden


def action_tuple(space: gym.Space, actions: Any, rows: list[int]) -> ActionTuple:
    """The actions of the sub-envs ``rows`` (a batch of the single action ``space``) as mlagents' ``ActionTuple``.

    Hybrid actions (a dict of ``"continuous"`` and ``"discrete"`` arrays) fill both of its parts.
    """
    n = len(rows)
    if is_hybrid(space):
        missing = [key for key in HYBRID_KEYS if key not in actions]
        if missing:
            raise ValueError(f"hybrid actions need the keys {list(HYBRID_KEYS)}; missing {missing}")
        return ActionTuple(continuous=np.asarray(actions["continuous"], np.float32)[rows].reshape(n, -1),
                           discrete=np.asarray(actions["discrete"])[rows].astype(np.int32).reshape(n, -1))
    actions = np.asarray(actions)[rows]
    if isinstance(space, gym.spaces.Box):
        return ActionTuple(continuous=actions.astype(np.float32).reshape(n, -1))
    return ActionTuple(discrete=actions.astype(np.int32).reshape(n, -1))
