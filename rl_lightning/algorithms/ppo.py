"""Proximal Policy Optimization (Schulman et al. 2017) with the clipped surrogate objective."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from rl_lightning.algorithms.on_policy import OnPolicyModule
from rl_lightning.data.rollout import minibatch, normalize_advantages
from rl_lightning.errors import ConfigurationError
from rl_lightning.setting_ranges import BatchSize, PositiveFloat, UpdatesPerRound


def clipped_surrogate_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                           clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's policy loss, the negated clipped surrogate of Schulman et al. 2017, eq. 7.

    ``L = -E[min(r * A, clip(r, 1 - eps, 1 + eps) * A)]`` with ``r = exp(log pi - log pi_old)``.
    Returns the loss and the ratios.
    """
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    return -torch.min(unclipped, clipped).mean(), ratio


class PPO(OnPolicyModule):
    """Proximal Policy Optimization: several epochs of minibatch updates on each rollout.

    Discrete, MultiDiscrete, Gaussian (Box) and hybrid (ML-Agents' continuous + discrete
    branches) policies. By default actor and critic have separate networks and
    optimizers (manual optimization);
    ``shared_trunk=True`` gives the single-network, single-optimizer variant.

    Args:
        batch_size: minibatch size; must not exceed the rollout (``n_steps * num_envs``).
        n_epochs: passes over each rollout.
        clip_range: surrogate clipping epsilon.
        clip_range_schedule: ``"linear"`` anneals ``clip_range`` to 0 over ``total_steps``.
        target_kl: stop the rollout's remaining epochs once the approximate KL exceeds this; ``None`` never stops.
    """

    def __init__(
        self,
        batch_size: BatchSize = 64,
        n_epochs: UpdatesPerRound = 10,
        clip_range: PositiveFloat = 0.2,
        clip_range_schedule: Literal["constant", "linear"] = "constant",
        target_kl: PositiveFloat | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not self.env_sets_num_envs:
            self._check_batch_size()

    def _check_batch_size(self) -> None:
        batch_size = self.hparams.batch_size
        if batch_size < 1 or batch_size > self.rollout_size:
            raise ConfigurationError(
                f"batch_size={batch_size} must be between 1 and the rollout size n_steps * num_envs = "
                f"{self.hparams.n_steps} * {self.num_envs} = {self.rollout_size}; "
                "lower batch_size or raise n_steps/num_envs")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":  # again with the training envs' real count (Unity: its agents)
            self._check_batch_size()
            self._check_minibatches_across_ranks()

    def _check_minibatches_across_ranks(self) -> None:
        # Under DDP each minibatch's backward is a collective: every rank must make the same number of updates.
        # Unity ranks can have different agent counts, hence different rollout sizes.
        if self._num_envs_by_rank is None:
            return
        n_steps, batch_size = self.hparams.n_steps, self.hparams.batch_size
        per_rank = [math.ceil(n_steps * n / batch_size) for n in self._num_envs_by_rank]
        if len(set(per_rank)) > 1:
            raise ConfigurationError(
                f"under DDP every rank must make the same number of minibatch updates, but the ranks' envs have "
                f"{self._num_envs_by_rank} agents, giving {per_rank} minibatches of batch_size={batch_size} per "
                "rollout; give every rank's Unity env the same number of agents, or choose batch_size so that "
                "they agree")

    def train_round(self, rollout: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        hp = self.hparams
        self.apply_lr_schedule()
        clip_range = hp.clip_range * (self.progress_remaining() if hp.clip_range_schedule == "linear" else 1.0)
        n = rollout["advantages"].shape[0]
        # Only what the loss reads is indexed per minibatch (not the stored values).
        train = {k: rollout[k] for k in ("obs", "actions", "log_probs", "advantages", "returns", "action_mask")
                 if k in rollout}
        # Diagnostics come from the last epoch's minibatches (and the KL, for target_kl, from each epoch's last
        # one): computing them for every minibatch would add a fifth to the cost of a small network's update.
        stats: dict[str, list[torch.Tensor]] = {"pg": [], "v": [], "ent": [], "kl": [], "clip": []}

        def record_diagnostics() -> None:
            with torch.no_grad():
                stats["clip"].append(((ratio - 1).abs() > clip_range).float().mean())
                stats["ent"].append(dist.entropy().mean() if entropy is None else entropy.detach())
            stats["pg"].append(policy_loss.detach())
            stats["v"].append(value_loss.detach())

        for epoch in range(hp.n_epochs):
            last_epoch = epoch == hp.n_epochs - 1
            # One minibatch of the whole rollout needs no shuffle: its mean loss is the same in any order.
            minibatches = [None] if hp.batch_size >= n else torch.randperm(n, device=self.device).split(hp.batch_size)
            if n < self.rollout_size:
                # Envs whose rows do not all decide (Unity) give fewer samples than the rollout's size; the number of
                # minibatches stays that of a full rollout (under DDP every rank must make as many updates).
                count = math.ceil(self.rollout_size / hp.batch_size)
                order = torch.randperm(n, device=self.device)
                minibatches = list(order.repeat(math.ceil(count / n))[:max(n, count)].tensor_split(count))
            for i, idx in enumerate(minibatches):
                mb = train if idx is None else minibatch(train, idx)
                dist, values = self.policy(mb["obs"], mb.get("action_mask"))
                log_probs = dist.log_prob(mb["actions"])
                advantages = mb["advantages"]
                if hp.normalize_advantage:
                    advantages = normalize_advantages(advantages)
                policy_loss, ratio = clipped_surrogate_loss(log_probs, mb["log_probs"], advantages, clip_range)
                value_loss = self.value_loss_fn(values, mb["returns"])
                # Without an entropy bonus the entropy stays out of the graph (a diagnostic only).
                entropy = dist.entropy().mean() if hp.ent_coef != 0 else None
                self.actor_critic_step(policy_loss, value_loss, entropy)
                if last_epoch or (hp.target_kl is not None and i == len(minibatches) - 1):
                    with torch.no_grad():
                        # Unbiased low-variance KL estimator (Schulman, "Approximating KL divergence", k3).
                        stats["kl"].append(((ratio - 1) - (log_probs - mb["log_probs"])).mean())
                if last_epoch:
                    record_diagnostics()
            # Under DDP the ranks stop together, on the KL averaged over them (their updates are collectives).
            if hp.target_kl is not None and self.reduce_across_ranks(stats["kl"][-1], "mean") > hp.target_kl:
                break
        if not stats["pg"]:  # stopped early by target_kl: the diagnostics of the last minibatch
            record_diagnostics()
        mean = {k: torch.stack(v).mean() for k, v in stats.items()}
        return {
            "model/actor_loss": mean["pg"],
            "model/critic_loss": mean["v"],
            "model/entropy": mean["ent"],
            "model/approx_kl": mean["kl"],
            "model/clip_fraction": mean["clip"],
            "model/explained_variance": self.explained_variance(rollout["values"], rollout["returns"]),
            "model/clip_range": clip_range,
        }
