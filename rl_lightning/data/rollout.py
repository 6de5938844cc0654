"""On-policy rollout storage and generalised advantage estimation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rl_lightning.data.replay import _gib, available_memory
from rl_lightning.errors import ConfigurationError


def minibatch(batch: dict[str, Any], rows: torch.Tensor | slice) -> dict[str, Any]:
    """Rows of every tensor in a (possibly nested: Dict observations) batch dict."""
    return {k: minibatch(v, rows) if isinstance(v, dict) else v[rows] for k, v in batch.items()}


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
                terminations: torch.Tensor, episode_ends: torch.Tensor, gamma: float,
                gae_lambda: float, active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets for time-major ``(T, N)`` tensors.

    Implements Schulman et al. 2016 ("High-Dimensional Continuous Control Using
    GAE"), eq. 16: ``A_t = sum_l (gamma * lambda)^l delta_{t+l}`` with the TD
    residual of eq. 12, ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``.

    Args:
        rewards: ``r_t``.
        values: ``V(s_t)``.
        next_values: ``V(s_{t+1})`` of the same episode: at a truncation (time limit)
            the value of the episode's final observation, which is bootstrapped.
        terminations: the episode reached a terminal state at ``t``: its future value is zero.
        episode_ends: the episode ended at ``t`` (terminated or truncated): the sum stops there.
        gamma: discount factor.
        gae_lambda: bias/variance trade-off; 0 gives one-step TD errors, 1 Monte-Carlo returns.
        active: the steps that are decisions (``None``: all). The others are skipped: the sum runs over each
            env's decisions alone (``next_values`` must then hold the value of the env's next decision).

    Returns:
        ``(advantages, returns)`` where ``returns = advantages + values`` (the TD(lambda) value targets).
    """
    not_terminal = 1.0 - terminations.to(rewards.dtype)
    continues = 1.0 - episode_ends.to(rewards.dtype)
    deltas = rewards + gamma * next_values * not_terminal - values
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    decay = gamma * gae_lambda
    for t in range(rewards.shape[0] - 1, -1, -1):
        if active is None:
            running = deltas[t] + decay * continues[t] * running
        else:
            running = torch.where(active[t], deltas[t] + decay * continues[t] * running, running)
        advantages[t] = running
    return advantages, advantages + values


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """Advantages standardised to mean 0 and standard deviation 1 (as given when there is only one)."""
    if advantages.numel() <= 1:
        return advantages
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def rollout_nbytes(n_steps: int, num_envs: int, obs_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]],
                   action_shape: tuple[int, ...], obs_dtype: torch.dtype | Mapping[str, torch.dtype] = torch.float32,
                   action_mask_size: int | None = None) -> tuple[int, int]:
    """Bytes a ``RolloutBuffer`` and one ``finish()`` take: ``(host, device)``.

    Host: the stored NumPy arrays. Device: what ``finish`` makes there (the stored arrays moved over, the next
    steps' values, advantages and returns). Actions are counted at 8 bytes (long) per element, the larger of
    their two dtypes.
    """
    rows = n_steps * num_envs
    shapes = obs_shape if isinstance(obs_shape, Mapping) else {"": obs_shape}
    dtypes = (obs_dtype if isinstance(obs_dtype, Mapping) else dict.fromkeys(shapes, obs_dtype))
    obs = sum(rows * int(np.prod(shape, dtype=np.int64)) * _element_size(dtypes[k]) for k, shape in shapes.items())
    actions = rows * max(1, int(np.prod(action_shape, dtype=np.int64))) * 8
    masks = rows * (action_mask_size or 0)
    # Rewards, terminations, episode ends, decision rows; log-probs, values, final values.
    stored = obs + actions + masks + rows * (4 + 1 + 1 + 1) + rows * 4 * 3
    return stored, stored + rows * 4 * 3  # next values, advantages, returns


def check_rollout_memory(n_steps: int, num_envs: int, obs_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]],
                         action_shape: tuple[int, ...], device: torch.device | str = "cpu",
                         obs_dtype: torch.dtype | Mapping[str, torch.dtype] = torch.float32,
                         action_mask_size: int | None = None) -> None:
    """Raise ``ConfigurationError`` when a rollout of ``n_steps * num_envs`` steps needs more memory than is
    available (host and ``device`` together when the device is the CPU), as ``ReplayBuffer`` does for its size."""
    device = torch.device(device)
    host, on_device = rollout_nbytes(n_steps, num_envs, obs_shape, action_shape, obs_dtype, action_mask_size)
    cpu = torch.device("cpu")
    needs = {cpu: host + on_device} if device.type == "cpu" else {cpu: host, device: on_device}
    for where, needed in needs.items():
        free = available_memory(where)
        if free is not None and needed > free:
            most = max(1, int(n_steps * free / needed))
            raise ConfigurationError(
                f"a rollout of n_steps={n_steps} x num_envs={num_envs} = {n_steps * num_envs} steps needs "
                f"{_gib(needed)} on {where} but only {_gib(free)} is available; lower n_steps (to at most {most} "
                "with these envs) or num_envs")


