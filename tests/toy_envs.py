"""Small deterministic environments whose every transition a test can predict."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """Observation = steps taken this episode; reward 1 per step.

    Terminates after ``terminate_at`` steps or truncates after ``truncate_at`` steps
    (whichever is set and comes first). Actions are ignored.
    """

    def __init__(self, terminate_at: int | None = None, truncate_at: int | None = None, n_actions: int = 2):
        self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.terminate_at, self.truncate_at = terminate_at, truncate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        truncated = not terminated and self.truncate_at is not None and self.t >= self.truncate_at
        return np.array([self.t], dtype=np.float32), 1.0, terminated, truncated, {}


class TupleActionEnv(CounterEnv):
    """A CounterEnv with a Tuple action space, which the actor-critics do not support."""

    def __init__(self):
        super().__init__(terminate_at=5)
        self.action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))


class MultiDiscreteEnv(CounterEnv):
    """A CounterEnv with two discrete action branches."""

    def __init__(self):
        super().__init__(terminate_at=10)
        self.action_space = gym.spaces.MultiDiscrete([3, 2])


class GoalImageEnv(gym.Env):
    """A tiny visual goal task: a 36x40x3 uint8 image and a one-hot goal; reward 1 for the action equal to the goal.

    The image shows a bright square whose side tells the goal apart only
    together with the goal vector; episodes last 5 steps.
    """

    def __init__(self):
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (36, 40, 3), np.uint8),
            "goal": gym.spaces.Box(0.0, 1.0, (2,), np.float32),
        })
        self.action_space = gym.spaces.Discrete(2)
        self.t, self.goal = 0, 0

    def _obs(self):
        image = np.full((36, 40, 3), 50, dtype=np.uint8)
        image[:, :20] = 200
        return {"image": image, "goal": np.eye(2, dtype=np.float32)[self.goal]}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.goal = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = 1.0 if int(action) == self.goal else 0.0
        self.goal = int(self.np_random.integers(2))
        return self._obs(), reward, False, self.t >= 5, {}


class MaskedEnv(CounterEnv):
    """A CounterEnv with four actions of which only action 2 is ever allowed (``info["action_mask"]``)."""

    def __init__(self):
        super().__init__(truncate_at=4, n_actions=4)

    def _info(self):
        return {"action_mask": np.array([0, 0, 1, 0], dtype=np.int8)}

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs, self._info()

    def step(self, action):
        assert int(action) == 2, f"masked action {action} taken"
        obs, r, term, trunc, _ = super().step(action)
        return obs, r, term, trunc, self._info()


class GoalFirstUnsortedEnv(GoalImageEnv):
    """GoalImageEnv whose observations come in the order image, goal (as a Unity camera + goal sensor would)."""

    def __init__(self):
        super().__init__()
        from collections import OrderedDict

        self.observation_space = gym.spaces.Dict(OrderedDict(
            [("image", self.observation_space["image"]), ("goal", self.observation_space["goal"])]))


class ShiftingMaskEnv(CounterEnv):
    """MultiDiscrete([3, 2]) actions whose one allowed action per branch changes every step (``info["action_mask"]``).

    At episode step ``t`` only ``(t % 3, t % 2)`` is allowed; the mask holds the
    branches side by side (5 columns). Episodes truncate after 5 steps, so the
    mask after an autoreset (t = 0) differs from the one the old episode would
    have had next: a policy that used a stale mask would take a forbidden action
    and trip the assertion.
    """

    def __init__(self):
        super().__init__(truncate_at=5)
        self.action_space = gym.spaces.MultiDiscrete([3, 2])

    def _info(self):
        mask = np.zeros(5, dtype=bool)
        mask[self.t % 3] = mask[3 + self.t % 2] = True
        return {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs, self._info()

    def step(self, action):
        allowed = (self.t % 3, self.t % 2)
        assert tuple(int(a) for a in action) == allowed, f"masked action {action} taken at t={self.t}"
        obs, r, term, trunc, _ = super().step(action)
        return obs, r, term, trunc, self._info()


class ActionSumEnv(CounterEnv):
    """Observation = [steps taken, sum of the actions applied] this episode; reward = the action applied.

    Which actions reached the env, and how often, shows in both its observations and its rewards.
    """

    def __init__(self, terminate_at: int | None = None, truncate_at: int | None = None, n_actions: int = 4):
        super().__init__(terminate_at, truncate_at, n_actions)
        self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(2,), dtype=np.float32)
        self.total = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.total = 0
        return np.array([0.0, 0.0], dtype=np.float32), {}

    def step(self, action):
        _, _, terminated, truncated, info = super().step(action)
        self.total += int(action)
        return np.array([self.t, self.total], dtype=np.float32), float(action), terminated, truncated, info


class FailingResetEnv(CounterEnv):
    """A CounterEnv whose ``reset`` raises: a Unity player serving it crashes at its first reset."""

    def reset(self, *, seed=None, options=None):
        raise RuntimeError("FailingResetEnv cannot reset")


class EchoEnv(gym.Env):
    """Observation = (steps this episode, the last action applied); reward = the action's value.

    Lets a test check which action reached which agent, and sum an episode's return from the actions sent.
    """

    def __init__(self, terminate_at: int = 7, n_actions: int = 5):
        self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self.terminate_at = terminate_at
        self.t, self.last = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.last = 0, 0
        return np.array([0.0, 0.0], dtype=np.float32), {}

    def step(self, action):
        self.t, self.last = self.t + 1, int(action)
        return np.array([self.t, self.last], dtype=np.float32), float(action), self.t >= self.terminate_at, False, {}


class ParameterRewardEnv(gym.Env):
    """Rewards each step with the environment parameter ``level`` it was reset with (0 without one).

    Observation = [level]; episodes truncate after ``episode_length`` steps, so an episode's return is
    ``episode_length * level``: which value Unity played shows in the returns.
    """

    def __init__(self, episode_length: int = 5):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.episode_length, self.level, self.t = episode_length, 0.0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.level = float(((options or {}).get("parameters") or {}).get("level", 0.0))
        return np.array([self.level], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.level], dtype=np.float32), self.level, False, self.t >= self.episode_length, {}


class StatsEnv(CounterEnv):
    """A CounterEnv that reports custom stats as a Unity game would with ``StatsRecorder.Add``.

    At its ``n``-th step since it was made (all episodes together): ``toy/average`` = n (Average, 0),
    ``toy/most_recent`` = n (MostRecent, 1), ``toy/sum`` = 1 (Sum, 2), ``toy/histogram`` = 2n (Histogram, 3);
    at each reset ``toy/resets`` = 1 (Sum). ``extra_keys`` more Average keys per step (memory tests).
    """

    def __init__(self, truncate_at: int | None = None, extra_keys: int = 0):
        super().__init__(truncate_at=truncate_at)
        self.extra_keys = extra_keys
        self.n = 0

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {"stats": {"toy/resets": (1.0, 2)}}

    def step(self, action):
        obs, reward, terminated, truncated, _ = super().step(action)
        self.n += 1
        stats = {"toy/average": (self.n, 0), "toy/most_recent": (self.n, 1), "toy/sum": (1.0, 2),
                 "toy/histogram": (2 * self.n, 3)}
        stats.update({f"toy/extra_{k}": float(k) for k in range(self.extra_keys)})
        return obs, reward, terminated, truncated, {"stats": stats}


class ActionLayoutEnv(gym.Env):
    """A 4-dim vector observation and the action layout asked for; ``masked``: ``info["action_mask"]`` too.

    ``continuous=n``: Box(-1, 1, (n,)) as Unity's continuous actions (other bounds: ``low``, ``high``);
    ``branches=[...]``: one Discrete branch or a MultiDiscrete. Episodes last 8 steps; rewards are 0 (for export
    tests, which need spaces, not learning).
    """

    def __init__(self, continuous: int | None = None, branches: list[int] | None = None, masked: bool = False,
                 low: float | list[float] = -1.0, high: float | list[float] = 1.0):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        if continuous:
            self.action_space = gym.spaces.Box(np.float32(low), np.float32(high), (continuous,), np.float32)
        elif len(branches) == 1:
            self.action_space = gym.spaces.Discrete(branches[0])
        else:
            self.action_space = gym.spaces.MultiDiscrete(branches)
        self.branches, self.masked, self.t = branches, masked, 0

    def _info(self):
        if not self.masked:
            return {}
        mask = np.ones(sum(self.branches), dtype=np.int8)
        mask[0] = 0  # the first action of the first branch is never allowed
        return {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), self._info()

    def step(self, action):
        self.t += 1
        return self.np_random.uniform(-1, 1, 4).astype(np.float32), 0.0, False, self.t >= 8, self._info()


class HybridEnv(gym.Env):
    """Hybrid actions (1 continuous + discrete branches [3, 2]) whose reward depends on both parts.

    Each step shows a cue in {0, 1, 2} (one-hot). Reward = 1 if discrete branch 0 equals the cue, minus the
    distance of the continuous action from the cue's target ``(cue - 1) / 2``. Branch 0's action
    ``(cue + 1) % 3`` is forbidden (``info["action_mask"]``, 5 columns) and taking it fails an assertion.
    The observation also echoes the last action received (continuous value, branch 0, branch 1), so a test
    can see what arrived. Episodes truncate after 8 steps. Best return 8; a random policy's is about -2.
    """

    def __init__(self):
        from rl_lightning.envs.spaces import hybrid_action_space

        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32)
        self.action_space = hybrid_action_space(1, [3, 2])
        self.t, self.cue, self.last = 0, 0, np.zeros(3, np.float32)

    def _obs(self):
        return np.concatenate([np.eye(3, dtype=np.float32)[self.cue], self.last])

    def _info(self):
        mask = np.ones(5, dtype=bool)
        mask[(self.cue + 1) % 3] = False
        return {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue, self.last = 0, int(self.np_random.integers(3)), np.zeros(3, np.float32)
        return self._obs(), self._info()

    def step(self, action):
        continuous, discrete = action["continuous"], action["discrete"]
        assert continuous.shape == (1,) and continuous.dtype == np.float32, continuous
        assert discrete.shape == (2,) and np.issubdtype(discrete.dtype, np.integer), discrete
        assert int(discrete[0]) != (self.cue + 1) % 3, f"masked action {discrete} taken for cue {self.cue}"
        reward = float(int(discrete[0]) == self.cue) - abs(float(continuous[0]) - (self.cue - 1) / 2)
        self.t += 1
        self.last = np.array([continuous[0], discrete[0], discrete[1]], dtype=np.float32)
        self.cue = int(self.np_random.integers(3))
        return self._obs(), reward, False, self.t >= 8, self._info()


class FloatImageEnv(gym.Env):
    """A float image (8x10x3) with values outside [0, 1] (1.5, -0.2, 3.25) that change every step, as a Unity
    sensor without compression may send them (e.g. counts)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (8, 10, 3), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def _obs(self):
        image = np.full((8, 10, 3), 0.25, dtype=np.float32)
        image[0, 0], image[1, 2, 1], image[7, 9, 2] = 1.5, -0.2, 3.25 + self.t
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 5, {}


