"""Observation encoders chosen from the observation space: MLP for vectors, conv net for images, both for dicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_lightning.errors import ConfigurationError
from rl_lightning.networks.mlp import MLP, flat_dim

ImageLayout = Literal["auto", "hwc", "chw"]

NATURE_CONV: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
"""(channels, kernel, stride) of Mnih et al. 2015's DQN ("Nature DQN")."""


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3


def channels_last(shape: Sequence[int], layout: ImageLayout = "auto") -> bool:
    """Whether an image of ``shape`` is HWC (Unity, Gymnasium) rather than CHW; "auto": channels are the smaller end."""
    if layout != "auto":
        return layout == "hwc"
    return shape[-1] < shape[0]


class MLPEncoder(nn.Module):
    """Flattens a vector (or any non-image Box) observation and applies an MLP."""

    def __init__(self, space: gym.spaces.Box, hidden_sizes: Sequence[int], activation: str) -> None:
        super().__init__()
        self.obs_ndim = len(space.shape)
        self.mlp = MLP(flat_dim(space.shape), hidden_sizes, activation)
        self.out_dim = self.mlp.out_dim
        # The first layer, outside the module tree (a plain list: not registered twice), to read its dtype cheaply:
        # indexing the Sequential at every forward costs microseconds. ``.to()``/``.double()`` convert its weight
        # in place, so it always tells the layers' current dtype.
        self._first: list[nn.Module] = [self.mlp[0]] if len(self.mlp) else []

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # In the layers' dtype: float32, or float64 / bfloat16 under Lightning's "64-true" / "bf16-true" precision
        # (stored batches are float32). Without layers the features stay float32; the next layer casts them.
        x = obs.to(self._first[0].weight.dtype) if self._first else obs.float()
        if self.obs_ndim != 1:
            x = x.flatten(start_dim=x.dim() - self.obs_ndim)
        return self.mlp(x)


class NatureCNN(nn.Module):
    """Convolutions then one ReLU linear layer of ``features_dim`` (Mnih et al. 2015), for HWC or CHW images.

    uint8 images are scaled to [0, 1].
    """

    def __init__(self, space: gym.spaces.Box, features_dim: int = 512,
                 conv: Sequence[Sequence[int]] = NATURE_CONV, layout: ImageLayout = "auto") -> None:
        super().__init__()
        self.channels_last = channels_last(space.shape, layout)
        c, h, w = (space.shape[2], space.shape[0], space.shape[1]) if self.channels_last else space.shape
        self.scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
        layers: list[nn.Module] = []
        in_ch = c
        for out_ch, kernel, stride in conv:
            layers += [nn.Conv2d(in_ch, out_ch, kernel, stride), nn.ReLU()]
            in_ch = out_ch
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            try:
                n_flat = self.conv(torch.zeros(1, c, h, w)).shape[1]
            except RuntimeError as err:
                raise ConfigurationError(f"image observations of shape {tuple(space.shape)} are too small for the "
                                         f"conv layers {list(map(list, conv))}: {err}") from None
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())
        self.out_dim = features_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(self.linear[0].weight.dtype) * self.scale  # uint8 images become floats only here
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW (explicit axes: ONNX export rejects negative ones)
        x = self.linear(self.conv(x))
        return x.reshape(*lead, -1)


class DictEncoder(nn.Module):
    """One encoder per key of a Dict observation; their features are concatenated (in sorted key order)."""

    def __init__(self, encoders: dict[str, nn.Module]) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.out_dim = sum(e.out_dim for e in encoders.values())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([enc(obs[key]) for key, enc in self.encoders.items()], dim=-1)


def make_encoder(space: gym.Space, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh",
                 cnn_features: int = 512, image_layout: ImageLayout = "auto",
                 cnn_layers: Sequence[Sequence[int]] | None = None) -> nn.Module:
    """The encoder for ``space``: NatureCNN for images, MLP for vectors, a DictEncoder of both for Dict spaces.

    ``cnn_layers``: the conv stack for images, ``[out_channels, kernel, stride]`` per layer (``None``: Nature DQN's).
    Every encoder has ``out_dim``, the size of its feature vector.
    """
    if isinstance(space, gym.spaces.Dict):
        return DictEncoder({k: make_encoder(s, hidden_sizes, activation, cnn_features, image_layout, cnn_layers)
                            for k, s in sorted(space.spaces.items())})
    if is_image_space(space):
        return NatureCNN(space, cnn_features, conv=cnn_layers or NATURE_CONV, layout=image_layout)
    if isinstance(space, gym.spaces.Box):
        return MLPEncoder(space, hidden_sizes, activation)
    raise ConfigurationError(f"observation space {space} is not supported: use Box (vectors or images) or a Dict of them")
