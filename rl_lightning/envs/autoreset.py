"""Vector envs of either Gymnasium autoreset mode, read the one way the collectors read a step.

Gymnasium 1.x vector envs say how they reset a sub-env that ended an episode in ``metadata["autoreset_mode"]``
(``gymnasium/vector/vector_env.py``, ``AutoresetMode``); ``SyncVectorEnv.step`` (``sync_vector_env.py``) shows
what each mode returns:

- ``SAME_STEP``: the sub-env is reset inside the step that ended the episode; the step returns the next episode's
  first observation and keeps the finished episode's last one in ``info["final_obs"]``. This is what the
  collectors read (``rl_lightning.envs.steps``) and what ``make_vector_env`` builds from single envs.
- ``NEXT_STEP`` (Gymnasium's default, e.g. ``gym.make_vec`` and ``CartPoleVectorEnv``): the step that ends the
  episode returns its last observation as the observation; the *next* step of that sub-env ignores its action,
  resets it and returns the new episode's first observation with reward 0, ``terminated`` and ``truncated``
  False. ``NextStepAutoreset`` below makes such an env read like a ``SAME_STEP`` one with decisions.
- ``DISABLED``: the sub-env is not reset at all until the caller resets it (``reset(options={"reset_mask":
  ...})``). The collectors never reset sub-envs themselves, so it is refused.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import iterate

from rl_lightning.errors import ConfigurationError

MODE_HINT = ("set its metadata['autoreset_mode'] to gymnasium.vector.AutoresetMode.NEXT_STEP or SAME_STEP, as its "
             "step resets ended sub-envs (https://farama.org/Vector-Autoreset-Mode)")


def autoreset_mode(venv: gym.vector.VectorEnv, label: str) -> AutoresetMode:
    """The autoreset mode ``venv`` declares: ``SAME_STEP`` or ``NEXT_STEP``; ``ConfigurationError`` for others.

    A vector env without the key is refused rather than taken to be ``NEXT_STEP`` (as Gymnasium's own
    ``RecordEpisodeStatistics`` assumes, with a warning): the two modes return different observations at an
    episode's end, and a wrong guess either trains on reset steps as if they were transitions or fails later
    without saying why. ``label`` names the env in the message.
    """
    metadata = getattr(venv, "metadata", None) or {}
    if "autoreset_mode" not in metadata:
        raise ConfigurationError(f"env {label}: the vector env {type(venv).__name__} does not say how it resets "
                                 f"sub-envs whose episode ended; {MODE_HINT}")
    mode = metadata["autoreset_mode"]
    try:
        mode = mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)  # also its value, e.g. "NextStep"
    except ValueError:
        raise ConfigurationError(f"env {label}: metadata['autoreset_mode']={mode!r} of {type(venv).__name__} is not "
                                 f"a gymnasium.vector.AutoresetMode; {MODE_HINT}") from None
    if mode == AutoresetMode.DISABLED:
        raise ConfigurationError(
            f"env {label}: {type(venv).__name__} uses AutoresetMode.DISABLED (ended sub-envs wait for the caller to "
            "reset them), which training does not do; build it with autoreset_mode=AutoresetMode.NEXT_STEP or "
            "SAME_STEP (e.g. gym.make_vec(..., vector_kwargs={'autoreset_mode': AutoresetMode.SAME_STEP}))")
    return mode


class NextStepAutoreset(gym.vector.VectorWrapper):
    """Reads a ``NEXT_STEP`` vector env the way the collectors read a ``SAME_STEP`` one (``rl_lightning.envs.steps``).

    Per step it adds what the collectors take from a same-step autoreset and from Unity's vector env:

    - ``info["final_obs"]`` / ``info["_final_obs"]``: a sub-env whose episode ended in this step has its returned
      observation (the episode's last) there too, so a truncated episode bootstraps from it; ``info["final_info"]``
      is the step's info (its action masks are the final observation's);
    - ``info["decision"]``: which rows of the returned observations hold a decision. A row whose episode just
      ended holds the episode's last observation: its next action is ignored by the reset step that follows, so
      it is no decision. The reset step's reward (0) then belongs to no decision, and its row's next observation
      (the new episode's first) is one again. The rollout buffer (``RolloutBuffer.add``) and the replay's
      ``DecisionTransitions`` therefore store no transition for a reset step, as they store none for a Unity agent
      between decisions. An inner env's own ``info["decision"]`` is kept (a row must be both).

    Reset steps are still env steps: the collectors count every sub-env of every vector step in ``env_steps``.
    ``RecordEpisodeStatistics`` is applied inside this wrapper, where it reads the env's ``NEXT_STEP`` metadata and
    leaves reset steps out of episode returns and lengths.
    """

    def _decisions(self, info: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        inner = info.get("decision")
        return rows if inner is None else rows & np.asarray(inner, dtype=bool)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        info = dict(info)
        info["decision"] = self._decisions(info, np.ones(self.num_envs, dtype=bool))
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        ended = np.logical_or(terminated, truncated)
        info = dict(info)
        if ended.any():
            if "final_obs" in info:  # an env that declares NEXT_STEP but resets in the same step: not what it says
                raise ConfigurationError(f"{type(self.env.unwrapped).__name__} declares AutoresetMode.NEXT_STEP but its "
                                         f"step returned info['final_obs'], as a SAME_STEP env does; {MODE_HINT}")
            finals = np.empty(self.num_envs, dtype=object)
            for i, row in enumerate(iterate(self.env.observation_space, obs)):
                if ended[i]:
                    finals[i] = row
            info["final_info"] = dict(info)
            info["final_obs"], info["_final_obs"] = finals, ended
        info["decision"] = self._decisions(info, ~ended)
        return obs, reward, terminated, truncated, info


def read_as_same_step(venv: gym.vector.VectorEnv, label: str) -> gym.vector.VectorEnv:
    """``venv`` as the collectors read it: a ``SAME_STEP`` env as it is, a ``NEXT_STEP`` one in ``NextStepAutoreset``;
    any other mode is refused (``autoreset_mode``)."""
    if autoreset_mode(venv, label) == AutoresetMode.NEXT_STEP:
        return NextStepAutoreset(venv)
    return venv