class GroupEnv(CounterEnv):
    """A CounterEnv in an ML-Agents group: ``info["group_id"]`` is 1 or 2 (alternating over the copies made in a
    process), ``info["group_reward"]`` is half the step count. Terminates after ``terminate_at`` steps."""

    made = 0

    def __init__(self, terminate_at: int = 2):
        super().__init__(terminate_at=terminate_at)
        self.group = 1 + GroupEnv.made % 2
        GroupEnv.made += 1

    def _info(self):
        return {"group_id": self.group, "group_reward": 0.5 * self.t}

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs, self._info()

    def step(self, action):
        obs, reward, terminated, truncated, _ = super().step(action)
        return obs, reward, terminated, truncated, self._info()


class NonFiniteEnv(gym.Env):
    """Finite observations and rewards until one injected NaN or inf, for the non-finite guards.

    The sub-env whose first reset gets ``seed=inject_seed`` (sub-env ``i`` of a vector env seeded ``s`` gets
    ``s + i``; every sub-env when it is None) returns ``value`` at its ``at_step``-th step (counted over episodes; 0: at its first reset) in
    ``field``: ``"obs"`` (the whole observation, or the ``"velocity"`` entry of a Dict one with ``dict_obs``) or
    ``"reward"``. Episodes terminate after ``episode_length`` steps; actions are Discrete(2), or a Box in
    [``low``, ``high``] with ``continuous``.
    """

    def __init__(self, at_step: int = 10, field: str = "obs", value: float = float("nan"), inject_seed: int | None = 0,
                 dict_obs: bool = False, episode_length: int = 50, continuous: bool = False,
                 low: float = -1.0, high: float = 1.0):
        box = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.observation_space = (gym.spaces.Dict({"position": box, "velocity": box}) if dict_obs else box)
        self.action_space = (gym.spaces.Box(low, high, shape=(1,), dtype=np.float32) if continuous
                             else gym.spaces.Discrete(2))
        self.at_step, self.field, self.value, self.inject_seed = at_step, field, float(value), inject_seed
        self.dict_obs, self.episode_length = dict_obs, episode_length
        self.injecting: bool | None = None  # decided at the first seeded reset
        self.steps = 0  # over all episodes
        self.t = 0

    def _obs(self, bad: bool):
        values = np.full(2, 0.1 * self.t, dtype=np.float32)
        if self.dict_obs:
            obs = {"position": values, "velocity": values.copy()}
            if bad:
                obs["velocity"][1] = self.value
            return obs
        if bad:
            values[1] = self.value
        return values

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.injecting is None:
            self.injecting = self.inject_seed is None or seed == self.inject_seed
        self.t = 0
        return self._obs(self.injecting and self.field == "obs" and self.at_step == 0 and self.steps == 0), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        bad = bool(self.injecting) and self.steps == self.at_step
        reward = self.value if bad and self.field == "reward" else 1.0
        return self._obs(bad and self.field == "obs"), reward, self.t >= self.episode_length, False, {}


