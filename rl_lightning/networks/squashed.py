"""The squashed Gaussian actor of SAC: a state-dependent diagonal Gaussian pushed through tanh into [-1, 1].

Haarnoja et al. 2018 ("Soft Actor-Critic Algorithms and Applications", appendix C): with ``u ~ N(mu(s), sigma(s))``
and ``a = tanh(u)``, the change of variables gives ``log pi(a|s) = log N(u; mu, sigma) - sum_i log(1 - tanh(u_i)^2)``
(their eq. 26). SB3 (``common/distributions.py``, ``SquashedDiagGaussianDistribution``) writes the correction as
``log(1 - a^2 + 1e-6)``; here it is the exact identity ``log(1 - tanh(u)^2) = log 4 - 2|u| - 2 log(1 + exp(-2|u|))``,
finite and accurate for every ``u`` without an epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from rl_lightning.networks.encoders import make_encoder

# The range SB3 (sac/policies.py, LOG_STD_MIN/MAX) and CleanRL keep the log standard deviation in.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def tanh_log_abs_det(u: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh(u)^2)`` per element, computed without cancellation for large ``|u|``."""
    # 1 - tanh(u)^2 = 4 e^{-2|u|} / (1 + e^{-2|u|})^2. (torch's softplus returns x itself above 20, an error of
    # e^{-20}-order; log1p of a number in (0, 1] has none.)
    magnitude = u.abs()
    return math.log(4.0) - 2.0 * magnitude - 2.0 * torch.log1p(torch.exp(-2.0 * magnitude))


def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log pi(tanh(u))`` of the squashed diagonal Gaussian (summed over action dimensions) at pre-tanh ``u``."""
    gaussian = torch.distributions.Normal(mean, log_std.exp(), validate_args=False).log_prob(u)
    return (gaussian - tanh_log_abs_det(u)).sum(-1)


class SquashedGaussianActor(nn.Module):
    """Observation -> (mean, log std) of a Gaussian whose samples are squashed by tanh into [-1, 1].

    The encoder's features feed two linear heads (SB3's ``Actor``: ``mu`` and ``log_std``, both state-dependent);
    the log std is clamped to [``LOG_STD_MIN``, ``LOG_STD_MAX``].
    """

    def __init__(self, observation_space: gym.Space, action_dim: int, hidden_sizes: Sequence[int], activation: str,
                 cnn_features: int, image_layout: Any, cnn_layers: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        self.encoder = make_encoder(observation_space, hidden_sizes, activation, cnn_features,
                                    image_layout=image_layout, cnn_layers=cnn_layers)
        self.mean = nn.Linear(self.encoder.out_dim, action_dim)
        self.log_std = nn.Linear(self.encoder.out_dim, action_dim)

    def forward(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian's mean and clamped log standard deviation (before tanh)."""
        h = self.encoder(obs)
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in [-1, 1] (gradients flow through the sample) and its log-probability."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), squashed_log_prob(u, mean, log_std)

    def sample_and_deterministic(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample ``tanh(mean + std * N(0, 1))`` and the deterministic action ``tanh(mean)``, both in [-1, 1], from
        one pass and without the log-probability: the ONNX export's two outputs (Tanh, Exp, Clip, RandomNormalLike)."""
        mean, log_std = self(obs)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean)), torch.tanh(mean)

    def deterministic(self, obs: Any) -> torch.Tensor:
        """The most likely pre-squash action, squashed: ``tanh(mean)``."""
        return torch.tanh(self(obs)[0])
