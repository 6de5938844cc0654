"""What the collectors act through: the envs' NumPy observations and action masks in, NumPy arrays out.

``ActorCritic.rollout_actor`` (PPO, A2C) and ``q_values_of`` (DQN) give the NumPy mirror of a small CPU MLP
(``rl_lightning.networks.host``) where it computes what the module computes, and otherwise the torch module
behind the same NumPy boundary (``TorchActor``, ``TorchQValues``). Collectors and buffers then have one path:
NumPy from the envs and the policy, moved to the networks' device where an update needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from rl_lightning.networks.host import HostMLP
from rl_lightning.precision import host_array

if TYPE_CHECKING:
    from rl_lightning.networks.actor_critic import ActorCritic

ObsToTensor = Callable[[Any], Any]
"""Observations as the envs give them -> tensors on the networks' device (``RLModule.obs_to_tensor``)."""


class RolloutActor(Protocol):
    """Acts for a rollout: sampled actions, their log-probabilities and the state values, as NumPy arrays."""

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``obs`` as the envs give them; ``action_mask`` (bool, True = allowed) restricts discrete actions."""


class TorchActor:
    """An ``ActorCritic`` acting through ``ActorCritic.act``, with NumPy at its boundary."""

    def __init__(self, policy: ActorCritic, obs_to_tensor: ObsToTensor) -> None:
        self.policy, self.obs_to_tensor = policy, obs_to_tensor
        self.device = policy.value_head.weight.device

    def act(self, obs: Any, action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = None if action_mask is None else torch.as_tensor(action_mask, device=self.device)
        action, log_prob, value = self.policy.act(self.obs_to_tensor(obs), action_mask=mask)
        # On a GPU this copies the step's outputs to the host: the actions go there anyway, for the envs, and
        # the rollout keeps a step's data on the host until the update (RolloutBuffer.finish moves it at once).
        return host_array(action), host_array(log_prob), host_array(value)


class TorchQValues:
    """A Q-network's values for the envs' observations, as a NumPy array (one row per observation)."""

    def __init__(self, q_net: nn.Module, obs_to_tensor: ObsToTensor) -> None:
        self.q_net, self.obs_to_tensor = q_net, obs_to_tensor

    def __call__(self, obs: Any) -> np.ndarray:
        return host_array(self.q_net(self.obs_to_tensor(obs)))


class _MirrorQValues:
    """A Q-network's NumPy mirror, given the envs' observations."""

    def __init__(self, mirror: HostMLP) -> None:
        self.mirror = mirror

    def __call__(self, obs: Any) -> np.ndarray:
        return self.mirror(np.asarray(obs, dtype=np.float32))


def q_values_of(q_net: nn.Module, obs_to_tensor: ObsToTensor) -> Callable[[Any], np.ndarray]:
    """What a collector reads Q-values through: the NumPy mirror of an MLP on the CPU (a fraction of the dispatch
    cost of its tensor operations on one row per env), else the network itself. Make one per round: the mirror
    reads the weights' storage, so it sees every in-place update, but not a module moved elsewhere."""
    mirror = HostMLP.of(q_net)
    return _MirrorQValues(mirror) if mirror is not None else TorchQValues(q_net, obs_to_tensor)
