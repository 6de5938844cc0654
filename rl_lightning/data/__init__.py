"""Experience storage and the datasets that feed Lightning's loops."""

from rl_lightning.data.rollout import RolloutBuffer, compute_gae
from rl_lightning.data.stream import EvaluationRequests, ExperienceStream

__all__ = ["EvaluationRequests", "ExperienceStream", "RolloutBuffer", "compute_gae"]
