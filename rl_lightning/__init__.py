"""rl_lightning: reinforcement learning algorithms as PyTorch Lightning modules."""

from rl_lightning.algorithms import A2C, DDPG, DQN, PPO, RLModule
from rl_lightning.envs import make_vector_env
from rl_lightning.errors import ConfigurationError
from rl_lightning.evaluation import EvaluationResult, evaluate_episodes

__version__ = "0.1.0"

__all__ = ["A2C", "DDPG", "DQN", "PPO", "ConfigurationError", "EvaluationResult", "RLModule", "evaluate_episodes",
           "make_vector_env"]