class WrongShapeEnv(CounterEnv):
    """Declares observations of shape (1,) but returns shape (3,) (a space left behind when the env changed)."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return np.full(3, self.t, dtype=np.float32), reward, terminated, truncated, info


class WrongDtypeEnv(gym.Env):
    """Declares a uint8 image but returns floats in [0, 1]: an async vector env would store them as all zeros."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (4, 4, 1), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.random((4, 4, 1)), {}

    def step(self, action):
        return self.np_random.random((4, 4, 1)), 0.0, False, False, {}


class ShapeChangesMidRunEnv(CounterEnv):
    """Right at reset; from its third step on its observations grow to shape (2,)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return (obs if self.t < 3 else np.zeros(2, dtype=np.float32)), reward, terminated, truncated, info


class DropLastObservationWrapper(gym.ObservationWrapper):
    """Drops the last observation entry but keeps the wrapped env's space: a wrapper that forgot its space."""

    def observation(self, observation):
        return observation[:-1]


def next_step_counters(num_envs: int = 2, terminate_at: int | None = 5, truncate_at: int | None = None,
                       **kwargs) -> gym.vector.VectorEnv:
    """A vector env of ``CounterEnv`` copies with Gymnasium's default ``NEXT_STEP`` autoreset (``SyncVectorEnv``):
    the step after an episode's end ignores its action, returns the new episode's first observation (0) and reward 0.
    Observations count the steps of the episode, so a stored reset step shows (next observation 0, reward 0)."""
    return gym.vector.SyncVectorEnv([lambda: CounterEnv(terminate_at=terminate_at, truncate_at=truncate_at)
                                     for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


class StartDiscreteEnv(CounterEnv):
    """A ``Discrete(3, start=1)`` env that raises on any action outside {1, 2, 3}; reward 1 for action 3, else 0."""

    def __init__(self, terminate_at: int = 5):
        super().__init__(terminate_at=terminate_at)
        self.action_space = gym.spaces.Discrete(3, start=1)

    def step(self, action):
        if not self.action_space.contains(np.int64(action)):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(action == 3), terminated, truncated, info


class StartMultiDiscreteEnv(CounterEnv):
    """A ``MultiDiscrete([2, 3], start=[1, -1])`` env that raises on actions outside it; reward 1 for (2, 1)."""

    def __init__(self, terminate_at: int = 5):
        super().__init__(terminate_at=terminate_at)
        self.action_space = gym.spaces.MultiDiscrete([2, 3], start=[1, -1])

    def step(self, action):
        action = np.asarray(action, dtype=np.int64)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(action.tolist() == [2, 1]), terminated, truncated, info


class NeedsMissingPackageEnv(CounterEnv):
    """An env whose package is missing, as Gymnasium's MuJoCo and Box2D envs say it."""

    def __init__(self, **kwargs):
        raise gym.error.DependencyNotInstalled('SomeSim is not installed, run `pip install "somesim"`')


class HangingEnv(CounterEnv):
    """A CounterEnv whose step never returns once the process has taken ``hang_after`` steps of it (all copies)."""

    steps_taken = 0

    def __init__(self, hang_after: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.hang_after = hang_after

    def step(self, action):
        HangingEnv.steps_taken += 1
        if HangingEnv.steps_taken > self.hang_after:
            while True:  # a simulator stuck in a loop of its own
                time.sleep(3600)
        return super().step(action)
