"""Networks: MLP bodies and actor-critic heads."""

from rl_lightning.networks.actor_critic import ActorCritic
from rl_lightning.networks.mlp import MLP

__all__ = ["MLP", "ActorCritic"]
