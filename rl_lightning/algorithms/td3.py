"""Twin Delayed Deep Deterministic policy gradient, TD3 (Fujimoto, van Hoof & Meger 2018).

TD3 is DDPG with three changes to its updates (the paper's sec. 4.2 and 5, Algorithm 1), so it builds on ``DDPG``
and keeps its actor, acting and exploration (Gaussian or Ornstein-Uhlenbeck noise) unchanged:

1. clipped double Q-learning: two critics, both regressed onto one target that bootstraps from the smaller of
   the two target critics' values (eq. 10), against the overestimation of a single critic;
2. target policy smoothing: the target action is the target actor's plus clipped Gaussian noise (eq. 14),
   ``clip(mu'(s') + clip(eps, -c, c), -1, 1)`` with ``eps ~ N(0, target_policy_noise)``, ``c = target_noise_clip``;
3. delayed policy updates: the actor and all target networks move once every ``policy_delay`` critic updates.

The delay counts gradient steps over the whole run (``critic_updates``, a checkpoint counter), as Stable-Baselines3's
``TD3.train`` counts its ``_n_updates``: the actor moves after critic updates ``d, 2d, ...``, across round
boundaries and resumes alike. (CleanRL's ``td3_continuous_action.py`` counts env steps instead; with one gradient
step per env step the two agree up to an offset.)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F

from rl_lightning.algorithms.ddpg import DDPG
from rl_lightning.algorithms.updates import make_optimizer
from rl_lightning.errors import ConfigurationError
from rl_lightning.lightning_compat import attached_trainer
from rl_lightning.networks.critics import CriticWithActionJoin
from rl_lightning.networks.target import make_target, soft_update
from rl_lightning.precision import fused_optimizers_allowed
from rl_lightning.setting_ranges import Count, NonNegativeFloat
from rl_lightning.trainer_options import fast_dev_run_batches


class TD3(DDPG):
    """DDPG with twin critics, target policy smoothing and delayed actor and target updates.

    Settings as ``DDPG`` (``critic_learning_rate`` is the one Adam of both critics, as in Stable-Baselines3 and
    CleanRL; ``tau`` applies at each delayed target update), plus:

    Args:
        policy_delay: critic updates per actor and target update (``d`` in the paper; 1 updates them every step).
        target_policy_noise: standard deviation of the noise added to the target action, in units of the [-1, 1]
            action range (``sigma~`` in the paper).
        target_noise_clip: that noise is clipped to ``[-target_noise_clip, target_noise_clip]`` (``c``).
    """

    COUNTERS = DDPG.COUNTERS + ("critic_updates",)

    def __init__(
        self,
        policy_delay: Count = 2,
        target_policy_noise: NonNegativeFloat = 0.2,
        target_noise_clip: NonNegativeFloat = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.critic_2: CriticWithActionJoin | None = None
        self.critic_updates = 0  # gradient steps of the critics, over the run; the actor's follow every policy_delay

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.env_steps == 0 and not fast_dev_run_batches(attached_trainer(self)):
            hp = self.hparams
            updates = self.gradient_rounds_in_budget() * hp.gradient_steps
            if updates < hp.policy_delay:
                raise ConfigurationError(
                    f"policy_delay={hp.policy_delay} is more than the {updates} critic updates the budget makes "
                    f"(total_steps={hp.total_steps}, learning_starts={hp.learning_starts}, gradient_steps="
                    f"{hp.gradient_steps} per round of {self.round_steps} env steps): the actor would never be "
                    "updated; lower policy_delay or learning_starts, or raise total_steps")

    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        super().build_networks(observation_space, action_space)  # actor, critic (Q1), their targets, action bounds
        hp = self.hparams
        # The second critic: the same architecture, its own initialisation.
        self.critic_2 = CriticWithActionJoin(observation_space, int(action_space.shape[0]), hp.hidden_sizes,
                                             hp.activation, hp.critic_action_layer, hp.cnn_features, hp.image_layout,
                                             self.cnn_layers)
        self.critic_2_target = make_target(self.critic_2)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        fused = fused_optimizers_allowed(self)
        critics = [*self.critic.parameters(), *self.critic_2.parameters()]
        return [make_optimizer(torch.optim.Adam, self.actor.parameters(), fused, lr=self.hparams.actor_learning_rate),
                make_optimizer(torch.optim.Adam, critics, fused, lr=self.hparams.critic_learning_rate)]

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def td_target(self, mb: dict[str, Any]) -> torch.Tensor:
        """The critics' regression target ``r + gamma * (1 - terminated) * min_i Q'_i(s', a~)`` (eq. 10 with the
        smoothed target action a~ of eq. 14); a truncated transition bootstraps, only termination zeroes the future."""
        hp = self.hparams
        next_obs = mb["next_obs"]
        next_action = self.actor_target(next_obs)
        if hp.target_policy_noise > 0:
            noise = (torch.randn_like(next_action) * hp.target_policy_noise).clamp(-hp.target_noise_clip,
                                                                                   hp.target_noise_clip)
            next_action = (next_action + noise).clamp(-1.0, 1.0)
        next_q = torch.minimum(self.critic_target(next_obs, next_action), self.critic_2_target(next_obs, next_action))
        return mb["rewards"] + hp.gamma * (~mb["terminated"]).float() * next_q

    def train_round(self, batch: dict[str, Any]) -> dict[str, Any]:
        hp = self.hparams
        metrics: dict[str, Any] = self.buffer_metrics()
        if not batch:
            return metrics
        actor_opt, critic_opt = self.optimizers()
        stats: dict[str, list[torch.Tensor]] = {"actor": [], "critic": [], "q": []}
        for mb in self.minibatches(batch):
            target = self.td_target(mb)
            q1 = self.critic(mb["obs"], mb["actions"])
            q2 = self.critic_2(mb["obs"], mb["actions"])
            # Both critics regress onto the one target (the sum of their losses, as in Stable-Baselines3).
            critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
            self.gradient_step(critic_loss, critic_opt)
            self.critic_updates += 1
            if self.critic_updates % hp.policy_delay == 0:
                # Deterministic policy gradient through the first critic only (Algorithm 1).
                actor_loss = self.deterministic_policy_step(mb["obs"], actor_opt)
                soft_update(self.critic_target, self.critic, hp.tau)
                soft_update(self.critic_2_target, self.critic_2, hp.tau)
                soft_update(self.actor_target, self.actor, hp.tau)
                stats["actor"].append(actor_loss.detach())
            stats["critic"].append(critic_loss.detach())
            stats["q"].append(q1.detach().mean())
        if stats["actor"]:  # a round may make no actor update (gradient_steps < policy_delay)
            metrics["model/actor_loss"] = torch.stack(stats["actor"]).mean()
        metrics.update({"model/critic_loss": torch.stack(stats["critic"]).mean(),
                        "model/q_mean": torch.stack(stats["q"]).mean()})
        return metrics
