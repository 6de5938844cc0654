"""Reading a vector env's ``reset`` and ``step`` results as both collector families use them.

``step_envs`` steps the envs and returns an ``EnvStep``: the rewards, which rows ended, the next observations'
action masks, the rows that hold a decision, and (methods) the ended rows' final observations and their masks.
``action_masks`` reads the masks of a reset's or step's ``info``. Masks are NumPy bool arrays (True = allowed),
one row per sub-env, the branches' masks side by side; a network gets them as a tensor where it acts.

Under Gymnasium's same-step autoreset (``rl_lightning.envs.factory``) a sub-env that ends an episode is reset
inside the step: its row of the returned observations (and of ``info["action_mask"]``) is the next episode's
first, the finished episode's last observation is ``info["final_obs"]`` (rows ``info["_final_obs"]``), and its
info ``info["final_info"]``. Unity's vector env (``rl_lightning.unity.vector_env``) fills the same keys, with no
masks in ``final_info`` (an ML-Agents ``TerminalSteps`` holds no action mask), and says in ``info["decision"]``
which rows hold a decision (agents between decisions, and sub-envs without an agent, do not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import concatenate, create_empty_array


def action_masks(info: dict[str, Any], num_envs: int, columns: int | None = None) -> np.ndarray | None:
    """The action masks in a reset's or step's ``info``, one bool row per sub-env; ``None`` if it has none.

    A sub-env that gave no mask (``info["_action_mask"]`` False for its row) allows every action; so does every
    sub-env when ``info`` has no masks at all but ``columns`` (the masks' width) is given.
    """
    mask = info.get("action_mask")
    if mask is None:
        return None if columns is None else np.ones((num_envs, columns), dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    given = info.get("_action_mask")
    if given is not None and not given.all():
        mask = mask.copy()
        mask[~given] = True
    return mask


@dataclass
class EnvStep:
    """One step of a vector env: what it returned, with the masks and decision flags read from its ``info``."""

    obs: Any
    """The observations to act on next (a new episode's first where one ended)."""
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict[str, Any]
    action_mask: np.ndarray | None
    """The masks of ``obs`` (``None`` for envs without masks)."""
    decision: np.ndarray | None
    """Rows of ``obs`` that hold a decision (``info["decision"]``); ``None``: all of them."""
    ended: np.ndarray = field(init=False)
    """Rows whose episode ended (terminated or truncated) in this step."""

    def __post_init__(self) -> None:
        self.ended = self.terminated | self.truncated

    def final_obs(self, rows: np.ndarray, space: gym.Space) -> Any:
        """The final observations of the ended sub-envs ``rows``, batched as ``space``'s vector env batches them."""
        items = [self.info["final_obs"][i] for i in rows]
        return concatenate(space, items, create_empty_array(space, len(items)))

    def transition_obs(self) -> Any:
        """Each row's real next observation: ``obs``, with the final observation where an episode ended."""
        finals = self.info.get("_final_obs")
        if not self.ended.any() or finals is None or not finals.any():
            return self.obs
        rows = np.flatnonzero(finals)
        if isinstance(self.obs, dict):
            out = {k: v.copy() for k, v in self.obs.items()}
            for i in rows:
                for k, store in out.items():
                    store[i] = self.info["final_obs"][i][k]
            return out
        out = self.obs.copy()
        for i in rows:
            out[i] = self.info["final_obs"][i]
        return out

    def transition_action_mask(self) -> np.ndarray | None:
        """The masks of ``transition_obs()``: a final observation's from ``info["final_info"]`` (all actions allowed
        where there is none, as after a Unity ``TerminalSteps``), else ``action_mask``."""
        mask = self.action_mask
        if mask is None or not self.ended.any():
            return mask
        final = action_masks(self.info.get("final_info", {}), len(mask), mask.shape[-1])
        return np.where(self.ended[:, None], final, mask)


def step_envs(envs: gym.vector.VectorEnv, actions: Any, action_mask: np.ndarray | None) -> EnvStep:
    """Step ``envs`` with ``actions``; ``action_mask``: the current observations' masks, ``None`` for envs that
    gave none at reset (their steps' masks are then not read)."""
    obs, reward, terminated, truncated, info = envs.step(actions)
    mask = None if action_mask is None else action_masks(info, len(reward), action_mask.shape[-1])
    return EnvStep(obs, reward, terminated, truncated, info, mask, info.get("decision"))
