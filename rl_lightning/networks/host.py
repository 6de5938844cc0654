"""NumPy mirrors of small MLP policies, for acting on the CPU without PyTorch's per-operation overhead.

One rollout step of an actor-critic on vector observations is about fifteen tensor operations on a
few rows (one per env copy). Each costs PyTorch several microseconds of dispatch, and NumPy about one,
so on the CPU the mirror acts in well under half the time. It reads the module's parameters through
NumPy views of their storage (no copy, always the current weights); make a new mirror after anything
that may replace the parameters' storage (moving the module), as the collectors do for every rollout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from rl_lightning.networks.encoders import MLPEncoder


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)


_ACTIVATIONS: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {nn.Tanh: _tanh, nn.ReLU: _relu}


class _Unsupported(Exception):
    pass


def _layers(module: nn.Module) -> list[nn.Module]:
    """The Linear and activation layers ``module`` applies in order, or ``_Unsupported``."""
    if isinstance(module, nn.Linear) or type(module) in _ACTIVATIONS:
        return [module]
    if isinstance(module, MLPEncoder):
        if module.obs_ndim != 1:
            raise _Unsupported
        return _layers(module.mlp)
    if type(module) is nn.Sequential or (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward):
        return [layer for child in module for layer in _layers(child)]
    raise _Unsupported


class HostMLP:
    """The ``Linear``, tanh and ReLU layers of CPU float32 modules, applied one after another with NumPy.

    ``HostMLP.of(module, ...)`` returns ``None`` when a module holds anything else (convolutions, other
    activations, image or Dict encoders) or lives off the CPU: callers then use the module itself.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray] | Callable[[np.ndarray], np.ndarray]]) -> None:
        self.layers = layers

    @classmethod
    def of(cls, *modules: nn.Module) -> HostMLP | None:
        try:
            found = [layer for module in modules for layer in _layers(module)]
        except _Unsupported:
            return None
        layers: list[Any] = []
        for layer in found:
            if isinstance(layer, nn.Linear):
                weight, bias = layer.weight, layer.bias
                if weight.device.type != "cpu" or weight.dtype != torch.float32 or bias is None:
                    return None
                # (in, out) view of the (out, in) weight: NumPy's matmul passes the transpose to BLAS, no copy.
                layers.append((weight.detach().numpy().T, bias.detach().numpy()))
            else:
                layers.append(_ACTIVATIONS[type(layer)])
        return cls(layers)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        owned = False  # activations work in place, never on the caller's array
        for layer in self.layers:
            if isinstance(layer, tuple):
                x = x @ layer[0]
                x += layer[1]
                owned = True
            else:
                x = layer(x if owned else x.copy())
                owned = True
        return x


class HostActorCritic:
    """An ``ActorCritic`` with a Discrete action space and MLP bodies, acting with NumPy (see ``ActorCritic.host``).

    Sampling draws its randomness from PyTorch's generator (one ``exponential_`` per step), so seeding
    and checkpointed random states cover it as they cover ``ActorCritic.act``.
    """

    def __init__(self, actor_body: HostMLP, critic_body: HostMLP | None, policy_head: HostMLP,
                 value_head: HostMLP) -> None:
        self.actor_body, self.critic_body = actor_body, critic_body  # critic_body None: a shared trunk
        self.policy_head, self.value_head = policy_head, value_head

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None = None,
            deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, their log-probabilities and the state values for a batch of observations (NumPy arrays).

        Forbidden actions (``action_mask`` False) get probability 0, as in ``ActorCritic.act``.
        """
        obs = np.asarray(obs, dtype=np.float32)
        h_actor = self.actor_body(obs)
        h_critic = h_actor if self.critic_body is None else self.critic_body(obs)
        logits, values = self.policy_head(h_actor), self.value_head(h_critic)
        if action_mask is not None:
            logits = np.where(action_mask, logits, np.finfo(np.float32).min)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        if deterministic:
            actions = log_p.argmax(axis=-1)
        else:
            # Exponential race: with E_i ~ Exp(1) independent, argmax_i p_i / E_i is i with probability p_i,
            # and never an action of probability 0.
            race = torch.empty(log_p.shape, dtype=torch.float64).exponential_().numpy()
            actions = (np.exp(log_p) / race).argmax(axis=-1)
        log_probs = np.take_along_axis(log_p, actions[:, None], axis=-1)[:, 0]
        return actions, log_probs, values[:, 0]