class RolloutBuffer:
    """Preallocated ``(n_steps, num_envs, ...)`` storage for one on-policy rollout.

    The collector writes step ``t`` with :meth:`add`; :meth:`finish` computes
    advantages and returns the rollout flattened to ``n_steps * num_envs`` samples,
    as tensors on ``device``.

    Everything is kept in NumPy arrays on the host, as the envs and the collector's
    actor (``rl_lightning.networks.acting``) give it, written without a tensor
    operation per step (a NumPy row write costs a fraction of a microsecond, a
    tensor one several), and moved to ``device`` once per rollout, by ``finish``.

    Dict observations are stored key by key (``obs_shape`` and ``obs_dtype`` then
    map keys to shapes and dtypes), so an image can stay uint8 next to a float
    vector. With ``action_mask_size`` each step's action mask is kept too, so
    the update scores actions under the same masked policy that chose them.
    """

    def __init__(self, n_steps: int, num_envs: int, obs_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]],
                 action_shape: tuple[int, ...], action_dtype: torch.dtype, device: torch.device | str = "cpu",
                 obs_dtype: torch.dtype | Mapping[str, torch.dtype] = torch.float32,
                 action_mask_size: int | None = None) -> None:
        self.n_steps, self.num_envs = n_steps, num_envs
        self.device = torch.device(device)
        # Before allocating: NumPy's lazily committed zeros would otherwise fail (or swap) only when written.
        check_rollout_memory(n_steps, num_envs, obs_shape, action_shape, self.device, obs_dtype, action_mask_size)
        shape = (n_steps, num_envs)
        self.obs: np.ndarray | dict[str, np.ndarray]
        if isinstance(obs_shape, Mapping):
            dtypes = obs_dtype if isinstance(obs_dtype, Mapping) else dict.fromkeys(obs_shape, obs_dtype)
            self.obs = {k: np.zeros(shape + tuple(s), dtype=_numpy_dtype(dtypes[k])) for k, s in obs_shape.items()}
        else:
            self.obs = np.zeros(shape + tuple(obs_shape), dtype=_numpy_dtype(obs_dtype))
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminations = np.zeros(shape, dtype=bool)
        self.episode_ends = np.zeros(shape, dtype=bool)
        self.actions = np.zeros(shape + tuple(action_shape), dtype=_numpy_dtype(action_dtype))
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        # V(final observation) where an episode was truncated at step t, else unused.
        self.final_values = np.zeros(shape, dtype=np.float32)
        self.action_masks = None if action_mask_size is None else np.zeros(shape + (action_mask_size,), dtype=bool)
        # Envs whose rows do not all decide at every step (Unity): which steps are decisions, and per env the step
        # of its open decision in this rollout (-1: none), which the rewards of its steps in between belong to.
        self.active = np.ones(shape, dtype=bool)
        self.tracking = False
        self.last = np.full(num_envs, -1)
        self._carry: dict[str, Any] | None = None

    def add(self, t: int, obs: Any, actions: np.ndarray, log_probs: np.ndarray, values: np.ndarray,
            rewards: np.ndarray, terminations: np.ndarray, episode_ends: np.ndarray,
            action_masks: np.ndarray | None = None, decision: np.ndarray | None = None) -> np.ndarray | None:
        """Store step ``t``: ``obs``, ``rewards``, ``terminations``, ``episode_ends`` as the envs give them
        (NumPy arrays, a dict of them for Dict observations), the policy's outputs and the masks of ``obs`` as
        NumPy arrays.

        ``decision`` (envs that give ``info["decision"]``): the rows whose ``obs`` is a decision. The step's
        reward and episode end of any other row belong to that row's last decision, and are added to it;
        the returned array says, per env, which step that is (``t`` for a deciding row, -1 for a row with no
        open decision), e.g. to store a truncated episode's final value there. ``None`` when not tracking.
        """
        if isinstance(self.obs, dict):
            for k, store in self.obs.items():
                store[t] = obs[k]
        else:
            self.obs[t] = obs
        self.rewards[t] = rewards
        self.terminations[t] = terminations
        self.episode_ends[t] = episode_ends
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        self.values[t] = values
        if self.action_masks is not None:
            self.action_masks[t] = action_masks
        if decision is None and not self.tracking:
            return None
        return self._attribute(t, np.ones(self.num_envs, bool) if decision is None else decision)

    def _attribute(self, t: int, decision: np.ndarray) -> np.ndarray:
        if t == 0:
            self.tracking = True
            self.active[:] = False
            self.last[:] = -1
        self.active[t] = decision
        self.last[decision] = t
        carried = 0.0
        if t == 0 and self._carry is not None:
            carried = self._place_carry()
        rows = np.flatnonzero(self.last >= 0)
        owner = self.last.copy()
        rewards, terms, ends = self.rewards[t].copy(), self.terminations[t].copy(), self.episode_ends[t].copy()
        self.rewards[t], self.terminations[t], self.episode_ends[t] = carried, False, False
        self.rewards[owner[rows], rows] += rewards[rows]
        self.terminations[owner[rows], rows] |= terms[rows]
        self.episode_ends[owner[rows], rows] |= ends[rows]
        self.last[ends] = -1  # an episode end closes the decision
        return owner

    def _place_carry(self) -> np.ndarray:
        """Put the decisions left open at the end of the last rollout at step 0 of this one (their rows are not
        deciding there: their next decision had not come); return the rewards they had gathered."""
        carry, self._carry = self._carry, None
        rows = carry["rows"]
        if isinstance(self.obs, dict):
            for k, store in self.obs.items():
                store[0, rows] = carry["obs"][k]
        else:
            self.obs[0, rows] = carry["obs"]
        self.actions[0, rows] = carry["actions"]
        self.log_probs[0, rows] = carry["log_probs"]
        self.values[0, rows] = carry["values"]
        if self.action_masks is not None:
            self.action_masks[0, rows] = carry["action_masks"]
        self.active[0, rows] = True
        self.last[rows] = 0
        carried = np.zeros(self.num_envs, np.float32)
        carried[rows] = carry["rewards"]
        return carried

    def _keep_open_decisions(self, next_decision: np.ndarray) -> np.ndarray:
        """Rows whose last decision has not been followed by the next one (nor an episode end) yet: they are left
        out of this rollout's training and carried to the next rollout. Returns their mask."""
        open_rows = np.flatnonzero((self.last >= 0) & ~next_decision)
        pending = np.zeros((self.n_steps, self.num_envs), bool)
        if len(open_rows) == 0:
            return pending
        steps = self.last[open_rows]
        pending[steps, open_rows] = True
        self._carry = {
            "rows": open_rows,
            "obs": ({k: v[steps, open_rows] for k, v in self.obs.items()} if isinstance(self.obs, dict)
                    else self.obs[steps, open_rows]),
            "actions": self.actions[steps, open_rows],
            "log_probs": self.log_probs[steps, open_rows],
            "values": self.values[steps, open_rows],
            "action_masks": None if self.action_masks is None else self.action_masks[steps, open_rows],
            "rewards": self.rewards[steps, open_rows],
        }  # copies: indexing with arrays
        return pending

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        # A copy: the host arrays are overwritten by the next rollout.
        return torch.from_numpy(array.copy()).to(self.device)

    def finish(self, last_values: torch.Tensor, gamma: float, gae_lambda: float,
               next_decision: np.ndarray | None = None) -> dict[str, Any]:
        """Advantages and returns for the stored steps; ``last_values`` is ``V`` of the observation after the last step.

        When rows did not all decide at every step (``add`` was given ``decision``), only decisions are returned:
        each with the rewards up to its env's next decision, bootstrapped from that decision's value; a decision
        whose next one has not come by the end (``next_decision`` False for its row) is kept for the next rollout.

        Returns a dict of flat ``(n_steps * num_envs, ...)`` tensors on the buffer's device: ``obs`` (a dict of
        them for Dict observations), ``actions``, ``log_probs``, ``values``, ``advantages``, ``returns``,
        and ``action_mask`` when masks are stored.
        """
        rewards = self._to_device(self.rewards)
        terminations = self._to_device(self.terminations)
        episode_ends = self._to_device(self.episode_ends)
        values = self._to_device(self.values)
        active = keep = None
        if self.tracking:
            active = self._to_device(self.active)
            pending = self._keep_open_decisions(np.ones(self.num_envs, bool) if next_decision is None
                                                else np.asarray(next_decision, bool))
            if not self.active.all() or pending.any():
                keep = torch.from_numpy((self.active & ~pending).reshape(-1)).to(self.device)
            # Each decision bootstraps from its env's next decision, which need not be the next step.
            next_values = torch.empty_like(values)
            following = last_values
            for t in range(self.n_steps - 1, -1, -1):
                next_values[t] = following
                following = torch.where(active[t], values[t], following)
            self.tracking = False
        else:
            next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
        next_values = torch.where(episode_ends, self._to_device(self.final_values), next_values)
        advantages, returns = compute_gae(rewards, values, next_values, terminations, episode_ends, gamma,
                                          gae_lambda, active)
        self.final_values[:] = 0.0
        n = self.n_steps * self.num_envs

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(n, *x.shape[2:])

        obs = ({k: flat(self._to_device(v)) for k, v in self.obs.items()} if isinstance(self.obs, dict)
               else flat(self._to_device(self.obs)))
        batch = {
            "obs": obs,
            "actions": flat(self._to_device(self.actions)),
            "log_probs": self._to_device(self.log_probs).reshape(n),
            "values": values.reshape(n),
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
        }
        if self.action_masks is not None:
            batch["action_mask"] = flat(self._to_device(self.action_masks))
        if keep is not None:
            batch = minibatch(batch, keep)
        return batch
