"""Env suites that register their ids when imported (MiniGrid, ALE, a team's own package): the ``env_packages``
setting imports them before the env is resolved, as rl-baselines3-zoo's ``--gym-packages`` does."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from rl_lightning.errors import ConfigurationError


def import_env_packages(packages: Sequence[str] | None, setting: str = "env_packages") -> None:
    """Import each of ``packages`` (module names); a ``ConfigurationError`` naming the one that fails and why."""
    for name in packages or ():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{setting}: {name!r} is not a module name (e.g. minigrid, ale_py)")
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing = getattr(err, "name", None)
            fix = f": pip install {missing}" if missing and missing.split(".")[0] == name.split(".")[0] else ""
            raise ConfigurationError(f"{setting}: module {name!r} could not be imported ({err}){fix}") from None
