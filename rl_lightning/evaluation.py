"""Evaluation episodes: play a fixed number of episodes with a policy and report returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class EvaluationResult:
    """Undiscounted returns and lengths of the evaluation episodes, in completion order."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def return_mean(self) -> float:
        return float(self.returns.mean())

    @property
    def return_std(self) -> float:
        return float(self.returns.std())

    @property
    def length_mean(self) -> float:
        return float(self.lengths.mean())

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        return {f"{prefix}/return_mean": self.return_mean, f"{prefix}/return_std": self.return_std,
                f"{prefix}/length_mean": self.length_mean}


def evaluate_episodes(policy: Callable[[np.ndarray], np.ndarray], envs: gym.vector.VectorEnv, n_episodes: int,
                      seed: int | None = None) -> EvaluationResult:
    """Play ``n_episodes`` whole episodes on ``envs`` with ``policy`` (batched observations -> actions).

    ``envs`` must record episode statistics (``make_vector_env`` does). Each
    sub-env plays a fixed share of the episodes, so short episodes are not
    over-represented the way "first n to finish" would make them.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes} must be >= 1")
    num_envs = envs.num_envs
    targets = np.array([(n_episodes + i) // num_envs for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    obs, _ = envs.reset(seed=seed)
    while (counts < targets).any():
        obs, _, _, _, info = envs.step(policy(obs))
        if "_episode" in info:
            finished = info["_episode"] & (counts < targets)
            for i in np.flatnonzero(finished):
                returns.append(float(info["episode"]["r"][i]))
                lengths.append(int(info["episode"]["l"][i]))
            counts += finished
    return EvaluationResult(np.asarray(returns), np.asarray(lengths))
