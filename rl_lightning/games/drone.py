"""Drone: a Python stand-in for the seed's Unity "Drone" game, with the same observation and action specs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class Drone(gym.Env):
    """Fly a point-mass drone to a goal in 3D.

    Rules:
    - The drone starts at rest at the origin; the goal is drawn uniformly in the cube
      ``[-goal_range, goal_range]^3``, at least ``2 * goal_radius`` away.
    - Action: 3 numbers in [-1, 1], the thrust along x, y, z. Each step (``dt`` seconds)
      ``v <- (1 - drag) * v + max_accel * a * dt`` and ``p <- p + v * dt``. The drone's body turns
      towards its thrust: its angular velocity is ``w <- 0.8 w + 0.2 * max_rate * (a - a_prev)``.
    - Observation (9 floats): position minus goal, velocity, angular velocity.
    - Reward: ``progress_scale`` times the distance gained towards the goal in the step; reaching the
      goal (distance < ``goal_radius``) adds ``goal_bonus`` and terminates the episode; leaving the
      box ``|p_i| > bounds`` costs ``-1`` and terminates it; after ``max_steps`` steps it is truncated.
    - ``info["reached"]`` says whether the goal was reached; the last step of an episode repeats it
      as ``info["is_success"]``.

    Environment parameters (``reset(options={"parameters": {...}})``, e.g. from Unity's side channel)
    may override ``goal_range`` and ``goal_radius`` per episode.
    """

    def __init__(self, goal_range: float = 3.0, goal_radius: float = 0.5, bounds: float = 6.0, max_accel: float = 4.0,
                 drag: float = 0.05, dt: float = 0.1, max_rate: float = 2.0, progress_scale: float = 1.0,
                 goal_bonus: float = 1.0, max_steps: int = 200) -> None:
        self.goal_range, self.goal_radius, self.bounds = goal_range, goal_radius, bounds
        self.max_accel, self.drag, self.dt, self.max_rate = max_accel, drag, dt, max_rate
        self.progress_scale, self.goal_bonus, self.max_steps = progress_scale, goal_bonus, max_steps
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (9,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.pos = np.zeros(3)
        self.vel = np.zeros(3)
        self.ang = np.zeros(3)
        self.prev_action = np.zeros(3)
        self.goal = np.zeros(3)
        self.radius = goal_radius
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos - self.goal, self.vel, self.ang]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        params = (options or {}).get("parameters", {})
        goal_range = float(params.get("goal_range", self.goal_range))
        self.radius = float(params.get("goal_radius", self.goal_radius))
        self.pos, self.vel, self.ang, self.prev_action = np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3)
        while True:
            self.goal = self.np_random.uniform(-goal_range, goal_range, size=3)
            if np.linalg.norm(self.goal) >= 2 * self.radius:
                break
        self.t = 0
        return self._obs(), {"reached": False}

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        before = np.linalg.norm(self.pos - self.goal)
        self.vel = (1.0 - self.drag) * self.vel + self.max_accel * a * self.dt
        self.pos = self.pos + self.vel * self.dt
        self.ang = 0.8 * self.ang + 0.2 * self.max_rate * (a - self.prev_action)
        self.prev_action = a
        self.t += 1
        after = np.linalg.norm(self.pos - self.goal)
        reward = self.progress_scale * (before - after)
        reached = after < self.radius
        out = bool(np.any(np.abs(self.pos) > self.bounds))
        if reached:
            reward += self.goal_bonus
        elif out:
            reward -= 1.0
        terminated = reached or out
        truncated = not terminated and self.t >= self.max_steps
        info = {"reached": bool(reached)}
        if terminated or truncated:
            info["is_success"] = bool(reached)
        return self._obs(), float(reward), terminated, truncated, info
