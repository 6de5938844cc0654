"""A preallocated tensor ring buffer of transitions for off-policy algorithms, written from NumPy rows as the
envs and the collector give them (``ReplayBuffer``), and the per-decision transitions of envs whose rows do not all
decide at every step (``DecisionTransitions``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl_lightning.errors import ConfigurationError, EnvironmentFault

Obs = torch.Tensor | dict[str, torch.Tensor]


def storage_dtype(space: gym.spaces.Box) -> torch.dtype:
    """uint8 observations (images) stay uint8 in the buffer; everything else is float32."""
    return torch.uint8 if space.dtype == np.uint8 else torch.float32


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``, or ``None`` where that cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class ReplayBuffer:
    """Transitions ``(obs, action, reward, next_obs, terminated[, next_action_mask[, action_mask]])`` in a ring of
    ``capacity``.

    Each ``add`` writes one row per env copy; once full, the oldest rows are
    overwritten. ``next_obs`` is the observation that followed the action in
    the same episode (the final observation when the episode ended), so a
    truncated transition bootstraps from it and only ``terminated`` zeroes the
    future. Dict observations are stored key by key; uint8 observations
    (images) stay uint8. All storage is allocated up front, after checking it
    fits, on one device; sampling is a single ``randint`` and gather.

    With ``action_mask_size`` the mask of each next observation is kept (a value target over the next actions
    must skip the forbidden ones); with ``current_action_masks`` as well, the mask of each observation (for
    updates that take expectations over the policy's actions at ``obs``, as discrete SAC's do).
    """

    def __init__(self, capacity: int, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device | str = "cpu", action_mask_size: int | None = None,
                 current_action_masks: bool = False) -> None:
        if capacity < 1:
            raise ConfigurationError(f"buffer_size={capacity} must be >= 1")
        self.capacity = capacity
        self.device = torch.device(device)
        self.observation_space = observation_space
        self.specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for key, (shape, dtype) in self._obs_specs(observation_space).items():
            self.specs[f"obs{key}"] = (shape, dtype)
            self.specs[f"next_obs{key}"] = (shape, dtype)
        if isinstance(action_space, gym.spaces.Discrete):
            self.specs["actions"] = ((), torch.long)
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            self.specs["actions"] = (tuple(action_space.shape), torch.long)
        else:
            self.specs["actions"] = (tuple(action_space.shape), torch.float32)
        self.specs["rewards"] = ((), torch.float32)
        self.specs["terminated"] = ((), torch.bool)
        if action_mask_size is not None:
            self.specs["next_action_mask"] = ((action_mask_size,), torch.bool)
            if current_action_masks:
                self.specs["action_mask"] = ((action_mask_size,), torch.bool)

        needed = self.nbytes()
        free = available_memory(self.device)
        if free is not None and needed > free:
            raise ConfigurationError(
                f"buffer_size={capacity} needs {_gib(needed)} on {self.device} but only {_gib(free)} is available; "
                f"lower buffer_size to at most {int(capacity * free / needed)}")
        self.storage = {name: torch.zeros((capacity, *shape), dtype=dtype, device=self.device)
                        for name, (shape, dtype) in self.specs.items()}
        # On the CPU, NumPy views of the same memory (see add).
        self._host = ({name: store.numpy() for name, store in self.storage.items()}
                      if self.device.type == "cpu" else None)
        self.pos = 0
        self.size = 0
        self.added = 0  # rows ever written (not saved in checkpoints: only differences of it are used)

    @staticmethod
    def _obs_specs(space: gym.Space) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        if isinstance(space, gym.spaces.Dict):
            return {f".{k}": (tuple(s.shape), storage_dtype(s)) for k, s in space.spaces.items()}
        if isinstance(space, gym.spaces.Box):
            return {"": (tuple(space.shape), storage_dtype(space))}
        if isinstance(space, gym.spaces.Discrete):
            return {"": ((), torch.long)}
        raise ConfigurationError(f"the replay buffer stores Box, Discrete or Dict observations, not {space}")

    def nbytes(self) -> int:
        """Bytes the storage takes (or will take)."""
        total = 0
        for shape, dtype in self.specs.values():
            total += self.capacity * int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        return total

    def _flatten(self, prefix: str, obs: Any) -> dict[str, Any]:
        if isinstance(obs, Mapping):
            return {f"{prefix}.{k}": v for k, v in obs.items()}
        return {prefix: obs}

    def add(self, obs: Any, actions: np.ndarray, rewards: np.ndarray, next_obs: Any, terminated: np.ndarray,
            next_action_mask: np.ndarray | None = None, action_mask: np.ndarray | None = None) -> None:
        """Append one transition per env copy: NumPy arrays with a leading ``num_envs`` dimension (observations
        as the envs give them, a dict of arrays for Dict spaces). The masks are kept when the buffer stores them."""
        fields = {**self._flatten("obs", obs), **self._flatten("next_obs", next_obs), "actions": actions,
                  "rewards": rewards, "terminated": terminated}
        for name, mask in (("next_action_mask", next_action_mask), ("action_mask", action_mask)):
            if mask is not None:
                if name not in self.specs:  # the buffer's fields were fixed by the envs' first reset
                    raise EnvironmentFault("the env gives action masks (info['action_mask']) now but gave none at "
                                           "its first reset, when the replay buffer was built: give a mask from "
                                           "reset on (all True where every action is allowed)")
                fields[name] = mask
        n = len(rewards)
        rows: slice | np.ndarray | torch.Tensor = (slice(self.pos, self.pos + n) if self.pos + n <= self.capacity
                                                   else np.arange(self.pos, self.pos + n) % self.capacity)
        if self._host is None and not isinstance(rows, slice):
            rows = torch.as_tensor(rows, device=self.device)
        for name, value in fields.items():
            if self._host is not None:
                # On the CPU, through the NumPy view: a row write costs ~1 us there, ~20 us through tensor indexing
                # (conversion, cast, slice, copy), and DQN/DDPG write one row per env step.
                self._host[name][rows] = value
            else:  # to the device: one copy per field
                store = self.storage[name]
                store[rows] = torch.as_tensor(value, device=self.device).to(store.dtype)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.added += n

    def rows_since(self, added: int, names: tuple[str, ...] = ("obs", "next_obs", "rewards")) -> \
            tuple[int, dict[str, np.ndarray]]:
        """The rows written since ``self.added`` was ``added``, oldest first, of the fields named ``names`` (and
        their Dict keys), as NumPy arrays (views on the CPU). Returns ``(skipped, fields)``: ``skipped`` rows at the
        start were already overwritten (more rows were written than the buffer holds)."""
        count = self.added - added
        skipped = max(0, count - self.capacity)
        count -= skipped
        first = (self.pos - count) % self.capacity
        rows: slice | np.ndarray = (slice(first, first + count) if first + count <= self.capacity
                                    else np.arange(first, first + count) % self.capacity)
        fields = {}
        for name, store in self.storage.items():
            if name.partition(".")[0] in names:
                fields[name] = (self._host[name][rows] if self._host is not None
                                else store[torch.as_tensor(np.arange(self.capacity)[rows], device=self.device)]
                                .cpu().numpy())
        return skipped, fields

    def sample(self, batch_size: int) -> dict[str, Obs]:
        """A uniformly drawn batch (with replacement) as a dict; observations are dicts for Dict spaces."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), device=self.device)
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> dict[str, Obs]:
        out: dict[str, Any] = {}
        for name, store in self.storage.items():
            head, _, key = name.partition(".")
            if key:
                out.setdefault(head, {})[key] = store[idx]
            else:
                out[name] = store[idx]
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer as tensors, slot for slot, with the next write position.

        Kept in its ring layout so a resumed run samples exactly the transitions the uninterrupted one would.
        """
        return {"capacity": self.capacity, "size": self.size, "pos": self.pos,
                "storage": {name: store[:self.size].cpu() for name, store in self.storage.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stored = state["storage"]
        if set(stored) != set(self.storage):
            raise ConfigurationError(f"the checkpoint's replay buffer holds {sorted(stored)}, "
                                     f"this model's holds {sorted(self.storage)}")
        size, pos = state["size"], state.get("pos", state["size"] % state["capacity"])
        for name, store in self.storage.items():
            if stored[name].shape[1:] != store.shape[1:]:
                raise ConfigurationError(f"the checkpoint's replay buffer stores {name} of shape "
                                         f"{tuple(stored[name].shape[1:])}, this model's {tuple(store.shape[1:])}")
        if state["capacity"] == self.capacity:
            for name, store in self.storage.items():
                store[:size] = stored[name].to(self.device)
            self.size, self.pos = size, pos
            return
        # Another capacity: keep the newest transitions, oldest first.
        order = torch.arange(size) if size < state["capacity"] else (torch.arange(size) + pos) % size
        keep = min(size, self.capacity)
        for name, store in self.storage.items():
            store[:keep] = stored[name][order[size - keep:]].to(self.device)
        self.size = keep
        self.pos = keep % self.capacity


def _rows(data: Any, idx: np.ndarray) -> Any:
    if isinstance(data, Mapping):
        return {k: _rows(v, idx) for k, v in data.items()}
    return data[idx]


class DecisionTransitions:
    """One replay transition per decision, for envs whose sub-envs do not all decide at every step (Unity).

    A transition begins on a row whose observation is a decision (``decision[i]``: the agent asked for an action,
    which is applied), sums the rewards that follow, and is stored once it is complete: at the agent's next
    decision (its observation is the transition's next one) or at its episode's end (the final observation). A
    row that is not deciding adds no transition of its own: an agent between decisions repeats its last action in
    Unity, which reports what it earns meanwhile with its next decision, and a sub-env without an agent has
    nothing to store. This is how ML-Agents' trainers count experiences too: one per decision
    (``mlagents/trainers/agent_processor.py``). When every row decides at every step, each transition is the step
    itself, stored exactly as without this class.
    """

    def __init__(self) -> None:
        self.obs: Any = None
        self.actions: np.ndarray | None = None
        self.rewards: np.ndarray | None = None
        self.open: np.ndarray | None = None  # rows with a transition begun and not yet stored
        self.action_mask: np.ndarray | None = None  # each open transition's mask at its decision, when kept

    def _allocate(self, obs: Any, actions: np.ndarray, n: int, action_mask: np.ndarray | None) -> None:
        self.obs = {k: np.zeros_like(v) for k, v in obs.items()} if isinstance(obs, dict) else np.zeros_like(obs)
        self.actions = np.zeros_like(actions)
        self.action_mask = None if action_mask is None else np.zeros_like(action_mask)
        self.rewards = np.zeros(n, np.float32)
        self.open = np.zeros(n, bool)

    def store(self, buffer: ReplayBuffer, decision: np.ndarray | None, obs: Any, actions: np.ndarray,
              rewards: np.ndarray, next_obs: Any, terminated: np.ndarray, next_action_mask: np.ndarray | None,
              completes: np.ndarray, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Account for one env step and store the transitions it completes in ``buffer``; return the sub-envs
        (rows) whose transitions were stored, in the order they were written.

        ``decision``: rows whose ``obs`` is a decision (``None``: all); ``completes``: rows whose ``next_obs`` is a
        decision or whose episode just ended (``next_obs`` then holds the final observation).
        """
        n = len(rewards)
        decision = np.ones(n, bool) if decision is None else decision
        if decision.all() and completes.all() and (self.open is None or not self.open.any()):
            # Every row a whole transition.
            buffer.add(obs, actions, rewards, next_obs, terminated, next_action_mask, action_mask)
            return np.arange(n)
        if self.open is None:
            self._allocate(obs, actions, n, action_mask)
        begin = np.flatnonzero(decision)
        if isinstance(self.obs, dict):
            for k, store in self.obs.items():
                store[begin] = obs[k][begin]
        else:
            self.obs[begin] = obs[begin]
        self.actions[begin] = actions[begin]
        if self.action_mask is not None:
            self.action_mask[begin] = action_mask[begin]
        self.rewards[begin] = 0.0
        self.open[begin] = True
        self.rewards[self.open] += rewards[self.open]
        done = np.flatnonzero(self.open & completes)
        if len(done):
            buffer.add(_rows(self.obs, done), self.actions[done], self.rewards[done], _rows(next_obs, done),
                       terminated[done], None if next_action_mask is None else next_action_mask[done],
                       None if self.action_mask is None else self.action_mask[done])
            self.open[done] = False
        return done
