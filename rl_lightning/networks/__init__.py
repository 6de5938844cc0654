"""Networks and what acts through them: encoders chosen from the observation space, MLP bodies, the actor-critic
of PPO/A2C, the action-joining critic of DDPG and SAC, SAC's squashed Gaussian actor, target-network updates, exploration noise and the NumPy mirrors
used for acting on the CPU."""

from rl_lightning.networks.actor_critic import ActorCritic
from rl_lightning.networks.critics import CriticWithActionJoin
from rl_lightning.networks.mlp import MLP
from rl_lightning.networks.noise import OrnsteinUhlenbeckNoise
from rl_lightning.networks.squashed import SquashedGaussianActor

__all__ = ["MLP", "ActorCritic", "CriticWithActionJoin", "OrnsteinUhlenbeckNoise", "SquashedGaussianActor"]
