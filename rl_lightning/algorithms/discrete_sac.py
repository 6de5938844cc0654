"""Soft Actor-Critic for discrete actions (Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings").

Equation numbers are those of that paper (arXiv:1910.07207). With finitely many actions the policy's distribution
is known in closed form, so the expectations over actions that continuous SAC estimates with one sampled action
are computed exactly, and nothing is reparameterised:

- the critics output one Q-value per action (DQN's head, twice);
- the soft value of the next state is ``V(s') = sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]`` (eq. 10);
- the actor's loss is ``E_s[sum_a pi(a|s) (alpha log pi(a|s) - min_i Q_i(s, a))]`` (eq. 12);
- the temperature's loss is ``E_s[-alpha sum_a pi(a|s) (log pi(a|s) + target entropy)]`` (eq. 11), with a target
  entropy of ``target_entropy_scale * log |A|`` (the paper: 0.98 of the uniform policy's entropy).

Action masks (Unity ML-Agents' ``ActionMask``, Gymnasium's ``info["action_mask"]``) restrict ``pi`` to the allowed
actions at each state, when acting and inside every expectation: the replay buffer keeps each observation's mask
beside the next one's. ML-Agents' SAC (``ml-agents/mlagents/trainers/sac/optimizer_torch.py``) likewise stores each
experience's ``BufferKey.ACTION_MASK``, evaluates the actor on the sampled observations under it, and sums its
policy and entropy losses over the masked branch probabilities (``sac_policy_loss``, ``sac_entropy_loss``); it
bootstraps from a separate value network, so it needs no next mask, and its target entropy is 0.2 of ``log`` of each
branch's size (``discrete_target_entropy_scale``). Everything else -
the buffer, rounds, twin critics and their soft targets, the temperature parameter, the update order, checkpoints -
is ``SAC``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_lightning.algorithms.sac import SAC
from rl_lightning.envs.spaces import to_space_actions
from rl_lightning.export import categorical_actions
from rl_lightning.networks.actor_critic import masked_logits
from rl_lightning.networks.encoders import make_encoder
from rl_lightning.networks.target import make_target
from rl_lightning.setting_ranges import FiniteFloat, PositiveFraction


def policy_terms(logits: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pi(.|s), log pi(.|s))`` of the masked categorical policy, one row per state. A forbidden action has
    probability 0 and log-probability 0 (not the dtype's most negative number, which scaled by alpha or summed
    with a Q-value overflows to -inf): every ``pi * (...)`` term of the losses is then exactly 0 there, and so
    is its gradient."""
    log_probs = torch.log_softmax(masked_logits(logits, mask), dim=-1)
    probs = log_probs.exp()
    if mask is not None:
        log_probs = torch.where(mask, log_probs, torch.zeros_like(log_probs))
    return probs, log_probs


def soft_state_values(probs: torch.Tensor, log_probs: torch.Tensor, qs: torch.Tensor,
                      ent_coef: torch.Tensor) -> torch.Tensor:
    """``V(s) = sum_a pi(a|s) [min_i Q_i(s, a) - alpha log pi(a|s)]`` (eq. 10); ``qs``: one ``[batch, actions]``
    row of values per critic."""
    return (probs * (qs.min(dim=0).values - ent_coef * log_probs)).sum(-1)


