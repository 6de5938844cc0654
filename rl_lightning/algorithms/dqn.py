"""Deep Q-Network (Mnih et al. 2015), with the Double DQN target (van Hasselt et al. 2016) as an option."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl_lightning.algorithms.off_policy import OffPolicyModule
from rl_lightning.algorithms.updates import make_optimizer
from rl_lightning.precision import fused_optimizers_allowed
from rl_lightning.errors import ConfigurationError
from rl_lightning.envs.spaces import to_space_actions
from rl_lightning.networks.encoders import make_encoder
from rl_lightning.networks.acting import q_values_of
from rl_lightning.networks.mlp import orthogonal_init
from rl_lightning.networks.target import make_target, soft_update
from rl_lightning.setting_ranges import Count, LearningRate, PositiveFloat, PositiveFraction, UnitInterval


def linear_schedule(start: float, end: float, fraction: float, progress: float) -> float:
    """``start`` moving linearly to ``end`` over the first ``fraction`` of training, then ``end``."""
    if fraction <= 0:
        return end
    return start + (end - start) * min(progress / fraction, 1.0)


def dqn_targets(rewards: torch.Tensor, terminated: torch.Tensor, next_q_target: torch.Tensor, gamma: float,
                next_q_online: torch.Tensor | None = None,
                next_action_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One-step Q-learning targets ``r + gamma * (1 - terminated) * Q_target(s', a*)``.

    ``a*`` maximises ``Q_target`` (Mnih et al. 2015, eq. 2) or, given ``next_q_online``,
    ``Q_online`` (Double DQN, van Hasselt et al. 2016, eq. 4). Masked next actions are never chosen.
    A truncated transition is not terminated: its target bootstraps from ``s'``.
    """
    chooser = next_q_target if next_q_online is None else next_q_online
    if next_action_mask is not None:
        chooser = chooser.masked_fill(~next_action_mask, -torch.inf)
    best = chooser.argmax(dim=-1, keepdim=True)
    next_value = next_q_target.gather(-1, best).squeeze(-1)
    return rewards + gamma * (~terminated).to(rewards.dtype) * next_value


