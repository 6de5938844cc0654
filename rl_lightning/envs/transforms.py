"""Observation transforms, as Gymnasium wrappers usable from YAML (``wrappers:`` entries)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl_lightning.errors import ConfigurationError


def _equals(x: torch.Tensor, value: float) -> torch.Tensor:
    """``x == value`` as ``Less``/``Greater`` in an exported graph (ONNX opset 9's ``Equal`` takes no floats)."""
    return ~((x < value) | (x > value))


class GoalConditionedImage(gym.ObservationWrapper):
    """Turns ``{image: HxWxC, goal: G}`` into one ``HxWx(C*G)`` image: the image once per goal entry, times it.

    With a one-hot goal only the block of the active goal is non-zero, so a plain
    conv net sees which goal it is after (seed S1's 6-channel input from a
    64x84x3 image and a 2-entry goal signal). The image keeps its dtype (uint8
    stays uint8) when the goal's bounds are within [0, 1].

    Args:
        env: an env with a Dict observation space.
        image_key: the HWC image entry; ``None`` picks the only 3-D entry.
        goal_key: the goal vector entry; ``None`` picks the only 1-D entry.
    """

    def __init__(self, env: gym.Env, image_key: str | None = None, goal_key: str | None = None) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ConfigurationError(f"GoalConditionedImage needs a Dict observation space, not {space}")
        self.image_key = image_key or self._only(space, 3, "image_key")
        self.goal_key = goal_key or self._only(space, 1, "goal_key")
        image, goal = space[self.image_key], space[self.goal_key]
        n_goals = int(goal.shape[0])
        h, w, c = image.shape
        # A uint8 image stays uint8 (goal entries are taken to be in [0, 1], e.g. one-hot; products are clipped).
        bounded_goal = goal.low.min() >= 0 and goal.high.max() <= 1
        dtype = image.dtype if image.dtype == np.uint8 or bounded_goal else np.float32
        if dtype == np.uint8:
            low, high = 0, 255
        else:
            scale = max(goal.high.max(), -goal.low.min(), 1)
            low, high = np.minimum(image.low, 0).min() * scale, image.high.max() * scale
        self.observation_space = gym.spaces.Box(low, high, shape=(h, w, c * n_goals), dtype=dtype)

    @staticmethod
    def _only(space: gym.spaces.Dict, ndim: int, setting: str) -> str:
        keys = [k for k, s in space.spaces.items() if len(s.shape) == ndim]
        if len(keys) != 1:
            raise ConfigurationError(f"{setting}: cannot tell which entry to use among {list(space.spaces)}; name it")
        return keys[0]

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        image = observation[self.image_key]
        goal = np.asarray(observation[self.goal_key])
        blocks = [image * goal[i] for i in range(goal.shape[0])]
        out = np.concatenate(blocks, axis=-1)
        if self.observation_space.dtype == np.uint8:
            out = np.clip(np.rint(out), 0, 255)
        return out.astype(self.observation_space.dtype, copy=False)

    def export_observation(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``observation`` on tensors, batch first, for an exported graph (``rl_lightning.export``); float out.

        The same values as ``observation``, with operators Unity's Barracuda runs (no ``Round`` in opset 9:
        ``np.rint``'s round-half-to-even is built from ``Floor``).
        """
        image = observation[self.image_key].float()
        goal = observation[self.goal_key].float()
        blocks = [image * goal[:, i:i + 1].reshape(-1, 1, 1, 1) for i in range(goal.shape[1])]
        out = torch.cat(blocks, dim=-1)
        if self.observation_space.dtype == np.uint8:
            rounded = torch.floor(out + 0.5)
            # A tie (x.5) rounded up to an odd number goes down one: round half to even, as np.rint.
            tie_to_odd = _equals(rounded - out, 0.5) & _equals(rounded - 2.0 * torch.floor(rounded * 0.5), 1.0)
            out = torch.clamp(rounded - tie_to_odd.float(), 0.0, 255.0)
        return out


class ActionOffset(gym.ActionWrapper):
    """Exposes only the discrete actions from ``offset`` on, renumbered from 0: action ``a`` sends ``a + offset``.

    Seed S1's DQN has 4 outputs for Unity GridWorld's 5 actions, where action 0
    is "stay": the network's action + 1 is sent. ``info["action_mask"]`` is cut
    the same way, so masks keep matching the exposed actions.

    Args:
        env: an env with a Discrete action space.
        offset: the number of leading actions to hide.
    """

    def __init__(self, env: gym.Env, offset: int = 1) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise ConfigurationError(f"ActionOffset needs a Discrete action space, not {space}")
        if not 0 <= offset < space.n:
            raise ConfigurationError(f"ActionOffset offset={offset} must be in 0..{space.n - 1} for {space}")
        self.offset = int(offset)
        self.action_space = gym.spaces.Discrete(int(space.n) - self.offset, start=int(space.start))

    def action(self, action: Any) -> Any:
        return action + self.offset

    def export_action(self, action: torch.Tensor) -> torch.Tensor:
        """``action`` on a batch of tensors, for an exported graph (``rl_lightning.export``)."""
        return action + self.offset

    def export_action_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The env's action masks (batch first) cut to the exposed actions, for an exported graph."""
        return mask[:, self.offset:]

    def transform_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """Cut the hidden actions off the mask (also a vector env's batched masks: the last axis)."""
        if "action_mask" in info:
            info = dict(info)
            info["action_mask"] = np.asarray(info["action_mask"])[..., self.offset:]
        return info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self.transform_info(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        return obs, reward, terminated, truncated, self.transform_info(info)


class _SpacesOnly(gym.Env):
    """An env that only has spaces: what a single-env wrapper is built on to serve a vector env."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def step(self, action: Any) -> Any:
        raise RuntimeError("a spaces-only env cannot step")

    def reset(self, **kwargs: Any) -> Any:
        raise RuntimeError("a spaces-only env cannot reset")


class PerSubEnv(gym.vector.VectorWrapper):
    """Applies a stateless single-env observation or action wrapper to every sub-env of a vector env.

    This is how ``wrappers:`` entries reach envs that are vector envs of their
    own (Unity: the agents are the sub-envs). The wrapper is built once over the
    single spaces; its ``observation`` maps each sub-env's observation (also the
    final observations in ``info``), its ``action`` each sub-env's action, and a
    ``transform_info`` method, if it has one, the batched info.
    """

    def __init__(self, env: gym.vector.VectorEnv, wrapper: gym.Wrapper) -> None:
        super().__init__(env)
        if not isinstance(wrapper, (gym.ObservationWrapper, gym.ActionWrapper)):
            raise ConfigurationError(f"{type(wrapper).__name__} cannot wrap a vector env's sub-envs: only "
                                     "observation and action wrappers (gymnasium.ObservationWrapper/ActionWrapper) can")
        self.wrapper = wrapper
        self.single_observation_space = wrapper.observation_space
        self.single_action_space = wrapper.action_space
        self.observation_space = gym.vector.utils.batch_space(wrapper.observation_space, env.num_envs)
        self.action_space = gym.vector.utils.batch_space(wrapper.action_space, env.num_envs)

    def _observations(self, obs: Any) -> Any:
        if not isinstance(self.wrapper, gym.ObservationWrapper):
            return obs
        rows = [self.wrapper.observation(o) for o in gym.vector.utils.iterate(self.env.observation_space, obs)]
        out = gym.vector.utils.create_empty_array(self.single_observation_space, self.num_envs)
        return gym.vector.utils.concatenate(self.single_observation_space, rows, out)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.wrapper, gym.ObservationWrapper) and "final_obs" in info:
            finals = info["final_obs"].copy()
            for i in np.flatnonzero(info["_final_obs"]):
                finals[i] = self.wrapper.observation(finals[i])
            info = {**info, "final_obs": finals}
        transform = getattr(self.wrapper, "transform_info", None)
        return transform(info) if transform is not None else info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._observations(obs), self._info(info)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if isinstance(self.wrapper, gym.ActionWrapper):
            actions = np.stack([np.asarray(self.wrapper.action(a))
                                for a in gym.vector.utils.iterate(self.action_space, actions)])
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        return self._observations(obs), rewards, terminated, truncated, self._info(info)


def wrap_sub_envs(env: gym.vector.VectorEnv, make_wrapper: Any) -> PerSubEnv:
    """``PerSubEnv`` over ``env`` with the wrapper ``make_wrapper(single_env)`` returns."""
    return PerSubEnv(env, make_wrapper(_SpacesOnly(env.single_observation_space, env.single_action_space)))


def spaces_before_wrappers(venv: gym.vector.VectorEnv, n_wrappers: int) -> tuple[gym.Space, gym.Space] | None:
    """The single observation and action spaces of ``venv``'s env before its ``n_wrappers`` ``wrappers:`` entries.

    What an exported policy takes and gives (``rl_lightning.export`` folds the wrappers into the graph).
    ``None`` where the sub-envs cannot be reached (``AsyncVectorEnv``: they live in other processes).
    """
    if n_wrappers == 0:
        return venv.single_observation_space, venv.single_action_space
    inner: Any = venv
    while isinstance(inner, gym.vector.VectorWrapper) and not isinstance(inner, PerSubEnv):
        inner = inner.env  # e.g. RecordEpisodeStatistics
    if isinstance(inner, PerSubEnv):  # a vector env of its own (Unity): one PerSubEnv per entry, outermost first
        for _ in range(n_wrappers - 1):
            inner = inner.env
        return inner.wrapper.env.observation_space, inner.wrapper.env.action_space
    if isinstance(inner, gym.vector.SyncVectorEnv):
        env = inner.envs[0]
        for _ in range(n_wrappers):
            if not isinstance(env, gym.Wrapper):
                return None
            env = env.env
        return env.observation_space, env.action_space
    return None
