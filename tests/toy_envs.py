"""Small deterministic environments whose every transition a test can predict."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """Observation = steps taken this episode; reward 1 per step.

    Terminates after ``terminate_at`` steps or truncates after ``truncate_at`` steps
    (whichever is set and comes first). Actions are ignored.
    """

    def __init__(self, terminate_at: int | None = None, truncate_at: int | None = None, n_actions: int = 2):
        self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.terminate_at, self.truncate_at = terminate_at, truncate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        truncated = not terminated and self.truncate_at is not None and self.t >= self.truncate_at
        return np.array([self.t], dtype=np.float32), 1.0, terminated, truncated, {}


class TupleActionEnv(CounterEnv):
    """A CounterEnv with a Tuple action space, which the actor-critics do not support."""

    def __init__(self):
        super().__init__(terminate_at=5)
        self.action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))


class MultiDiscreteEnv(CounterEnv):
    """A CounterEnv with two discrete action branches."""

    def __init__(self):
        super().__init__(terminate_at=10)
        self.action_space = gym.spaces.MultiDiscrete([3, 2])
