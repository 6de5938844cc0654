"""Advantage Actor-Critic (Mnih et al. 2016, synchronous): one policy-gradient step per n-step rollout."""

from __future__ import annotations

from typing import Any

import torch

from rl_lightning.algorithms.on_policy import OnPolicyModule
from rl_lightning.data.rollout import normalize_advantages
from rl_lightning.setting_ranges import Count, LearningRate, UnitInterval


class A2C(OnPolicyModule):
    """Synchronous advantage actor-critic, the n-step TD actor-critic of the seeds.

    Each rollout of ``n_steps`` per env gives one update of
    ``-log pi(a|s) * A`` (actor) and ``vf_coef * loss(V(s), target)`` (critic),
    with ``A`` from GAE: ``gae_lambda=0`` makes ``A`` the one-step TD error
    ``r + gamma V(s') - V(s)`` and the target ``r + gamma V(s')`` (seed S4),
    ``gae_lambda=1`` gives n-step returns (SB3's A2C). Actor and critic have
    separate optimizers unless ``shared_trunk``.

    Args:
        n_steps: steps per env copy between updates.
        learning_rate: actor learning rate (the only one with ``shared_trunk``).
        gae_lambda: GAE lambda: 1 gives n-step returns, 0 one-step TD errors.
        normalize_advantage: standardise each rollout's advantages.
    """

    def __init__(self, n_steps: Count = 5, learning_rate: LearningRate = 7e-4, gae_lambda: UnitInterval = 1.0,
                 normalize_advantage: bool = False, **kwargs: Any) -> None:
        super().__init__(n_steps=n_steps, learning_rate=learning_rate, gae_lambda=gae_lambda,
                         normalize_advantage=normalize_advantage, **kwargs)

    def train_round(self, rollout: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        hp = self.hparams
        self.apply_lr_schedule()
        dist, values = self.policy(rollout["obs"], rollout.get("action_mask"))
        log_probs = dist.log_prob(rollout["actions"])
        advantages = rollout["advantages"]
        if hp.normalize_advantage:
            advantages = normalize_advantages(advantages)
        # Policy gradient theorem with a learned baseline (Mnih et al. 2016, Algorithm S3).
        policy_loss = -(log_probs * advantages).mean()
        value_loss = self.value_loss_fn(values, rollout["returns"])
        # Without an entropy bonus the entropy stays out of the graph (a diagnostic only).
        entropy = dist.entropy().mean() if hp.ent_coef != 0 else None
        self.actor_critic_step(policy_loss, value_loss, entropy)
        if entropy is None:
            with torch.no_grad():
                entropy = dist.entropy().mean()
        return {
            "model/actor_loss": policy_loss.detach(),
            "model/critic_loss": value_loss.detach(),
            "model/entropy": entropy.detach(),
            "model/explained_variance": self.explained_variance(rollout["values"], rollout["returns"]),
        }
