"""Evaluation episodes: play a fixed number of episodes with a policy and report returns."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torchmetrics import Metric

from rl_lightning.envs.video import discard_unfinished_videos
from rl_lightning.errors import EnvironmentFault


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


class EvaluationEpisodes(Metric):
    """The evaluation episodes of every DDP rank as one ``EvaluationResult``: each rank ``update``s with its own
    episodes, and ``compute`` gathers them all (in rank order, whatever each rank's count) on every rank.

    A torchmetrics ``Metric`` for its cross-rank gather of uneven lists (``dist_reduce_fx="cat"``), once per
    evaluation; with one process ``compute`` involves no collective. Its states are not saved in checkpoints.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("returns", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")
        self.add_state("successes", default=[], dist_reduce_fx="cat")  # 1/0, or -1 where the env did not say

    def update(self, result: EvaluationResult) -> None:
        self.returns.append(torch.as_tensor(result.returns, dtype=torch.float64, device=self.device))
        self.lengths.append(torch.as_tensor(result.lengths, dtype=torch.int64, device=self.device))
        successes = (np.full(len(result.returns), -1) if result.successes is None
                     else result.successes.astype(np.int64))
        self.successes.append(torch.as_tensor(successes, dtype=torch.int64, device=self.device))

    def compute(self) -> EvaluationResult:
        def cat(state: Any) -> np.ndarray:
            return (torch.cat(state) if isinstance(state, list) else state).cpu().numpy()

        successes = cat(self.successes)
        return EvaluationResult(cat(self.returns), cat(self.lengths),
                                successes.astype(bool) if len(successes) and (successes >= 0).all() else None)


def _episode_success(info: dict, i: int) -> bool | None:
    final = info.get("final_info")
    if not isinstance(final, dict) or "is_success" not in final:
        return None
    present = final.get("_is_success")
    if present is not None and not present[i]:
        return None
    return bool(final["is_success"][i])


def _env_name(envs: gym.vector.VectorEnv) -> str:
    spec = getattr(envs, "spec", None) or getattr(getattr(envs, "unwrapped", None), "spec", None)
    return repr(spec.id) if spec is not None and getattr(spec, "id", None) else type(envs.unwrapped).__name__


def evaluate_episodes(policy: Callable[[np.ndarray], np.ndarray], envs: gym.vector.VectorEnv, n_episodes: int,
                      seed: int | None = None) -> EvaluationResult:
    """Play ``n_episodes`` whole episodes on ``envs`` with ``policy`` (batched observations -> actions).

    ``envs`` must record episode statistics (``make_vector_env`` does). Each
    sub-env plays a fixed share of the episodes, so short episodes are not
    over-represented the way "first n to finish" would make them. Where the env
    gives ``info["action_mask"]`` the policy is called as ``policy(obs, mask)``.
    An episode with a non-finite return raises ``EnvironmentFault`` (naming the sub-env).
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
        active = info.get("active")
        if active is not None and not active.all():
            # A sub-env without an agent (Unity: the agent was destroyed) may never finish another episode: its
            # remaining share goes to the sub-envs that have one.
            short = ~active & (counts < targets)
            holders = np.flatnonzero(active)
            if short.any() and len(holders):
                moved = int((targets[short] - counts[short]).sum())
                targets[short] = counts[short]
                np.add.at(targets, holders[np.arange(moved) % len(holders)], 1)
        if "_episode" in info:
            finished = info["_episode"] & (counts < targets)
            for i in np.flatnonzero(finished):
                episode_return = float(info["episode"]["r"][i])
                if not math.isfinite(episode_return):  # a mean over it would be NaN, or inf, without saying why
                    raise EnvironmentFault(
                        f"evaluation env {_env_name(envs)} gave a non-finite reward: sub-env {i} ended an episode "
                        f"with return {episode_return} after {int(info['episode']['l'][i])} steps; fix the env "
                        "so that its rewards are finite")
                returns.append(episode_return)
                lengths.append(int(info["episode"]["l"][i]))
                successes.append(_episode_success(info, i))
            counts += finished
    discard_unfinished_videos(envs)
    known = successes and all(s is not None for s in successes)
    return EvaluationResult(np.asarray(returns), np.asarray(lengths), np.asarray(successes, bool) if known else None)


def evaluate(policy: Any, env: Any, n_episodes: int = 10, deterministic: bool = True, seed: int | None = 0,
             num_envs: int = 1, env_kwargs: dict[str, Any] | None = None,
             wrappers: list[Any] | None = None, video_folder: str | None = None) -> EvaluationResult:
    """Play ``n_episodes`` with a trained model (or any policy) on any env, and return the episodes' results.

    Args:
        policy: a trained ``RLModule`` (e.g. from ``PPO.load_from_checkpoint``), which acts through
            ``act(obs, deterministic)``, or a function from a batch of observations to a batch of actions.
        env: an env id (``"CartPole-v1"``), import path, class or factory (built with ``env_kwargs`` and
            ``wrappers``, ``num_envs`` copies, and closed afterwards), a ``gymnasium.Env`` instance, or a vector env
            that records episode statistics (both left open).
        seed: seeds the first reset (sub-env ``i`` gets ``seed + i``); None leaves the env's own seeding.
        video_folder: record each episode as an MP4 file there (an env given by id, path, class or factory only; see
            ``make_vector_env``).

    Example::

        model = PPO.load_from_checkpoint("last.ckpt")
        print(evaluate(model, "CartPole-v1", n_episodes=20).summary())
    """
    from rl_lightning.envs.factory import make_vector_env

    if hasattr(policy, "act"):
        module = policy
        was_training = module.training
        module.eval()

        def policy(obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
            return module.act(obs, deterministic, mask)
    else:
        module = None
    owned = None
    if isinstance(env, gym.vector.VectorEnv):
        envs = env
    elif isinstance(env, gym.Env):
        envs = gym.wrappers.vector.RecordEpisodeStatistics(gym.vector.SyncVectorEnv([lambda: env]))
    else:
        envs = owned = make_vector_env(env, num_envs=num_envs, seed=seed, env_kwargs=env_kwargs,
                                       wrappers=wrappers or (), video_folder=video_folder)
    try:
        return evaluate_episodes(policy, envs, n_episodes, seed=seed)
    finally:
        if owned is not None:
            owned.close()
        if module is not None:
            module.train(was_training)