class DQN(OffPolicyModule):
    """Deep Q-learning with epsilon-greedy exploration, a target network and a replay buffer.

    Args:
        learning_rate: Adam learning rate.
        exploration_initial_eps: epsilon at the start of training.
        exploration_final_eps: epsilon once the schedule ends.
        exploration_fraction: fraction of ``total_steps`` over which epsilon falls linearly.
        eval_epsilon: epsilon of evaluation episodes when ``eval_deterministic`` is off.
        target_update_interval: env steps between target network updates.
        tau: target update rate: 1 copies the online network (hard update), < 1 is Polyak averaging.
        double_q: choose the next action with the online network (Double DQN).
        loss: ``"huber"`` (smooth L1) or ``"mse"`` between Q(s, a) and its target.
        ortho_init: orthogonal initialisation (gain sqrt(2) for the encoder's layers, zero biases, gain 1 for the
            Q head) instead of PyTorch's default; keeps more ReLU units alive on sparse images.
    """

    OPTIMIZER_NAMES = ("q_network",)
    ACTION_SPACES = ("discrete",)
    COUNTERS = OffPolicyModule.COUNTERS + ("target_updates",)

    def __init__(
        self,
        learning_rate: LearningRate = 1e-4,
        exploration_initial_eps: UnitInterval = 1.0,
        exploration_final_eps: UnitInterval = 0.05,
        exploration_fraction: UnitInterval = 0.1,
        eval_epsilon: UnitInterval = 0.0,
        target_update_interval: Count = 10_000,
        tau: PositiveFraction = 1.0,
        double_q: bool = False,
        loss: Literal["huber", "mse"] = "huber",
        ortho_init: bool = False,
        max_grad_norm: PositiveFloat | None = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_grad_norm=max_grad_norm, **kwargs)
        if loss not in ("huber", "mse"):
            raise ConfigurationError(f"loss={loss!r}: choose 'huber' or 'mse'")
        self.q_net: nn.Module | None = None
        self.q_target: nn.Module | None = None
        self.target_updates = 0  # target updates done; one is due every target_update_interval env steps

    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        hp = self.hparams
        encoder = make_encoder(observation_space, hp.hidden_sizes, hp.activation, hp.cnn_features,
                               image_layout=hp.image_layout, cnn_layers=self.cnn_layers)
        self.q_net = nn.Sequential(encoder, nn.Linear(encoder.out_dim, int(action_space.n)))
        if hp.ortho_init:
            orthogonal_init(encoder, math.sqrt(2))
            orthogonal_init(self.q_net[1], 1.0)
        self.q_target = make_target(self.q_net)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(torch.optim.Adam, self.q_net.parameters(), fused_optimizers_allowed(self),
                              lr=self.hparams.learning_rate)

    # ------------------------------------------------------------------ acting
    @property
    def epsilon(self) -> float:
        hp = self.hparams
        return linear_schedule(hp.exploration_initial_eps, hp.exploration_final_eps, hp.exploration_fraction,
                               self.env_steps / hp.total_steps)

    def greedy(self, obs: Any, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.q_net(obs)
        if mask is not None:
            q = q.masked_fill(~mask, -torch.inf)
        return q.argmax(dim=-1)

    def randomize(self, actions: np.ndarray, epsilon: float, mask: np.ndarray | None) -> np.ndarray:
        """Replace each of ``actions`` with probability ``epsilon`` by a uniformly drawn allowed action.

        The draws come from torch's generator on the module's device (seeded, and saved in checkpoints).
        """
        n, n_actions = len(actions), int(self.action_space.n)
        explore = torch.rand(n, device=self.device) < epsilon
        if explore.any():
            # Uniform over the allowed actions: sample from the mask's rows as weights.
            weights = (torch.ones(n, n_actions, device=self.device) if mask is None
                       else torch.as_tensor(mask, device=self.device).float())
            actions = np.where(explore.cpu().numpy(), torch.multinomial(weights, 1).squeeze(-1).cpu().numpy(), actions)
        return actions

    def random_actions(self) -> tuple[np.ndarray, np.ndarray]:
        return self.uniform_discrete_actions()

    def explorer(self) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        """Epsilon-greedy on the Q-values of ``q_values_of`` (the NumPy mirror of an MLP on the CPU)."""
        q_values = q_values_of(self.q_net, self.obs_to_tensor)

        def explore(obs: Any) -> tuple[np.ndarray, np.ndarray]:
            mask = self._action_mask
            q = q_values(obs)
            actions = self.randomize((q if mask is None else np.where(mask, q, -np.inf)).argmax(axis=-1),
                                     self.epsilon, mask)
            return to_space_actions(actions, self.action_space), actions

        return explore

    def predict_actions(self, obs: Any, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        actions = self.greedy(obs, action_mask)
        if deterministic:
            return actions
        mask = None if action_mask is None else action_mask.cpu().numpy()
        return torch.as_tensor(self.randomize(actions.cpu().numpy(), self.hparams.eval_epsilon, mask),
                               device=self.device)

    # ------------------------------------------------------------------ learning
    def update_target(self) -> None:
        """Apply the target updates that fell due during collection (every ``target_update_interval`` env steps)."""
        due = self.env_steps // self.hparams.target_update_interval - self.target_updates
        if due > 0:
            # k Polyak steps towards an unchanged online network equal one with rate 1 - (1 - tau)^k.
            soft_update(self.q_target, self.q_net, 1.0 - (1.0 - self.hparams.tau) ** due)
            self.target_updates += due

    def train_round(self, batch: dict[str, Any]) -> dict[str, Any]:
        hp = self.hparams
        self.update_target()
        metrics: dict[str, Any] = {"model/epsilon": self.epsilon, **self.buffer_metrics()}
        if batch:
            opt = self.optimizers()
            losses, q_means = [], []
            for mb in self.minibatches(batch):
                q = self.q_net(mb["obs"]).gather(-1, mb["actions"].unsqueeze(-1)).squeeze(-1)
                with torch.no_grad():
                    target = dqn_targets(mb["rewards"], mb["terminated"], self.q_target(mb["next_obs"]), hp.gamma,
                                         self.q_net(mb["next_obs"]) if hp.double_q else None,
                                         mb.get("next_action_mask"))
                loss = F.smooth_l1_loss(q, target) if hp.loss == "huber" else F.mse_loss(q, target)
                self.gradient_step(loss, opt)
                losses.append(loss.detach())
                q_means.append(q.detach().mean())
            metrics["model/loss"] = torch.stack(losses).mean()
            metrics["model/q_mean"] = torch.stack(q_means).mean()
        return metrics
