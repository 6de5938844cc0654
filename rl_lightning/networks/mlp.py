"""Multi-layer perceptrons whose sizes and activation come from the config."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from rl_lightning.errors import ConfigurationError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation_class(name: str) -> type[nn.Module]:
    """The activation module class called ``name`` (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigurationError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """``Linear -> activation`` for each hidden size; ``out_dim`` is the size of what it gives."""

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int], activation: str = "tanh") -> None:
        layers: list[nn.Module] = []
        act = activation_class(activation)
        last = in_dim
        for size in hidden_sizes:
            layers += [nn.Linear(last, size), act()]
            last = size
        super().__init__(*layers)
        self.out_dim = last


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Orthogonal weights with ``gain`` and zero biases for every ``Linear`` and ``Conv2d`` in ``module``.

    The initialisation PPO implementations rely on (Engstrom et al. 2020, "Implementation
    Matters", sec. 3): sqrt(2) for hidden layers, small for the policy output.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight, gain)
            nn.init.zeros_(m.bias)


def flat_dim(shape: Sequence[int]) -> int:
    """Number of features once an observation of ``shape`` is flattened."""
    return int(math.prod(shape))
