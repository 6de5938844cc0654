"""Q-networks of continuous actions: Q(s, a) from an observation encoder, with the action joined into the MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from rl_lightning.errors import ConfigurationError
from rl_lightning.networks.encoders import make_encoder
from rl_lightning.networks.mlp import activation_class


class CriticWithActionJoin(nn.Module):
    """Q(s, a): observation features through an MLP, with the action concatenated before hidden layer ``action_layer``.

    ``action_layer = 0`` joins it with the input; ``1`` after the first hidden layer
    (Lillicrap et al. 2016, sec. 7, and seed S2).
    """

    def __init__(self, observation_space: gym.Space, action_dim: int, hidden_sizes: Sequence[int], activation: str,
                 action_layer: int, cnn_features: int, image_layout: Any,
                 cnn_layers: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        if not 0 <= action_layer <= len(hidden_sizes):
            raise ConfigurationError(f"critic_action_layer={action_layer} must lie in [0, {len(hidden_sizes)}] "
                                     f"for hidden_sizes={list(hidden_sizes)}")
        # Features only (flatten for vectors, conv net for images); the hidden layers come below.
        self.encoder = make_encoder(observation_space, (), activation, cnn_features, image_layout=image_layout,
                                    cnn_layers=cnn_layers)
        self.action_layer = action_layer
        act = activation_class(activation)
        layers, last = [], self.encoder.out_dim
        for i, size in enumerate(hidden_sizes):
            extra = action_dim if i == action_layer else 0
            layers.append(nn.Sequential(nn.Linear(last + extra, size), act()))
            last = size
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(last + (action_dim if action_layer == len(hidden_sizes) else 0), 1)

    def forward(self, obs: Any, action: torch.Tensor) -> torch.Tensor:
        h = self.encoder(obs)
        # The features and stored (float32) actions in the layers' dtype (float64 / bfloat16 under Lightning's
        # "64-true" / "bf16-true"); a no-op in float32.
        dtype = self.out.weight.dtype
        h, action = h.to(dtype), action.to(dtype)
        for i, layer in enumerate(self.hidden):
            if i == self.action_layer:
                h = torch.cat([h, action], dim=-1)
            h = layer(h)
        if self.action_layer == len(self.hidden):
            h = torch.cat([h, action], dim=-1)
        return self.out(h).squeeze(-1)
