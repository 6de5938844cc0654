"""Evaluation episodes: play a fixed number of episodes with a policy and report returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class EvaluationResult:
    """Undiscounted returns and lengths of the evaluation episodes, in completion order.

    ``successes`` holds each episode's ``info["is_success"]`` at its last step (the
    Gymnasium/SB3 convention) when the env reports it for every episode, else ``None``.
    """

    returns: np.ndarray
    lengths: np.ndarray
    successes: np.ndarray | None = None

    @property
    def success_rate(self) -> float | None:
        return None if self.successes is None else float(self.successes.mean())

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
        metrics = {f"{prefix}/return_mean": self.return_mean, f"{prefix}/return_std": self.return_std,
                   f"{prefix}/length_mean": self.length_mean}
        if self.successes is not None:
            metrics[f"{prefix}/success_rate"] = self.success_rate
        return metrics

    def summary(self) -> str:
        """One line: return mean +- std over n episodes, mean length, success rate when known."""
        text = (f"return {self.return_mean:.2f} +- {self.return_std:.2f} over {len(self.returns)} episodes "
                f"(mean length {self.length_mean:.1f}")
        if self.successes is not None:
            text += f", success rate {self.success_rate:.2f}"
        return text + ")"


def _episode_success(info: dict, i: int) -> bool | None:
    final = info.get("final_info")
    if not isinstance(final, dict) or "is_success" not in final:
        return None
    present = final.get("_is_success")
    if present is not None and not present[i]:
        return None
    return bool(final["is_success"][i])


def evaluate_episodes(policy: Callable[[np.ndarray], np.ndarray], envs: gym.vector.VectorEnv, n_episodes: int,
                      seed: int | None = None) -> EvaluationResult:
    """Play ``n_episodes`` whole episodes on ``envs`` with ``policy`` (batched observations -> actions).

    ``envs`` must record episode statistics (``make_vector_env`` does). Each
    sub-env plays a fixed share of the episodes, so short episodes are not
    over-represented the way "first n to finish" would make them. Where the env
    gives ``info["action_mask"]`` the policy is called as ``policy(obs, mask)``.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes} must be >= 1")
    num_envs = envs.num_envs
    targets = np.array([(n_episodes + i) // num_envs for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool | None] = []
    obs, info = envs.reset(seed=seed)
    while (counts < targets).any():
        mask = info.get("action_mask")
        obs, _, _, _, info = envs.step(policy(obs) if mask is None else policy(obs, mask))
        if "_episode" in info:
            finished = info["_episode"] & (counts < targets)
            for i in np.flatnonzero(finished):
                returns.append(float(info["episode"]["r"][i]))
                lengths.append(int(info["episode"]["l"][i]))
                successes.append(_episode_success(info, i))
            counts += finished
    known = successes and all(s is not None for s in successes)
    return EvaluationResult(np.asarray(returns), np.asarray(lengths), np.asarray(successes, bool) if known else None)
