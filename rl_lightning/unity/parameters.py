"""Environment parameters for Unity: the project's schema, ML-Agents' ``environment_parameters``, and curricula.

Two ways to write ``parameters:`` (``UnityVectorEnv(parameters=...)``), mixable key by key:

- the project's own: a number is a constant; ``{sampler: uniform, min, max}``, ``{sampler: gaussian, mean, std}``,
  ``{sampler: multirange, intervals: [[a, b], ...]}``, each with an optional ``seed`` (default 0);
- ML-Agents' trainer-config section ``environment_parameters:`` as it is (docs/Training-ML-Agents.md,
  "Environment Parameters" and "Curriculum"; ml-agents/mlagents/trainers/settings.py): a number;
  ``{sampler_type: uniform|gaussian|multirangeuniform|constant, sampler_parameters: {...}}`` with
  ``min_value``/``max_value``, ``mean``/``st_dev``, ``intervals`` or ``value``, and an optional ``seed`` among the
  sampler parameters; or ``{curriculum: [lessons]}``, each lesson ``{name, value, completion_criteria}`` (none on
  the last), the criteria ``{measure: reward|progress, behavior, threshold, min_lesson_length, signal_smoothing,
  require_reset}``.

Where ML-Agents would silently use a default for a missing sampler bound (``min_value`` 0, ``max_value`` 1, ...),
a bound is required here: a misspelt key must not turn into a range nobody chose. A sampler without a seed in
ML-Agents' schema gets the run's seed plus its place among such values, as ML-Agents'
``EnvironmentParameterManager._set_sampler_seeds`` does (ml-agents/mlagents/trainers/environment_parameter_manager.py).

``Curriculum`` decides when lessons change, following ``EnvironmentParameterManager.update_lessons`` and
``CompletionCriteriaSettings.need_increment``; ``CurriculumCallback`` feeds it during training and logs the lessons.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch

from rl_lightning.errors import ConfigurationError

if TYPE_CHECKING:  # only a type here: every run imports this module (RLModule.configure_callbacks), Gym runs too,
    # and they must not need mlagents_envs (nor its protobuf 3.20 pin)
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

OUR_SAMPLERS = {"uniform": ("min", "max"), "gaussian": ("mean", "std"), "multirange": ("intervals",)}
"""The project's samplers (``sampler:``) and their keys."""

MLAGENTS_SAMPLERS = {"uniform": ("min_value", "max_value"), "gaussian": ("mean", "st_dev"),
                     "multirangeuniform": ("intervals",), "constant": ("value",)}
"""ML-Agents' ``sampler_type`` values (settings.py ``ParameterRandomizationType``) and their ``sampler_parameters``.

ML-Agents' docs spell the multi-range sampler ``multirange_uniform``; its code only accepts ``multirangeuniform``.
Both are accepted here."""

CRITERIA_KEYS = ("measure", "behavior", "threshold", "min_lesson_length", "signal_smoothing", "require_reset")
MEASURES = ("reward", "progress")


@dataclass(frozen=True)
class ParameterValue:
    """What one environment parameter is during a lesson: a constant, or a sampler Unity draws from at each reset.

    ``kind`` is ``constant`` (``args = (value,)``), ``uniform`` (min, max), ``gaussian`` (mean, std) or
    ``multirange`` (a tuple of (min, max) intervals).
    """

    kind: str
    args: tuple
    seed: int = 0

    def send(self, channel: EnvironmentParametersChannel, key: str, seed_offset: int = 0) -> None:
        """Queue it on ``channel`` (the message reaches Unity with the next step or reset); a sampler's seed is
        ``seed + seed_offset`` (process ``k`` of an env gets offset ``k``, so its processes draw apart)."""
        seed = self.seed + seed_offset
        if self.kind == "constant":
            channel.set_float_parameter(key, float(self.args[0]))
        elif self.kind == "uniform":
            channel.set_uniform_sampler_parameters(key, float(self.args[0]), float(self.args[1]), seed)
        elif self.kind == "gaussian":
            channel.set_gaussian_sampler_parameters(key, float(self.args[0]), float(self.args[1]), seed)
        else:
            channel.set_multirangeuniform_sampler_parameters(key, [tuple(r) for r in self.args[0]], seed)

    def __str__(self) -> str:
        if self.kind == "constant":
            return f"{self.args[0]:g}"
        return f"{self.kind}{self.args} (seed {self.seed})"


