"""Spaces stored in checkpoints as plain data come back equal."""

import gymnasium as gym
import numpy as np
import pytest

from rl_lightning.envs.spaces import space_from_dict, space_to_dict


@pytest.mark.parametrize("space", [
    gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
    gym.spaces.Box(np.array([-1.0, 0.0]), np.array([2.0, 5.0]), dtype=np.float64),
    gym.spaces.Box(0, 255, shape=(64, 84, 3), dtype=np.uint8),
    gym.spaces.Discrete(5, start=1),
    gym.spaces.MultiDiscrete([3, 2]),
    gym.spaces.MultiBinary(4),
    gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), "goal": gym.spaces.Box(0, 1, (2,))}),
])
def test_space_round_trips_through_plain_data(space):
    data = space_to_dict(space)
    assert space_from_dict(data) == space
