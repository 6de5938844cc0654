"""Deep Deterministic Policy Gradient (Lillicrap et al. 2016)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl_lightning.algorithms.off_policy import OffPolicyModule
from rl_lightning.algorithms.updates import make_optimizer
from rl_lightning.precision import fused_optimizers_allowed, host_array
from rl_lightning.errors import ConfigurationError
from rl_lightning.guards import check_finite_action_bounds
from rl_lightning.networks.encoders import make_encoder
from rl_lightning.networks.critics import CriticWithActionJoin
from rl_lightning.networks.noise import OrnsteinUhlenbeckNoise
from rl_lightning.networks.target import make_target, soft_update
from rl_lightning.setting_ranges import (LearningRate, NonNegativeCount, NonNegativeFloat, PositiveFloat,
                                        PositiveFraction)


class DDPG(OffPolicyModule):
    """Deterministic actor-critic for continuous actions with a replay buffer and soft target updates.

    The actor ends in tanh; its output in [-1, 1] is what the buffer stores and
    the critic sees, and it is scaled to the action bounds for the env.

    Args:
        actor_learning_rate: Adam learning rate of the actor.
        critic_learning_rate: Adam learning rate of the critic.
        tau: soft target update rate, applied after every gradient step.
        critic_action_layer: hidden layer of the critic before which the action joins (0 = with the observation).
        action_noise: exploration noise: ``"gaussian"``, ``"ou"`` (Ornstein-Uhlenbeck) or ``"none"``.
        noise_sigma: noise scale, in units of the [-1, 1] action range.
        ou_theta: mean reversion rate of the OU noise.
        ou_dt: time step of the OU noise.
    """

    OPTIMIZER_NAMES = ("actor", "critic")
    ACTION_SPACES = ("box",)
    # The critic's backward gives the actor no gradients.
    BACKWARD_LEAVES_PARAMETERS_UNUSED = True
    MODEL_SETTINGS = OffPolicyModule.MODEL_SETTINGS + ("critic_action_layer",)

    def __init__(
        self,
        actor_learning_rate: LearningRate = 1e-3,
        critic_learning_rate: LearningRate = 1e-3,
        tau: PositiveFraction = 0.005,
        critic_action_layer: NonNegativeCount = 0,
        action_noise: Literal["gaussian", "ou", "none"] = "gaussian",
        noise_sigma: NonNegativeFloat = 0.1,
        ou_theta: NonNegativeFloat = 0.15,
        ou_dt: PositiveFloat = 1e-2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if action_noise not in ("gaussian", "ou", "none"):
            raise ConfigurationError(f"action_noise={action_noise!r}: choose 'gaussian', 'ou' or 'none'")
        self.actor: nn.Module | None = None
        self.critic: CriticWithActionJoin | None = None
        self.noise: OrnsteinUhlenbeckNoise | None = None

    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        check_finite_action_bounds(action_space, type(self).__name__)  # its tanh output is scaled onto [low, high]
        hp = self.hparams
        action_dim = int(action_space.shape[0])
        encoder = make_encoder(observation_space, hp.hidden_sizes, hp.activation, hp.cnn_features,
                               image_layout=hp.image_layout, cnn_layers=self.cnn_layers)
        self.actor = nn.Sequential(encoder, nn.Linear(encoder.out_dim, action_dim), nn.Tanh())
        self.critic = CriticWithActionJoin(observation_space, action_dim, hp.hidden_sizes, hp.activation,
                                           hp.critic_action_layer, hp.cnn_features, hp.image_layout, self.cnn_layers)
        self.actor_target = make_target(self.actor)
        self.critic_target = make_target(self.critic)
        self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32),
                             persistent=False)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        fused = fused_optimizers_allowed(self)
        return [make_optimizer(torch.optim.Adam, self.actor.parameters(), fused, lr=self.hparams.actor_learning_rate),
                make_optimizer(torch.optim.Adam, self.critic.parameters(), fused, lr=self.hparams.critic_learning_rate)]

    # ------------------------------------------------------------------ acting
    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> the env's bounds."""
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)

    def random_actions(self) -> tuple[np.ndarray, np.ndarray]:
        stored = torch.rand(self.num_envs, self.action_low.shape[0], device=self.device) * 2.0 - 1.0
        return host_array(self.scale_action(stored)), host_array(stored)

    def ou_process(self) -> OrnsteinUhlenbeckNoise:
        """The OU noise processes of the env copies, built on first use."""
        if self.noise is None:
            hp = self.hparams
            self.noise = OrnsteinUhlenbeckNoise(self.num_envs, self.action_low.shape[0], hp.ou_theta, hp.noise_sigma,
                                                dt=hp.ou_dt)
        return self.noise

    def exploration_noise(self) -> torch.Tensor | None:
        hp = self.hparams
        if hp.action_noise == "none" or hp.noise_sigma == 0:
            return None
        if hp.action_noise == "ou":
            return self.ou_process().sample()
        return hp.noise_sigma * torch.randn(self.num_envs, self.action_low.shape[0])

    def explorer(self) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        return self.explore

    def explore(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """The actor's actions with exploration noise: scaled to the bounds for the envs, in [-1, 1] to store."""
        action = self.actor(self.obs_to_tensor(obs))
        noise = self.exploration_noise()
        if noise is not None:
            action = (action + noise.to(self.device)).clamp(-1.0, 1.0)
        return host_array(self.scale_action(action)), host_array(action)

    def on_episodes_end(self, ended: np.ndarray) -> None:
        if self.noise is not None:
            self.noise.reset(ended)

    def predict_actions(self, obs: Any, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        action = self.actor(obs)
        if not deterministic and self.hparams.noise_sigma > 0:
            action = (action + self.hparams.noise_sigma * torch.randn_like(action)).clamp(-1.0, 1.0)
        return self.scale_action(action)

    # ------------------------------------------------------------------ learning
    def deterministic_policy_step(self, obs: Any, actor_opt: Any) -> torch.Tensor:
        """One actor step of the deterministic policy gradient (Silver et al. 2014): ascend Q(s, mu(s)); returns the
        loss. The gradient passes through the critic to the action; the critic's own weight gradients are not
        needed, so they are not computed (a third less backward work through the critic)."""
        self.critic.requires_grad_(False)
        try:
            actor_loss = -self.critic(obs, self.actor(obs)).mean()
            self.gradient_step(actor_loss, actor_opt)
        finally:
            self.critic.requires_grad_(True)
        return actor_loss

    def train_round(self, batch: dict[str, Any]) -> dict[str, Any]:
        hp = self.hparams
        metrics: dict[str, Any] = self.buffer_metrics()
        if batch:
            actor_opt, critic_opt = self.optimizers()
            stats: dict[str, list[torch.Tensor]] = {"actor": [], "critic": [], "q": []}
            for mb in self.minibatches(batch):
                with torch.no_grad():
                    next_q = self.critic_target(mb["next_obs"], self.actor_target(mb["next_obs"]))
                    # Bellman target; a truncated transition bootstraps, only termination zeroes the future.
                    target = mb["rewards"] + hp.gamma * (~mb["terminated"]).float() * next_q
                q = self.critic(mb["obs"], mb["actions"])
                critic_loss = F.mse_loss(q, target)
                self.gradient_step(critic_loss, critic_opt)
                actor_loss = self.deterministic_policy_step(mb["obs"], actor_opt)
                soft_update(self.critic_target, self.critic, hp.tau)
                soft_update(self.actor_target, self.actor, hp.tau)
                stats["actor"].append(actor_loss.detach())
                stats["critic"].append(critic_loss.detach())
                stats["q"].append(q.detach().mean())
            metrics.update({"model/actor_loss": torch.stack(stats["actor"]).mean(),
                            "model/critic_loss": torch.stack(stats["critic"]).mean(),
                            "model/q_mean": torch.stack(stats["q"]).mean()})
        return metrics

    def run_state(self) -> dict[str, Any]:
        # Each DDP rank's own noise processes.
        return {**super().run_state(), "ou_noise_state": None if self.noise is None else self.noise.state.clone()}

    def load_run_state(self, state: dict[str, Any]) -> None:
        super().load_run_state(state)
        saved = state.get("ou_noise_state")
        if saved is not None and saved.shape == self.ou_process().state.shape:
            self.noise.state.copy_(saved)
