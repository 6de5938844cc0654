"""Observations handed to a trained policy (``RLModule.act``, ``forward``, ``predict_step``): checked against the
observation space and made a batch, so that a wrong shape fails naming the shapes, not as a matrix product's error."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from rl_lightning.errors import ConfigurationError


def _lead(space: gym.spaces.Box, obs: torch.Tensor, what: str) -> tuple[int, ...]:
    """The dims of ``obs`` before ``space``'s shape (``()`` for one observation); ``ConfigurationError`` unless its
    last dims are the space's shape."""
    shape, got = tuple(space.shape), tuple(obs.shape)
    if len(got) < len(shape) or got[len(got) - len(shape):] != shape:
        raise ConfigurationError(
            f"{what} has shape {got}, but the model's observation space has shape {shape}: give one observation of "
            f"shape {shape} or a batch of shape (n, {', '.join(map(str, shape))})")
    return got[:len(got) - len(shape)]


def observation_batch(space: gym.Space, obs: Any) -> tuple[Any, bool]:
    """``obs`` (a tensor, or a dict of them for a Dict space) as a batch, and whether it was one observation.

    Leading dims beyond one batch dim pass through (the networks act on the last ones). A tensor whose last dims are
    not the space's shape, a missing Dict key, or Dict entries with different batch dims raise ``ConfigurationError``
    naming the expected and the given shapes.
    """
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict):
            raise ConfigurationError(f"the model's observation space is a Dict with keys {sorted(space.spaces)}: "
                                     f"give a dict of observations, not {type(obs).__name__}")
        missing = sorted(set(space.spaces) - set(obs))
        if missing:
            raise ConfigurationError(f"observation lacks the keys {missing} of the model's observation space "
                                     f"(keys {sorted(space.spaces)})")
        leads = {key: _lead(sub, obs[key], f"observation {key!r}") for key, sub in space.spaces.items()}
        if len(set(leads.values())) > 1:
            raise ConfigurationError(f"the observation's entries have different batch shapes: {leads}")
        single = next(iter(leads.values())) == ()
        return ({k: v.unsqueeze(0) for k, v in obs.items()} if single else obs), single
    single = _lead(space, obs, "observation") == ()
    return (obs.unsqueeze(0) if single else obs), single
