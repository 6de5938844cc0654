"""Exploration noise for continuous actions that is more than an independent Gaussian draw per step."""

from __future__ import annotations

import math

import numpy as np
import torch


class OrnsteinUhlenbeckNoise:
    """Temporally correlated exploration noise, one process per env copy (Uhlenbeck & Ornstein 1930).

    ``x <- x + theta * (mu - x) * dt + sigma * sqrt(dt) * N(0, 1)``: the state is
    pulled back towards ``mu`` at rate ``theta``; ``reset(mask)`` restarts the
    processes of env copies whose episode ended.
    """

    def __init__(self, num_envs: int, action_dim: int, theta: float, sigma: float, mu: float = 0.0,
                 dt: float = 1.0) -> None:
        self.theta, self.sigma, self.mu, self.dt = theta, sigma, mu, dt
        self.state = torch.full((num_envs, action_dim), float(mu))

    def reset(self, mask: np.ndarray | None = None) -> None:
        if mask is None:
            self.state.fill_(self.mu)
        else:
            self.state[torch.as_tensor(mask)] = self.mu

    def sample(self) -> torch.Tensor:
        noise = torch.randn(self.state.shape)
        self.state += self.theta * (self.mu - self.state) * self.dt + self.sigma * math.sqrt(self.dt) * noise
        return self.state.clone()
