"""Experience storage and the datasets that feed Lightning's loops."""

from rl_lightning.data.rollout import RolloutBuffer, compute_gae
from rl_lightning.data.stream import EvaluationRequests, RoundStream

__all__ = ["EvaluationRequests", "RoundStream", "RolloutBuffer", "compute_gae"]
