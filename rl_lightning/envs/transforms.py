"""Observation transforms, as Gymnasium wrappers usable from YAML (``wrappers:`` entries)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rl_lightning.errors import ConfigurationError


class GoalConditionedImage(gym.ObservationWrapper):
    """Turns ``{image: HxWxC, goal: G}`` into one ``HxWx(C*G)`` image: the image once per goal entry, times it.

    With a one-hot goal only the block of the active goal is non-zero, so a plain
    conv net sees which goal it is after (seed S1's 6-channel input from a
    64x84x3 image and a 2-entry goal signal). The image keeps its dtype (uint8
    stays uint8) when the goal's bounds are within [0, 1].

    Args:
        env: an env with a Dict observation space.
        image_key: the HWC image entry; ``None`` picks the only 3-D entry.
        goal_key: the goal vector entry; ``None`` picks the only 1-D entry.
    """

    def __init__(self, env: gym.Env, image_key: str | None = None, goal_key: str | None = None) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ConfigurationError(f"GoalConditionedImage needs a Dict observation space, not {space}")
        self.image_key = image_key or self._only(space, 3, "image_key")
        self.goal_key = goal_key or self._only(space, 1, "goal_key")
        image, goal = space[self.image_key], space[self.goal_key]
        n_goals = int(goal.shape[0])
        h, w, c = image.shape
        low = np.minimum(image.low, 0).min() * max(goal.high.max(), 1)
        high = image.high.max() * max(goal.high.max(), 1)
        dtype = image.dtype if goal.low.min() >= 0 and goal.high.max() <= 1 else np.float32
        self.observation_space = gym.spaces.Box(low, high, shape=(h, w, c * n_goals), dtype=dtype)

    @staticmethod
    def _only(space: gym.spaces.Dict, ndim: int, setting: str) -> str:
        keys = [k for k, s in space.spaces.items() if len(s.shape) == ndim]
        if len(keys) != 1:
            raise ConfigurationError(f"{setting}: cannot tell which entry to use among {list(space.spaces)}; name it")
        return keys[0]

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        image = observation[self.image_key]
        goal = np.asarray(observation[self.goal_key])
        blocks = [image * goal[i] for i in range(goal.shape[0])]
        return np.concatenate(blocks, axis=-1).astype(self.observation_space.dtype, copy=False)