@dataclass(frozen=True)
class CompletionCriteria:
    """When a lesson is complete (ML-Agents' ``CompletionCriteriaSettings``, ml-agents/mlagents/trainers/settings.py).

    Attributes:
        measure: ``reward``: the mean return of the recent episodes; ``progress``: the fraction of training done.
        behavior: the behavior whose episodes count (``None``: the env's own).
        threshold: the lesson ends once the measure is above it (a fraction in [0, 1] for ``progress``).
        min_lesson_length: episodes that must end (since the last lesson change) before it may.
        signal_smoothing: weigh the reward measure with its previous value (0.25 old, 0.75 new).
        require_reset: restart every agent when the lesson ends, instead of letting the new value apply at each
            agent's next episode.
    """

    measure: str = "reward"
    behavior: str | None = None
    threshold: float = 0.0
    min_lesson_length: int = 0
    signal_smoothing: bool = True
    require_reset: bool = False

    def need_increment(self, progress: float, reward_buffer: Sequence[float], smoothing: float) -> tuple[bool, float]:
        """Whether the lesson ends now, and the new smoothed reward measure (``need_increment`` in ML-Agents)."""
        if len(reward_buffer) < self.min_lesson_length:
            return False, smoothing
        if self.measure == "progress":
            return progress > self.threshold, smoothing
        if len(reward_buffer) < 1:
            return False, smoothing
        measure = float(np.mean(reward_buffer))
        if math.isnan(measure):
            return False, smoothing
        if self.signal_smoothing:
            # ML-Agents smooths once per check: 0.25 of the previous smoothed value, 0.75 of the new mean.
            measure = 0.25 * smoothing + 0.75 * measure
            smoothing = measure
        return measure > self.threshold, smoothing


@dataclass(frozen=True)
class Lesson:
    """One lesson of a parameter's curriculum: its name, value, and when it ends (``None``: the last lesson)."""

    name: str
    value: ParameterValue
    completion_criteria: CompletionCriteria | None = None


@dataclass
class ParsedParameters:
    """``parameters:`` read: every parameter's value to send now, and the lessons of those given a curriculum."""

    values: dict[str, ParameterValue]
    curricula: dict[str, list[Lesson]]


# ---------------------------------------------------------------------- parsing
def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{path}: {value!r} is not a number")
    return float(value)


def _check_keys(given: Mapping, allowed: Sequence[str], path: str, what: str) -> None:
    unknown = [k for k in given if k not in allowed]
    if unknown:
        raise ConfigurationError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; {what} takes "
                                 f"{', '.join(allowed)}")


def _intervals(value: Any, path: str) -> tuple:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise ConfigurationError(f"{path}: {value!r} is not a list of [min, max] intervals, e.g. [[7, 10], [15, 20]]")
    out = []
    for i, interval in enumerate(value):
        if not isinstance(interval, Sequence) or isinstance(interval, str) or len(interval) != 2:
            raise ConfigurationError(f"{path}[{i}]: {interval!r} is not an interval [min, max]")
        low, high = _number(interval[0], f"{path}[{i}]"), _number(interval[1], f"{path}[{i}]")
        if low > high:
            raise ConfigurationError(f"{path}[{i}]: min {low:g} is greater than max {high:g}")
        out.append((low, high))
    return tuple(out)


def _sampler(kind: str, numbers: Mapping, names: Sequence[str], seed: int, path: str) -> ParameterValue:
    """A ParameterValue of ``kind`` from ``numbers`` keyed by this schema's ``names`` (checked: present, valid)."""
    for name in names:
        if name not in numbers:
            raise ConfigurationError(f"{path}: missing {name}; a {kind} sampler takes {', '.join(names)}")
    if kind == "multirange":
        return ParameterValue(kind, (_intervals(numbers[names[0]], f"{path}.{names[0]}"),), seed)
    args = tuple(_number(numbers[n], f"{path}.{n}") for n in names)
    if kind == "uniform" and args[0] > args[1]:
        raise ConfigurationError(f"{path}: {names[0]} {args[0]:g} is greater than {names[1]} {args[1]:g}")
    if kind == "gaussian" and args[1] < 0:
        raise ConfigurationError(f"{path}.{names[1]}: {args[1]:g} must be >= 0")
    return ParameterValue(kind, args, seed)


