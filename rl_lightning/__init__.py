"""rl_lightning: reinforcement learning algorithms as PyTorch Lightning modules.

Names are imported on first use, so light entry points (the Unity player)
start without loading Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "A2C": "rl_lightning.algorithms",
    "DDPG": "rl_lightning.algorithms",
    "DiscreteSAC": "rl_lightning.algorithms",
    "DQN": "rl_lightning.algorithms",
    "PPO": "rl_lightning.algorithms",
    "RLModule": "rl_lightning.algorithms",
    "TD3": "rl_lightning.algorithms",
    "SAC": "rl_lightning.algorithms",
    "make_vector_env": "rl_lightning.envs",
    "ConfigurationError": "rl_lightning.errors",
    "EvaluationResult": "rl_lightning.evaluation",
    "evaluate_episodes": "rl_lightning.evaluation",
    "evaluate": "rl_lightning.evaluation",
    "plot_learning_curves": "rl_lightning.plotting",
    "read_scalars": "rl_lightning.plotting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rl_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
