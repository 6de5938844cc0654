"""Soft Actor-Critic for continuous actions (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

Equation numbers are those of that paper (arXiv:1812.05905). The update order per gradient step follows SB3's
``stable_baselines3/sac/sac.py``: temperature, then critics, then actor, then the targets.

Discrete actions (Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings") would fit beside this as
its own class with ``ACTION_SPACES = ("discrete",)``: a categorical actor (logits; ``pi(.|s)`` in closed form, no
reparameterisation), critics that output one Q per action (DQN's ``QNetwork`` twice, not ``CriticWithActionJoin``),
expectations over actions instead of samples in the value target, the actor loss and the temperature loss, and a
target entropy of a fraction of ``log |A|``. The replay buffer, rounds, targets, temperature parameter and
checkpointing here carry over unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl_lightning.algorithms.off_policy import OffPolicyModule
from rl_lightning.algorithms.updates import make_optimizer
from rl_lightning.errors import ConfigurationError
from rl_lightning.guards import check_finite_action_bounds
from rl_lightning.networks.critics import CriticWithActionJoin
from rl_lightning.networks.squashed import SquashedGaussianActor
from rl_lightning.networks.target import make_target, soft_update
from rl_lightning.precision import fused_optimizers_allowed, host_array
from rl_lightning.setting_ranges import Count, EntropyCoefficient, FiniteFloat, LearningRate, PositiveFraction


def parse_ent_coef(ent_coef: str | float) -> tuple[bool, float]:
    """``(learned, initial value)`` of the entropy coefficient setting: ``"auto"`` (learned from 1.0),
    ``"auto_<x>"`` (learned from x, SB3's syntax) or a positive number (fixed); a number, fixed or initial, in
    ``EntropyCoefficient``'s range."""
    allowed, given = EntropyCoefficient.range, ent_coef
    if isinstance(ent_coef, str):
        head, _, initial = ent_coef.partition("_")
        try:
            value = float(initial) if initial else 1.0
        except ValueError:
            value = float("nan")
        if head == "auto" and allowed.contains(value):
            return True, value
        try:  # a number written as a string (a CLI value)
            ent_coef = float(ent_coef)
        except ValueError:
            ent_coef = float("nan")
    if allowed.contains(ent_coef):
        return False, float(ent_coef)
    raise ConfigurationError(f"ent_coef={given!r}: give 'auto' (learned, starting at 1), 'auto_<x>' (learned, "
                             f"starting at x) or a fixed number x, with x {allowed.bounds}")


def soft_bellman_target(rewards: torch.Tensor, terminated: torch.Tensor, gamma: float, next_qs: torch.Tensor,
                        next_log_prob: torch.Tensor, ent_coef: torch.Tensor) -> torch.Tensor:
    """The critics' regression target (eqs. 2-3 with the clipped double-Q of Fujimoto et al. 2018):
    ``r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))`` with ``a' ~ pi(.|s')``.

    ``next_qs``: the target critics' values, one row per critic. A truncated transition bootstraps; only
    termination zeroes the future.
    """
    soft_value = next_qs.min(dim=0).values - ent_coef * next_log_prob
    return rewards + gamma * (~terminated).to(soft_value.dtype) * soft_value


class SAC(OffPolicyModule):
    """Maximum-entropy actor-critic: a squashed Gaussian policy, twin Q critics with soft target updates, and an
    entropy temperature ``alpha`` learned towards a target entropy.

    The actor's action in [-1, 1] (``tanh`` of a Gaussian sample) is what the buffer stores and the critics see; it
    is scaled to the action bounds for the env. The deterministic action (evaluation, ``act``, the ONNX export's
    deterministic output) is ``tanh(mean)``; the export's sampled output samples the squashed Gaussian in the graph.

    Args:
        actor_learning_rate: Adam learning rate of the actor.
        critic_learning_rate: Adam learning rate of the two critics (one optimizer).
        ent_coef_learning_rate: Adam learning rate of the log temperature (when learned).
        tau: soft target update rate of the critics' targets.
        ent_coef: entropy coefficient alpha: ``"auto"`` learns it from 1.0, ``"auto_0.1"`` from 0.1 (SB3's syntax),
            a number > 0 keeps it fixed.
        target_entropy: the entropy alpha is tuned towards (eq. 18); ``None``: ``-dim(A)`` (sec. 5).
        target_update_interval: gradient steps (counted over the run) between soft target updates.
    """

    ACTION_SPACES = ("box",)
    # The critics' backward gives the actor and the temperature no gradients, and so on.
    BACKWARD_LEAVES_PARAMETERS_UNUSED = True
    COUNTERS = OffPolicyModule.COUNTERS + ("gradient_updates",)
    # With a fixed ent_coef there is no temperature optimizer.
    RESUME_SETTINGS = OffPolicyModule.RESUME_SETTINGS + ("ent_coef",)

    def __init__(
        self,
        actor_learning_rate: LearningRate = 3e-4,
        critic_learning_rate: LearningRate = 3e-4,
        ent_coef_learning_rate: LearningRate = 3e-4,
        tau: PositiveFraction = 0.005,
        ent_coef: str | EntropyCoefficient = "auto",
        target_entropy: FiniteFloat | None = None,
        target_update_interval: Count = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.learn_ent_coef, self.initial_ent_coef = parse_ent_coef(ent_coef)
        self.actor: SquashedGaussianActor | None = None
        self.critic: nn.ModuleList | None = None
        self.target_entropy = target_entropy
        self.gradient_updates = 0

    @property
    def OPTIMIZER_NAMES(self) -> tuple[str, ...]:  # noqa: N802 - the base's declaration, here depending on a setting
        return ("actor", "critic", "ent_coef") if self.learn_ent_coef else ("actor", "critic")

    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        check_finite_action_bounds(action_space, "SAC")  # its tanh output is scaled onto [low, high]
        hp = self.hparams
        action_dim = int(action_space.shape[0])
        self.actor = SquashedGaussianActor(observation_space, action_dim, hp.hidden_sizes, hp.activation,
                                           hp.cnn_features, hp.image_layout, self.cnn_layers)
        # Twin critics (Fujimoto et al. 2018), each an MLP on the observation joined with the action (SB3's
        # ContinuousCritic); the target takes their minimum against overestimation.
        self.critic = nn.ModuleList([
            CriticWithActionJoin(observation_space, action_dim, hp.hidden_sizes, hp.activation, 0, hp.cnn_features,
                                 hp.image_layout, self.cnn_layers) for _ in range(2)])
        self.critic_target = make_target(self.critic)
        # Sec. 5: -dim(A). The most entropy: the uniform distribution on [-1, 1]^dim(A), dim(A) * log 2.
        self.build_temperature(-float(action_dim), action_dim * math.log(2.0))
        self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32),
                             persistent=False)

    def build_temperature(self, default_target_entropy: float, max_entropy: float) -> None:
        """``log(alpha)``, learned when ent_coef is "auto..." (the log keeps alpha positive; in the state dict
        either way), and the target entropy: the ``target_entropy`` setting, or else ``default_target_entropy``.
        ``max_entropy``: the most entropy the policy can have in the action space."""
        self.log_ent_coef = nn.Parameter(torch.tensor([math.log(self.initial_ent_coef)]),
                                         requires_grad=self.learn_ent_coef)
        if self.target_entropy is None:
            self.target_entropy = default_target_entropy
        elif self.learn_ent_coef and self.target_entropy > max_entropy:
            # An entropy the policy cannot reach: eq. 18's gradient then raises alpha at every step, without end.
            raise ConfigurationError(
                f"target_entropy={self.target_entropy} is above the most entropy a policy can have in this action "
                f"space ({max_entropy:.4g}): the learned ent_coef would grow without bound; lower it, or leave it "
                "null for the default")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp, fused = self.hparams, fused_optimizers_allowed(self)
        optimizers = [make_optimizer(torch.optim.Adam, self.actor.parameters(), fused, lr=hp.actor_learning_rate),
                      make_optimizer(torch.optim.Adam, self.critic.parameters(), fused, lr=hp.critic_learning_rate)]
        if self.learn_ent_coef:
            optimizers.append(make_optimizer(torch.optim.Adam, [self.log_ent_coef], fused,
                                             lr=hp.ent_coef_learning_rate))
        return optimizers

    # ------------------------------------------------------------------ acting
    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> the env's bounds."""
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)

    def random_actions(self) -> tuple[np.ndarray, np.ndarray]:
        stored = torch.rand(self.num_envs, self.action_low.shape[0], device=self.device) * 2.0 - 1.0
        return host_array(self.scale_action(stored)), host_array(stored)

    def explorer(self) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        return self.explore

    def explore(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Actions sampled from the policy: scaled to the bounds for the envs, in [-1, 1] to store."""
        action, _ = self.actor.sample(self.obs_to_tensor(obs))
        return host_array(self.scale_action(action)), host_array(action)

    def predict_actions(self, obs: Any, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        action = self.actor.deterministic(obs) if deterministic else self.actor.sample(obs)[0]
        return self.scale_action(action)

    def export_actions(self, obs: Any, action_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ONNX exporter's hook (``rl_lightning.export``): a sample of the policy and its most likely action,
        both scaled to the bounds."""
        # Clipped to the bounds (Min, Max): ONNX Runtime's Tanh (1.26) strays up to 2e-7 outside [-1, 1], and the
        # scaling's rounding could too.
        sampled, likeliest = (torch.maximum(torch.minimum(self.scale_action(a), self.action_high), self.action_low)
                              for a in self.actor.sample_and_deterministic(obs))
        return sampled, likeliest

    # ------------------------------------------------------------------ learning
    def ent_coef(self) -> torch.Tensor:
        """alpha = exp(log alpha), without gradient."""
        return self.log_ent_coef.detach().exp()

    def temperature_loss(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Eq. 18 in log alpha (as SB3): ``-log(alpha) * (log pi(a|s) + target entropy)``, averaged. Its gradient
        raises alpha while the policy's entropy ``-log pi`` is below the target, and lowers it above."""
        return -(self.log_ent_coef * (log_prob.detach() + self.target_entropy)).mean()

    def q_values(self, critics: nn.ModuleList, obs: Any, actions: torch.Tensor) -> torch.Tensor:
        """The critics' Q(s, a), one row per critic."""
        return torch.stack([critic(obs, actions) for critic in critics])

    # The parts of an update that depend on the kind of policy (``DiscreteSAC`` redefines these four).
    def policy_outputs(self, mb: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """What the actor's loss needs of the current policy at ``mb["obs"]`` (here: a reparameterised action), and
        the policy's log-probability per transition, which the temperature's loss and the entropy metric read."""
        return self.actor.sample(mb["obs"])

    @torch.no_grad()
    def critic_target_values(self, mb: dict[str, Any], ent_coef: torch.Tensor) -> torch.Tensor:
        """The soft Bellman target of eq. 3 at ``mb["next_obs"]``, with a sampled next action."""
        next_actions, next_log_prob = self.actor.sample(mb["next_obs"])
        next_qs = self.q_values(self.critic_target, mb["next_obs"], next_actions)
        return soft_bellman_target(mb["rewards"], mb["terminated"], self.hparams.gamma, next_qs, next_log_prob,
                                   ent_coef)

    def taken_q_values(self, mb: dict[str, Any]) -> torch.Tensor:
        """The critics' values of the stored ``(obs, action)`` pairs, one row per critic."""
        return self.q_values(self.critic, mb["obs"], mb["actions"])

    def actor_loss(self, mb: dict[str, Any], actions_pi: Any, log_prob: torch.Tensor,
                   ent_coef: torch.Tensor) -> torch.Tensor:
        """Eq. 7 with the reparameterised sample (eq. 11): ``E[alpha log pi(a|s) - min_i Q_i(s, a)]``; the gradient
        reaches the actor through the action (the caller has switched the critics' own gradients off)."""
        return (ent_coef * log_prob - self.q_values(self.critic, mb["obs"], actions_pi).min(0).values).mean()

    def train_round(self, batch: dict[str, Any]) -> dict[str, Any]:
        hp = self.hparams
        metrics: dict[str, Any] = self.buffer_metrics()
        if not batch:
            return metrics
        optimizers = self.optimizers()
        actor_opt, critic_opt = optimizers[0], optimizers[1]
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in ("actor", "critic", "q", "ent_coef", "ent_coef_loss",
                                                                "entropy")}
        for mb in self.minibatches(batch):
            policy, log_prob = self.policy_outputs(mb)
            ent_coef = self.ent_coef()  # this step's alpha: the one before its own update (SB3's order)
            if self.learn_ent_coef:
                ent_coef_loss = self.temperature_loss(log_prob)
                self.gradient_step(ent_coef_loss, optimizers[2])
                stats["ent_coef_loss"].append(ent_coef_loss.detach())
            target = self.critic_target_values(mb, ent_coef)
            # Eq. 5, for each critic; SB3's 0.5 * sum of the two mean squared errors.
            qs = self.taken_q_values(mb)
            critic_loss = 0.5 * sum(F.mse_loss(q, target) for q in qs)
            self.gradient_step(critic_loss, critic_opt)
            # The actor's loss reads the critics; their own weight gradients are not computed.
            self.critic.requires_grad_(False)
            try:
                actor_loss = self.actor_loss(mb, policy, log_prob, ent_coef)
                self.gradient_step(actor_loss, actor_opt)
            finally:
                self.critic.requires_grad_(True)
            self.gradient_updates += 1
            # Counted over the run (SB3 counts within one train() call, so with gradient_steps=1 it updates always).
            if self.gradient_updates % hp.target_update_interval == 0:
                soft_update(self.critic_target, self.critic, hp.tau)
            stats["actor"].append(actor_loss.detach())
            stats["critic"].append(critic_loss.detach())
            stats["q"].append(qs.detach().mean())
            stats["ent_coef"].append(ent_coef.squeeze())
            stats["entropy"].append(-log_prob.detach().mean())
        metrics.update({f"model/{name}": torch.stack(values).mean() for name, values in (
            ("actor_loss", stats["actor"]), ("critic_loss", stats["critic"]), ("q_mean", stats["q"]),
            ("ent_coef", stats["ent_coef"]), ("ent_coef_loss", stats["ent_coef_loss"]),
            ("entropy", stats["entropy"])) if values})
        return metrics
