"""Environments: building Gymnasium vector envs from ids or classes (``factory``), checking them (``checks``),
wrapping sub-envs (``transforms``), describing spaces (``spaces``), reading their steps (``steps``)."""

from rl_lightning.envs.factory import make_vector_env, resolve_env

__all__ = ["make_vector_env", "resolve_env"]