class DiscreteSAC(SAC):
    """Maximum-entropy actor-critic for ``Discrete`` actions: a categorical policy (masked where the env masks
    actions), twin Q critics with one output per action and soft targets, and a learned temperature.

    Settings as ``SAC``, except:

    Args:
        target_entropy: the entropy alpha is tuned towards; ``None``: ``target_entropy_scale * log |A|``.
        target_entropy_scale: that fraction of the uniform policy's entropy ``log |A|`` (0.98 in the paper; lower
            values, e.g. 0.5, let the policy become more decided). With action masks, fewer actions are open at
            a state than ``|A|``, and a target above ``log`` of their number keeps raising alpha: lower the scale.
    """

    ACTION_SPACES = ("discrete",)
    STORES_ACTION_MASKS = True

    def __init__(self, target_entropy: FiniteFloat | None = None, target_entropy_scale: PositiveFraction = 0.98,
                 **kwargs: Any) -> None:
        super().__init__(target_entropy=target_entropy, **kwargs)

    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        hp = self.hparams
        n_actions = int(action_space.n)

        def head() -> nn.Module:  # observation -> one output per action
            encoder = make_encoder(observation_space, hp.hidden_sizes, hp.activation, hp.cnn_features,
                                   image_layout=hp.image_layout, cnn_layers=self.cnn_layers)
            return nn.Sequential(encoder, nn.Linear(encoder.out_dim, n_actions))

        self.actor = head()  # logits
        self.critic = nn.ModuleList([head(), head()])
        self.critic_target = make_target(self.critic)
        self.build_temperature(hp.target_entropy_scale * math.log(n_actions), math.log(n_actions))

    # ------------------------------------------------------------------ acting
    def random_actions(self) -> tuple[np.ndarray, np.ndarray]:
        return self.uniform_discrete_actions()

    def explorer(self) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        return self.explore

    def explore(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Actions drawn from the policy (only allowed ones), as the envs take them and as stored (from 0)."""
        mask = self._action_mask
        logits = self.actor(self.obs_to_tensor(obs))
        probs, _ = policy_terms(logits, None if mask is None else torch.as_tensor(mask, device=self.device))
        actions = torch.multinomial(probs, 1).squeeze(-1).cpu().numpy()
        return to_space_actions(actions, self.action_space), actions

    def predict_actions(self, obs: Any, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = masked_logits(self.actor(obs), action_mask)
        if deterministic:
            return logits.argmax(dim=-1)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)

    def export_actions(self, obs: Any, action_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ONNX exporter's hook (``rl_lightning.export``): a draw from the masked softmax and its argmax."""
        return categorical_actions(self.actor(obs), action_mask, self.action_space)

    # ------------------------------------------------------------------ learning
    def policy_outputs(self, mb: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """``(pi(.|s), log pi(.|s))`` at ``mb["obs"]``, and ``E_pi[log pi(a|s)]``, the negative entropy."""
        probs, log_probs = policy_terms(self.actor(mb["obs"]), mb.get("action_mask"))
        return (probs, log_probs), (probs * log_probs).sum(-1)

    @torch.no_grad()
    def critic_target_values(self, mb: dict[str, Any], ent_coef: torch.Tensor) -> torch.Tensor:
        """``r + gamma (1 - terminated) V'(s')`` with the exact soft value of eq. 10 under the target critics."""
        next_probs, next_log_probs = policy_terms(self.actor(mb["next_obs"]), mb.get("next_action_mask"))
        next_qs = torch.stack([critic(mb["next_obs"]) for critic in self.critic_target])
        values = soft_state_values(next_probs, next_log_probs, next_qs, ent_coef)
        return mb["rewards"] + self.hparams.gamma * (~mb["terminated"]).to(values.dtype) * values

    def taken_q_values(self, mb: dict[str, Any]) -> torch.Tensor:
        taken = mb["actions"].unsqueeze(-1)
        return torch.stack([critic(mb["obs"]).gather(-1, taken).squeeze(-1) for critic in self.critic])

    def actor_loss(self, mb: dict[str, Any], policy: Any, log_prob: torch.Tensor,
                   ent_coef: torch.Tensor) -> torch.Tensor:
        """Eq. 12: ``E_s[sum_a pi(a|s) (alpha log pi(a|s) - min_i Q_i(s, a))]``, the critics' values held fixed."""
        probs, log_probs = policy
        with torch.no_grad():
            min_q = torch.stack([critic(mb["obs"]) for critic in self.critic]).min(dim=0).values
        return (probs * (ent_coef * log_probs - min_q)).sum(-1).mean()
