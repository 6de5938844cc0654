"""Algorithms: each a LightningModule that collects its own experience."""

from rl_lightning.algorithms.a2c import A2C
from rl_lightning.algorithms.base import RLModule
from rl_lightning.algorithms.on_policy import OnPolicyModule
from rl_lightning.algorithms.ppo import PPO

__all__ = ["A2C", "PPO", "OnPolicyModule", "RLModule"]
