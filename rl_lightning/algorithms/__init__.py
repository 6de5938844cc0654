"""Algorithms: each a LightningModule that collects its own experience."""

from rl_lightning.algorithms.a2c import A2C
from rl_lightning.algorithms.base import RLModule
from rl_lightning.algorithms.ddpg import DDPG
from rl_lightning.algorithms.discrete_sac import DiscreteSAC
from rl_lightning.algorithms.dqn import DQN
from rl_lightning.algorithms.off_policy import OffPolicyModule
from rl_lightning.algorithms.on_policy import OnPolicyModule
from rl_lightning.algorithms.ppo import PPO
from rl_lightning.algorithms.sac import SAC
from rl_lightning.algorithms.td3 import TD3

__all__ = ["A2C", "DDPG", "DiscreteSAC", "DQN", "PPO", "SAC", "TD3", "OffPolicyModule", "OnPolicyModule", "RLModule"]
