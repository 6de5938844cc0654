"""Observation and reward normalization as part of the module: running statistics that train, checkpoint, act and
export with the policy.

The statistics and formulas are those of Stable-Baselines3's ``VecNormalize``
(``stable_baselines3/common/vec_env/vec_normalize.py``) and ``RunningMeanStd``
(``stable_baselines3/common/running_mean_std.py``):

- a running mean and variance (Chan et al.'s parallel combination of batch moments), starting from mean 0,
  variance 1 and a count of 1e-4, updated with each batch of observations the training envs return (their reset
  included), in float64;
- an observation is normalized as ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``;
- a reward is divided by the standard deviation of the discounted return: per sub-env ``returns = returns * gamma
  + reward`` (zeroed where an episode ended), whose running variance gives ``clip(reward / sqrt(var + epsilon),
  -clip_reward, clip_reward)``; the mean is not subtracted.

Unlike a ``NormalizeObservation`` env wrapper, whose statistics live in each env copy, these are module buffers:
in the checkpoint's ``state_dict``, on the module's device, updated from the training envs only (during
collection), frozen in evaluation and applied by ``act()`` and the ONNX export. Under DDP each rank updates them with
its own steps and the ranks merge what they added at the end of every training batch (one collective per batch).

During a round the collectors work on a NumPy copy of the statistics (no device transfer per env step) that is
written back to the buffers at the round's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_lightning.errors import ConfigurationError

INITIAL_COUNT = 1e-4
"""SB3's ``RunningMeanStd(epsilon=1e-4)``: the prior's weight, so the first batch's moments are not divided by 0."""


@dataclass
class Moments:
    """Mean, (population) variance and count of a stream of batches, in float64 NumPy."""

    mean: np.ndarray
    var: np.ndarray
    count: float

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> Moments:
        """No data yet: combining it with anything gives that thing."""
        return cls(np.zeros(shape, np.float64), np.zeros(shape, np.float64), 0.0)

    def copy(self) -> Moments:
        return Moments(self.mean.copy(), self.var.copy(), self.count)

    def update(self, batch: np.ndarray) -> None:
        """Add a batch (rows along axis 0)."""
        batch = np.asarray(batch, dtype=np.float64)
        self.combine(Moments(batch.mean(axis=0), batch.var(axis=0), float(batch.shape[0])))

    def combine(self, other: Moments) -> None:
        """Chan et al.'s parallel algorithm (SB3's ``RunningMeanStd.update_from_moments``)."""
        if other.count == 0:
            return
        delta = other.mean - self.mean
        total = self.count + other.count
        m2 = self.var * self.count + other.var * other.count + np.square(delta) * self.count * other.count / total
        self.mean = self.mean + delta * other.count / total
        self.var = m2 / total
        self.count = total

    def pack(self) -> np.ndarray:
        """One flat float64 vector: count, mean, var (what the DDP ranks exchange)."""
        return np.concatenate([[self.count], self.mean.ravel(), self.var.ravel()])

    @classmethod
    def unpack(cls, flat: np.ndarray, shape: tuple[int, ...]) -> Moments:
        size = int(np.prod(shape))
        return cls(flat[1:1 + size].reshape(shape).copy(), flat[1 + size:].reshape(shape).copy(), float(flat[0]))


