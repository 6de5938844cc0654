"""Environment construction: Gymnasium vector envs from ids or classes."""

from rl_lightning.envs.factory import make_vector_env, resolve_env

__all__ = ["make_vector_env", "resolve_env"]
