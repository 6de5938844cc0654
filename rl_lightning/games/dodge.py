"""Dodge: a Python stand-in for the seed's Unity "Dodge" game, with the same observation and action specs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

# Actions as in the seed: up, down, left, right, stay.
UP, DOWN, LEFT, RIGHT, STAY = range(5)
DIRECTIONS = np.array([(0.0, 1.0), (0.0, -1.0), (-1.0, 0.0), (1.0, 0.0), (0.0, 0.0)])
N_RAYS = 40
AGENT_RADIUS, BALL_RADIUS = 0.5, 0.25
DEFAULTS = {"boardRadius": 7.0, "ballNums": 12, "ballSpeed": 4.0, "ballRandom": 0.2, "agentSpeed": 3.0}


class Dodge(gym.Env):
    """Stay alive among balls bouncing around a round board.

    Rules:
    - A circular board of radius ``boardRadius``; the agent starts at its centre; ``ballNums`` balls
      start at random places at least 3 units from it, moving in random directions at ``ballSpeed``.
    - Each step lasts ``dt`` (0.1 s). The agent moves ``agentSpeed * dt`` up, down, left or right (or
      stays) and cannot leave the board. A ball that reaches the edge bounces back inwards, its new
      direction turned by a random angle of up to ``ballRandom * pi`` radians.
    - Reward: ``survival_reward`` (0.01) per step survived; a ball touching the agent gives -1 and
      ends the episode; after ``max_steps`` (1000) steps it is truncated.
    - Observation (122 floats): 40 rays around the agent, each (distance to what it hits first, ball
      or wall, divided by the board's diameter; that ball's x and z velocity divided by
      ``ballSpeed``, 0 for the wall), then the agent's x and z divided by ``boardRadius``.
    - The five parameters (``boardRadius``, ``ballNums``, ``ballSpeed``, ``ballRandom``, ``agentSpeed``)
      are constructor arguments and can be overridden per episode by environment parameters
      (``reset(options={"parameters": {...}})``, e.g. from Unity's side channel).
    """

    def __init__(self, boardRadius: float = 7.0, ballNums: int = 12, ballSpeed: float = 4.0,  # noqa: N803
                 ballRandom: float = 0.2, agentSpeed: float = 3.0, dt: float = 0.1, max_steps: int = 1000,  # noqa: N803
                 survival_reward: float = 0.01) -> None:
        self.defaults = {"boardRadius": boardRadius, "ballNums": ballNums, "ballSpeed": ballSpeed,
                         "ballRandom": ballRandom, "agentSpeed": agentSpeed}
        self.dt, self.max_steps, self.survival_reward = dt, max_steps, survival_reward
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (N_RAYS * 3 + 2,), np.float32)
        self.action_space = gym.spaces.Discrete(5)
        angles = 2 * np.pi * np.arange(N_RAYS) / N_RAYS
        self.rays = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self.p = dict(self.defaults)
        self.agent = np.zeros(2)
        self.balls = np.zeros((0, 2))
        self.vel = np.zeros((0, 2))
        self.t = 0

    # ------------------------------------------------------------------ sensing
    def _observe(self) -> np.ndarray:
        radius, speed = self.p["boardRadius"], self.p["ballSpeed"]
        # Wall: distance along each ray from the agent to the circle.
        b = self.rays @ self.agent
        wall = -b + np.sqrt(np.maximum(b * b - (self.agent @ self.agent - radius * radius), 0.0))
        dist = wall.copy()
        vel = np.zeros((N_RAYS, 2))
        if len(self.balls):
            rel = self.balls - self.agent                       # (B, 2)
            along = self.rays @ rel.T                           # (R, B) projection on each ray
            perp2 = (rel * rel).sum(1)[None, :] - along ** 2     # squared distance from the ray's line
            hit = (along > 0) & (perp2 < BALL_RADIUS ** 2)
            enter = np.where(hit, along - np.sqrt(np.maximum(BALL_RADIUS ** 2 - perp2, 0.0)), np.inf)
            nearest = enter.argmin(axis=1)
            first = enter[np.arange(N_RAYS), nearest]
            closer = first < dist
            dist = np.where(closer, first, dist)
            vel[closer] = self.vel[nearest[closer]]
        rays = np.concatenate([(dist / (2 * radius))[:, None], vel / speed], axis=1)
        return np.concatenate([rays.reshape(-1), self.agent / radius]).astype(np.float32)

    # ------------------------------------------------------------------ dynamics
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.p = {**self.defaults, **(options or {}).get("parameters", {})}
        radius = float(self.p["boardRadius"])
        n = int(round(self.p["ballNums"]))
        self.agent = np.zeros(2)
        balls = []
        while len(balls) < n:
            r = radius * np.sqrt(self.np_random.uniform(0, 1)) * 0.95
            a = self.np_random.uniform(0, 2 * np.pi)
            point = np.array([r * np.cos(a), r * np.sin(a)])
            if np.linalg.norm(point) >= 3.0:
                balls.append(point)
        self.balls = np.array(balls).reshape(n, 2)
        angles = self.np_random.uniform(0, 2 * np.pi, size=n)
        self.vel = self.p["ballSpeed"] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self.t = 0
        return self._observe(), {}

    def step(self, action: int):
        radius = float(self.p["boardRadius"])
        self.agent = self.agent + DIRECTIONS[int(action)] * self.p["agentSpeed"] * self.dt
        norm = np.linalg.norm(self.agent)
        if norm > radius - AGENT_RADIUS:
            self.agent *= (radius - AGENT_RADIUS) / norm
        self.balls = self.balls + self.vel * self.dt
        dist = np.linalg.norm(self.balls, axis=1)
        out = dist > radius - BALL_RADIUS
        if out.any():
            normal = self.balls[out] / dist[out, None]
            v = self.vel[out]
            reflected = v - 2 * (v * normal).sum(1, keepdims=True) * normal
            turn = self.np_random.uniform(-1, 1, size=out.sum()) * self.p["ballRandom"] * np.pi
            c, s = np.cos(turn), np.sin(turn)
            turned = np.stack([c * reflected[:, 0] - s * reflected[:, 1], s * reflected[:, 0] + c * reflected[:, 1]], 1)
            # Never point outwards after the bounce.
            inward = (turned * normal).sum(1, keepdims=True) < 0
            self.vel[out] = np.where(inward, turned, reflected)
            self.balls[out] = normal * (radius - BALL_RADIUS)
        self.t += 1
        hit = bool(len(self.balls)) and bool((np.linalg.norm(self.balls - self.agent, axis=1)
                                              < AGENT_RADIUS + BALL_RADIUS).any())
        reward = -1.0 if hit else self.survival_reward
        truncated = not hit and self.t >= self.max_steps
        return self._observe(), reward, hit, truncated, {}