class RunningMeanStd(nn.Module):
    """Running statistics as module buffers (``mean``, ``var``, ``count``, float64): checkpointed and moved with it."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(INITIAL_COUNT, dtype=torch.float64))

    def moments(self) -> Moments:
        return Moments(self.mean.cpu().numpy().copy(), self.var.cpu().numpy().copy(), float(self.count))

    def set_moments(self, moments: Moments) -> None:
        self.mean.copy_(torch.as_tensor(moments.mean))
        self.var.copy_(torch.as_tensor(moments.var))
        self.count.fill_(moments.count)


def _check_observation_space(space: gym.Space) -> None:
    if not isinstance(space, gym.spaces.Box) or space.dtype == np.uint8:
        raise ConfigurationError(
            f"normalize_observations=true needs a Box observation space of floats, not {space}: images (uint8) are "
            "scaled to [0, 1] by the networks already, and Dict observations are not normalized yet; set "
            "normalize_observations: false")


class Normalization(nn.Module):
    """The running statistics of a module's observations (``obs``) and discounted returns (``returns``), and their
    use: ``observe`` / ``observe_rewards`` while collecting, ``normalize`` / ``normalize_tensor`` /
    ``scale_rewards_tensor`` anywhere else (frozen).

    Args:
        observation_space: the model's observation space (after the ``wrappers``); ``None`` with ``observations``
            off.
        observations: normalize observations.
        rewards: scale rewards by the discounted return's standard deviation.
        num_envs: sub-envs whose discounted returns are tracked.
        gamma: the discount of those returns.
        clip_obs, clip_reward, epsilon: as SB3's ``VecNormalize``.
    """

    def __init__(self, observation_space: gym.Space | None, observations: bool, rewards: bool, gamma: float,
                 clip_obs: float, clip_reward: float, epsilon: float) -> None:
        super().__init__()
        if observations:
            _check_observation_space(observation_space)
        self.obs = RunningMeanStd(tuple(observation_space.shape)) if observations else None
        self.returns = RunningMeanStd(()) if rewards else None
        self.gamma, self.clip_obs, self.clip_reward, self.epsilon = gamma, clip_obs, clip_reward, epsilon
        # Collection state, per process (the run state, not the model): see begin_round.
        self._live: dict[str, Moments] = {}  # the statistics being updated this round
        self._since_sync: dict[str, Moments] = {}  # what this process added since the ranks last merged
        self._synced: dict[str, Moments] | None = None  # the merged statistics the additions apply to
        self.discounted_returns: np.ndarray | None = None  # per sub-env
        self.unseen_obs: np.ndarray | None = None  # a reset's observations, counted at the next round's start

    def _stats(self) -> dict[str, RunningMeanStd]:
        return {name: rms for name, rms in (("obs", self.obs), ("returns", self.returns)) if rms is not None}

    # ------------------------------------------------------------------ collection (NumPy)
    def envs_reset(self, obs: np.ndarray, num_envs: int) -> None:
        """The training envs were (re)built and reset: their first observations are counted when the next round
        starts (as SB3 counts a reset's), the discounted returns start at 0."""
        self.unseen_obs = np.asarray(obs) if self.obs is not None else None
        self.discounted_returns = np.zeros(num_envs, dtype=np.float64)

    def begin_round(self, obs: Any) -> Any:
        """Start a round from the buffers (a checkpoint may have been loaded into them); returns the normalized
        observations to act on first (``obs``: the envs' current ones, raw)."""
        self._live = {name: rms.moments() for name, rms in self._stats().items()}
        if self._synced is None:
            self._synced = {name: m.copy() for name, m in self._live.items()}
        for name, m in self._live.items():
            self._since_sync.setdefault(name, Moments.empty(m.mean.shape))
        if self.unseen_obs is not None:
            self._add("obs", self.unseen_obs)
            self.unseen_obs = None
        return self.normalize(obs)

    def _add(self, name: str, batch: np.ndarray) -> None:
        self._live[name].update(batch)
        self._since_sync[name].update(batch)

    def observe(self, obs: Any) -> Any:
        """Count the observations a training step returned; returns them normalized (float32)."""
        if self.obs is None:
            return obs
        self._add("obs", obs)
        return self.normalize(obs)

    def normalize(self, obs: Any) -> Any:
        """Observations normalized with the statistics of this round so far (float32), nothing counted."""
        if self.obs is None:
            return obs
        m = self._live["obs"]
        return np.clip((np.asarray(obs, dtype=np.float64) - m.mean) / np.sqrt(m.var + self.epsilon),
                       -self.clip_obs, self.clip_obs).astype(np.float32)

    def observe_rewards(self, reward: np.ndarray, ended: np.ndarray) -> np.ndarray:
        """Count a training step's rewards in the discounted returns (zeroed where an episode ended); returns the
        rewards scaled (float32, unchanged with reward normalization off)."""
        if self.returns is None:
            return reward
        self.discounted_returns = self.discounted_returns * self.gamma + reward
        self._add("returns", self.discounted_returns)
        m = self._live["returns"]
        scaled = np.clip(reward / np.sqrt(m.var + self.epsilon), -self.clip_reward, self.clip_reward)
        self.discounted_returns[ended] = 0.0
        return scaled.astype(np.float32)

    def end_round(self) -> None:
        """Write this round's statistics back to the buffers (where acting, evaluation and sampling read them)."""
        for name, rms in self._stats().items():
            if name in self._live:
                rms.set_moments(self._live[name])

    def merge_ranks(self, all_gather: Any) -> None:
        """Under DDP, at the end of a training batch: every rank's additions since the last merge, combined in rank
        order onto the last merged statistics, become every rank's statistics (the same on all ranks).

        ``all_gather``: a tensor -> the stacked tensors of all ranks (``LightningModule.all_gather``): one call,
        with one flat vector per statistic side by side.
        """
        stats = self._stats()
        if not stats or self._synced is None:
            return
        names = list(stats)
        mine = np.concatenate([self._since_sync[n].pack() for n in names])
        device = next(iter(stats.values())).mean.device
        gathered = all_gather(torch.as_tensor(mine, dtype=torch.float64, device=device)).cpu().numpy()
        for name in names:
            shape = stats[name].shape
            size = 1 + 2 * int(np.prod(shape))
            offset = sum(1 + 2 * int(np.prod(stats[n].shape)) for n in names[:names.index(name)])
            merged = self._synced[name].copy()
            for row in gathered:
                merged.combine(Moments.unpack(row[offset:offset + size], shape))
            stats[name].set_moments(merged)
            self._synced[name] = merged.copy()
            self._since_sync[name] = Moments.empty(shape)

    def run_state(self) -> dict[str, Any]:
        return {"discounted_returns": self.discounted_returns, "unseen_obs": self.unseen_obs}

    def load_run_state(self, state: dict[str, Any]) -> None:
        self.discounted_returns = state["discounted_returns"]
        self.unseen_obs = state["unseen_obs"]

    # ------------------------------------------------------------------ acting, updates, export (torch)
    def normalize_tensor(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations on the module's device normalized with the buffers, in float32 torch operations that
        trace into an ONNX graph (``rl_lightning.export``) as they run in ``act``."""
        if self.obs is None:
            return obs
        mean = self.obs.mean.to(torch.float32)
        std = torch.sqrt(self.obs.var + self.epsilon).to(torch.float32)
        normalized = torch.clamp((obs.to(torch.float32) - mean) / std, -self.clip_obs, self.clip_obs)
        # In the networks' dtype again (float64 / bfloat16 under a true-precision plugin: rl_lightning.precision).
        return normalized.to(obs.dtype) if obs.is_floating_point() else normalized

    def scale_rewards_tensor(self, rewards: torch.Tensor) -> torch.Tensor:
        """Stored raw rewards scaled with the buffers (off-policy sampling)."""
        if self.returns is None:
            return rewards
        std = torch.sqrt(self.returns.var + self.epsilon).to(rewards.dtype)
        return torch.clamp(rewards / std, -self.clip_reward, self.clip_reward)