def _seed(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{path}: {value!r} is not an integer seed")
    return value


class _Seeds:
    """Seeds for ML-Agents-schema values that give none: the run's seed plus a running offset (ML-Agents'
    ``_set_sampler_seeds``, which counts constants too)."""

    def __init__(self, run_seed: int) -> None:
        self.run_seed, self.offset = run_seed, 0

    def next(self) -> int:
        seed = self.run_seed + self.offset
        self.offset += 1
        return seed


def parse_value(value: Any, path: str, seeds: _Seeds | None = None) -> ParameterValue:
    """One parameter's value in either schema (not a curriculum); ``path`` names it in errors."""
    seeds = seeds or _Seeds(0)
    if isinstance(value, ParameterValue):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seeds.next()  # ML-Agents gives constants a seed too: the samplers after them get the same seeds as there
        return ParameterValue("constant", (float(value),))
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{path}: {value!r} is not a number, a sampler or a curriculum")
    if "sampler" in value:  # the project's schema
        kind = value["sampler"]
        if kind not in OUR_SAMPLERS:
            raise ConfigurationError(f"{path}.sampler: {kind!r} is not one of {', '.join(OUR_SAMPLERS)}")
        _check_keys(value, ("sampler", "seed", *OUR_SAMPLERS[kind]), path, f"a {kind} sampler")
        seed = _seed(value.get("seed", 0), f"{path}.seed")
        return _sampler(kind, value, OUR_SAMPLERS[kind], seed, path)
    if "sampler_type" in value:  # ML-Agents' schema
        _check_keys(value, ("sampler_type", "sampler_parameters", "seed"), path, "a sampler")
        kind = str(value["sampler_type"]).replace("multirange_uniform", "multirangeuniform")
        if kind not in MLAGENTS_SAMPLERS:
            raise ConfigurationError(f"{path}.sampler_type: {value['sampler_type']!r} is not one of "
                                     f"{', '.join(MLAGENTS_SAMPLERS)}")
        names = MLAGENTS_SAMPLERS[kind]
        numbers = value.get("sampler_parameters")
        if not isinstance(numbers, Mapping):
            raise ConfigurationError(f"{path}: missing sampler_parameters (a mapping of {', '.join(names)})")
        _check_keys(numbers, (*names, "seed"), f"{path}.sampler_parameters", f"a {kind} sampler")
        if "seed" in numbers and "seed" in value:
            raise ConfigurationError(f"{path}: seed is given twice (in sampler_parameters and beside it); keep one")
        raw_seed = numbers.get("seed", value.get("seed", -1))
        seed = _seed(raw_seed, f"{path}.sampler_parameters.seed")
        seed = seeds.next() if seed == -1 else seed  # ML-Agents: -1 (its default) means the run's seed + offset
        if kind == "constant":
            return _sampler("constant", numbers, names, seed, f"{path}.sampler_parameters")
        return _sampler(kind.replace("multirangeuniform", "multirange"), numbers, names, seed,
                        f"{path}.sampler_parameters")
    raise ConfigurationError(f"{path}: a mapping needs 'sampler' (uniform, gaussian, multirange), 'sampler_type' "
                             f"({', '.join(MLAGENTS_SAMPLERS)}) or 'curriculum'; got keys {', '.join(map(str, value))}")


def _criteria(value: Any, path: str, last: bool) -> CompletionCriteria | None:
    if value is None:
        if not last:
            raise ConfigurationError(f"{path}: missing; every lesson but the last needs completion_criteria "
                                     f"({', '.join(CRITERIA_KEYS)})")
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{path}: {value!r} is not a mapping of {', '.join(CRITERIA_KEYS)}")
    _check_keys(value, CRITERIA_KEYS, path, "completion_criteria")
    if last:
        # As ML-Agents (settings.py, EnvironmentParameterSettings._check_lesson_chain): warned about, then ignored.
        warnings.warn(f"{path}: the last lesson's completion_criteria are ignored", stacklevel=3)
        return None
    measure = value.get("measure", "reward")
    if measure not in MEASURES:
        raise ConfigurationError(f"{path}.measure: {measure!r} is not one of {', '.join(MEASURES)}")
    threshold = _number(value.get("threshold", 0.0), f"{path}.threshold")
    if measure == "progress" and not 0.0 <= threshold <= 1.0:
        raise ConfigurationError(f"{path}.threshold: {threshold:g} must be in [0, 1] for measure progress "
                                 "(the fraction of total_steps done)")
    length = value.get("min_lesson_length", 0)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ConfigurationError(f"{path}.min_lesson_length: {length!r} must be an integer >= 0 (episodes)")
    flags = {}
    for key in ("signal_smoothing", "require_reset"):
        flag = value.get(key, key == "signal_smoothing")
        if not isinstance(flag, bool):
            raise ConfigurationError(f"{path}.{key}: {flag!r} must be true or false")
        flags[key] = flag
    behavior = value.get("behavior")
    if behavior is not None and not isinstance(behavior, str):
        raise ConfigurationError(f"{path}.behavior: {behavior!r} is not a behavior name")
    return CompletionCriteria(measure, behavior, threshold, length, **flags)


def _curriculum(value: Mapping, path: str, seeds: _Seeds) -> list[Lesson]:
    _check_keys(value, ("curriculum",), path, "a parameter with lessons")
    lessons = value["curriculum"]
    path = f"{path}.curriculum"
    if not isinstance(lessons, Sequence) or isinstance(lessons, str) or not lessons:
        raise ConfigurationError(f"{path}: must be a non-empty list of lessons ({{name, value, completion_criteria}})")
    out = []
    for i, lesson in enumerate(lessons):
        at = f"{path}[{i}]"
        if not isinstance(lesson, Mapping):
            raise ConfigurationError(f"{at}: {lesson!r} is not a lesson ({{name, value, completion_criteria}})")
        _check_keys(lesson, ("name", "value", "completion_criteria"), at, "a lesson")
        for key in ("name", "value"):
            if key not in lesson:
                raise ConfigurationError(f"{at}: missing {key}; a lesson takes name, value, completion_criteria")
        out.append(Lesson(str(lesson["name"]), parse_value(lesson["value"], f"{at}.value", seeds),
                          _criteria(lesson.get("completion_criteria"), f"{at}.completion_criteria",
                                    last=i == len(lessons) - 1)))
    return out


def parse_parameters(parameters: Mapping[str, Any] | None, run_seed: int = 0) -> ParsedParameters:
    """Read ``parameters:`` in either schema (see the module's docstring); bad input raises ``ConfigurationError``
    naming the key path. ``run_seed`` seeds ML-Agents-schema samplers that give no seed."""
    if parameters is None:
        return ParsedParameters({}, {})
    if not isinstance(parameters, Mapping):
        raise ConfigurationError(f"parameters: {parameters!r} is not a mapping of parameter names to values")
    seeds = _Seeds(run_seed)
    values, curricula = {}, {}
    for key, value in parameters.items():
        path = f"parameters.{key}"
        if isinstance(value, Mapping) and "curriculum" in value:
            curricula[key] = _curriculum(value, path, seeds)
            values[key] = curricula[key][0].value
        else:
            values[key] = parse_value(value, path, seeds)
    return ParsedParameters(values, curricula)


def has_curriculum(parameters: Any) -> bool:
    """Whether ``parameters:`` (unchecked) gives any parameter a ``curriculum``."""
    return isinstance(parameters, Mapping) and any(
        isinstance(v, Mapping) and "curriculum" in v for v in parameters.values())


# ---------------------------------------------------------------------- curriculum
class Curriculum:
    """The lessons of each curriculum parameter, and when each moves on (ML-Agents' ``EnvironmentParameterManager``).

    As ml-agents/mlagents/trainers/environment_parameter_manager.py and trainer_controller.py do it:

    - the returns of finished episodes go into one buffer of the most recent ones, as long as the largest
      ``min_lesson_length`` of any lesson (at least 1: the trainer's ``reward_buffer``, a deque of
      ``get_minimum_reward_buffer_size``);
    - at each check, each parameter whose lesson has criteria and is not the last is checked with
      ``CompletionCriteria.need_increment`` against the buffer as it was before the check; its smoothed measure
      (starting at 0, kept across lessons) is updated;
    - if any lesson changed, the buffer is emptied (``trainer.reward_buffer.clear()``): ``min_lesson_length``
      counts the episodes since the last change of any lesson.

    ML-Agents checks after every env step; ``update`` is called once per training batch, so the smoothing is
    applied once per batch.

    Args:
        lessons: each curriculum parameter's lessons, in order.
    """

    def __init__(self, lessons: Mapping[str, Sequence[Lesson]]) -> None:
        self.lessons = {key: list(value) for key, value in lessons.items()}
        self.lesson_numbers = {key: 0 for key in self.lessons}
        self.smoothed = {key: 0.0 for key in self.lessons}
        lengths = [lesson.completion_criteria.min_lesson_length for value in self.lessons.values() for lesson in value
                   if lesson.completion_criteria is not None]
        self.reward_buffer: deque[float] = deque(maxlen=max([1, *lengths]))
        self.episodes_in_lesson = 0  # episodes since the last lesson change (not capped like the buffer)
        self.reset_required = False  # whether the last update changed a lesson with require_reset

    def check_behavior(self, behavior_name: str) -> None:
        """Refuse criteria that track another behavior than the env's: their lessons would never end."""
        for key, lessons in self.lessons.items():
            for i, lesson in enumerate(lessons):
                criteria = lesson.completion_criteria
                if criteria is not None and criteria.behavior not in (None, behavior_name):
                    raise ConfigurationError(
                        f"parameters.{key}.curriculum[{i}].completion_criteria.behavior: {criteria.behavior!r} is not "
                        f"the behavior this env trains ({behavior_name!r}); use {behavior_name!r} or leave it out")

    def current_values(self) -> dict[str, ParameterValue]:
        """Each curriculum parameter's value in its current lesson."""
        return {key: self.lessons[key][n].value for key, n in self.lesson_numbers.items()}

    def update(self, episode_returns: Sequence[float], progress: float) -> dict[str, ParameterValue]:
        """Take the returns of the episodes finished since the last call and the fraction of training done;
        move on the lessons that are complete; return the new values of the parameters whose lesson changed."""
        self.reward_buffer.extendleft(float(r) for r in episode_returns)
        self.episodes_in_lesson += len(episode_returns)
        buffer = list(self.reward_buffer)
        changed: dict[str, ParameterValue] = {}
        self.reset_required = False
        for key, lessons in self.lessons.items():
            number = self.lesson_numbers[key]
            criteria = lessons[number].completion_criteria
            if criteria is None or number + 1 >= len(lessons):
                continue
            done, self.smoothed[key] = criteria.need_increment(progress, buffer, self.smoothed[key])
            if done:
                self.lesson_numbers[key] = number + 1
                changed[key] = lessons[number + 1].value
                self.reset_required |= criteria.require_reset
        if changed:
            self.reward_buffer.clear()
            self.episodes_in_lesson = 0
        return changed

    def describe(self, key: str) -> str:
        """``lesson 1 'Harder' (value 2)`` for parameter ``key``."""
        number = self.lesson_numbers[key]
        lesson = self.lessons[key][number]
        return f"lesson {number} {lesson.name!r} (value {lesson.value})"

    def state_dict(self) -> dict[str, Any]:
        """Everything the next lesson changes depend on (ML-Agents keeps only the lesson numbers on resume)."""
        return {"lesson_numbers": dict(self.lesson_numbers), "smoothed": dict(self.smoothed),
                "reward_buffer": list(self.reward_buffer), "episodes_in_lesson": self.episodes_in_lesson}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state_dict()``; parameters the state does not know stay at their first lesson."""
        for key, number in state["lesson_numbers"].items():
            if key not in self.lessons:
                warnings.warn(f"the checkpoint's curriculum parameter {key!r} is not in parameters: ignored",
                              stacklevel=2)
                continue
            if not 0 <= number < len(self.lessons[key]):
                raise ConfigurationError(f"parameters.{key}.curriculum: the checkpoint is at lesson {number}, but "
                                         f"the curriculum has {len(self.lessons[key])} lesson(s)")
            self.lesson_numbers[key] = number
            self.smoothed[key] = float(state["smoothed"].get(key, 0.0))
        self.reward_buffer.clear()
        self.reward_buffer.extend(state["reward_buffer"])
        self.episodes_in_lesson = int(state["episodes_in_lesson"])


# ---------------------------------------------------------------------- training
def find_unity_env(env: Any) -> Any:
    """The ``UnityVectorEnv`` under vector-env wrappers (``RecordEpisodeStatistics``, ``PerSubEnv``), or ``None``."""
    from rl_lightning.unity.vector_env import UnityVectorEnv

    while env is not None and not isinstance(env, UnityVectorEnv):
        env = getattr(env, "env", None)
    return env


class CurriculumCallback(L.Callback):
    """Moves a Unity env's curriculum on during training, logs its lessons, and keeps them in checkpoints.

    ``RLModule.configure_callbacks`` adds it when ``env_kwargs.parameters`` has a curriculum. After each training
    batch it gives the env (``UnityVectorEnv.advance_curriculum``) the returns of the episodes finished since the
    last batch (of all DDP ranks) and ``progress = env_steps / total_steps``; the new values reach Unity with the
    next step (ML-Agents' trainer_controller.py ``reset_env_if_ready`` sends them with ``set_env_parameters``, or
    resets the env when a finished lesson has ``require_reset``). Each curriculum parameter's lesson number is
    logged as ``curriculum/<parameter>`` against env steps (ML-Agents: ``Environment/Lesson Number/<parameter>``).
    Evaluations during ``fit`` play the lessons training has reached. The lessons, smoothed measures and recent
    returns are saved in checkpoints; a resumed run sends the saved
    lessons' values before its first step, and restarts the agents so every episode plays them.
    """

    def __init__(self) -> None:
        self._returns: list[float] = []
        self._state: dict[str, Any] | None = None  # the last known (or the checkpoint's) curriculum state

    def _listen(self, returns: np.ndarray) -> None:
        self._returns.extend(float(r) for r in returns)

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self._listen not in pl_module.episode_listeners:
            pl_module.episode_listeners.append(self._listen)

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if self._listen in pl_module.episode_listeners:
            pl_module.episode_listeners.remove(self._listen)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        env = find_unity_env(pl_module.envs)
        if env is not None and env.curriculum is not None and self._state is not None:
            env.load_curriculum_state(self._state)  # a resumed run: the saved lessons' values, before any step
        self._returns.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        env = find_unity_env(pl_module.envs)
        if env is None or env.curriculum is None:
            return
        returns, self._returns = self._returns, []
        if trainer.world_size > 1:  # one curriculum on every rank: each moves on with the episodes of all
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, returns)
            returns = [r for rank in gathered for r in rank]
        env.advance_curriculum(returns, pl_module.env_steps / pl_module.hparams.total_steps)
        self._state = env.curriculum.state_dict()
        for key, number in env.curriculum.lesson_numbers.items():
            pl_module.log(f"curriculum/{key}", float(number), batch_size=1)
        # Lightning takes a logged "step" as the x-axis (as RLModule.log_training does): environment steps.
        pl_module.log("step", float(pl_module.env_steps), batch_size=1)

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # The evaluation env plays the lessons training has reached (its episodes start with the evaluation's reset).
        env = find_unity_env(pl_module.eval_envs)
        if env is not None and env.curriculum is not None and self._state is not None:
            env.load_curriculum_state(self._state, restart=False)

    def state_dict(self) -> dict[str, Any]:
        # Plain numbers, lists and dicts: the checkpoint still loads with weights_only=True.
        return {"curriculum": self._state} if self._state is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._state = state_dict.get("curriculum")
