"""Target networks: frozen copies that track the online network."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_target(online: nn.Module) -> nn.Module:
    """A frozen copy of ``online``: no gradients, always in eval mode's bookkeeping."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) * target + tau * online`` (Lillicrap et al. 2016, Algorithm 1).

    ``tau = 1`` is the hard copy of DQN (Mnih et al. 2015).
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if tau == 1.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)
