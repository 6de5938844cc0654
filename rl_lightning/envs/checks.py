"""Checks that name the env and the setting when an env or its ``env_kwargs`` do not fit together.

- ``check_env_kwargs``: every ``env_kwargs`` key must be a parameter of ``gym.make`` and the env's creator, or of
  the env class/factory; read from their signatures before anything is built.
- ``check_custom_env``: a user's own env class or factory is run once through Gymnasium's env checker
  (``gymnasium.utils.env_checker.check_env``) on an instance of its own, so that an observation of the wrong
  shape or dtype is reported with the env's name and its declared space before training.
- ``NamedObservationFaults``: the vector envs ``make_vector_env`` builds turn NumPy's "Output array is the wrong
  shape" (raised when the sub-envs' observations are stacked) into an error naming the env, the space and what the
  sub-env returned.
"""

from __future__ import annotations

import difflib
import inspect
import multiprocessing
import signal
import threading
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.async_vector_env import AsyncState

from rl_lightning.errors import ConfigurationError, EnvironmentFault, RLLightningError
from rl_lightning.setting_ranges import check_settings

SKIP_HINT = "set check_env: false (RLModule's check_env=False) to skip this check"


def env_label(env: Any) -> str:
    """How messages name ``env``: its id or import path as the user wrote it, else the class's import path."""
    if isinstance(env, str):
        return env
    module, name = getattr(env, "__module__", None), getattr(env, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(env)


# ---------------------------------------------------------------------- env_kwargs
def _make_parameters() -> set[str]:
    """Keyword arguments ``gym.make`` takes itself (not passed to the env's creator)."""
    return {name for name, p in inspect.signature(gym.make).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "id"}


def _accepted_keywords(creator: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``creator`` accepts; ``None`` when it takes ``**kwargs`` or has no readable signature."""
    try:
        parameters = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):  # builtins, some C extensions
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_env_kwargs(env: Any, factory: Callable[..., Any], env_kwargs: dict[str, Any] | None,
                     setting: str = "env_kwargs") -> None:
    """Refuse ``env_kwargs`` keys that the env cannot take, naming the key, the env and the keys it accepts.

    For a registered id the keys go to ``gym.make``, which keeps its own (``max_episode_steps``, ...) and passes the
    rest, over the spec's kwargs, to the entry point (gymnasium/envs/registration.py, ``make``): the accepted keys
    are both signatures' parameters. Creators with ``**kwargs`` accept anything and are not checked.

    Values are checked against the ranges the creator's annotations declare (``rl_lightning.setting_ranges``, as
    ``UnityVectorEnv``'s ``worker_id`` and ``timeout_wait``), so a bad one stops the model's construction.
    """
    if not env_kwargs:
        return
    check_settings(factory, env_kwargs, f"{setting}.")
    registered = isinstance(env, str) and env.split(":")[-1] in gym.registry
    if registered:
        spec = gym.spec(env.split(":")[-1])
        creator = spec.entry_point if callable(spec.entry_point) else None
        if creator is None:
            try:
                creator = gym.envs.registration.load_env_creator(spec.entry_point)
            except (ImportError, AttributeError, ValueError):
                return  # gym.make reports an entry point that does not import
        accepted = _accepted_keywords(creator)
        if accepted is None:
            return
        accepted |= _make_parameters()
        where = f"env={env!r} (gym.make, then {env_label(creator)})"
    else:
        accepted = _accepted_keywords(factory)
        if accepted is None:
            return
        where = f"env={env_label(env)!r}"
    for key in env_kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), sorted(accepted), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigurationError(
                f"{setting} key {key!r} is not accepted by {where}; {hint}"
                f"it accepts: {', '.join(sorted(accepted)) or 'no keyword arguments'}")


# ---------------------------------------------------------------------- observations against their space
def _kind(obs: Any) -> str:
    array = np.asarray(obs)
    return f"shape {array.shape} and dtype {array.dtype}" if isinstance(obs, (np.ndarray, np.generic)) else (
        f"a {type(obs).__name__} (as an array: shape {array.shape}, dtype {array.dtype})")


def observation_mismatch(obs: Any, space: gym.Space, key: str = "") -> str | None:
    """What about ``obs`` does not fit ``space`` the way the vector envs stack observations, or ``None``.

    A shape other than the space's fails NumPy's stacking; a dtype that NumPy cannot cast into the space's with
    ``same_kind`` casting (floats into integers, e.g. an image in [0, 1] into a uint8 space) fails the sync vector
    env and is silently truncated by the async one's shared memory. Values outside the bounds and a lower
    precision of the same kind (float64 into float32) pass, as they pass the vector envs.
    """
    where = f"[{key!r}]" if key else ""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict):
            return f"a {type(obs).__name__} where the Dict space wants a dict"
        if set(obs) != set(space.spaces):
            return f"a dict with keys {sorted(obs)} where the space has keys {sorted(space.spaces)}"
        for k, sub in space.spaces.items():
            found = observation_mismatch(obs[k], sub, f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(obs, tuple) or len(obs) != len(space.spaces):
            return f"{type(obs).__name__} of length {len(obs) if hasattr(obs, '__len__') else '?'} where the Tuple " \
                   f"space has {len(space.spaces)} entries"
        for i, (o, sub) in enumerate(zip(obs, space.spaces)):
            found = observation_mismatch(o, sub, f"{key}[{i}]")
            if found:
                return found
        return None
    if space.shape is None or space.dtype is None:
        return None  # Text, Graph, Sequence...: not stacked into arrays
    array = np.asarray(obs)
    if array.shape != space.shape:
        return f"{where}{_kind(obs)} where the space wants shape {space.shape}".lstrip()
    if not np.can_cast(array.dtype, space.dtype, casting="same_kind"):
        return f"{where}{_kind(obs)} where the space wants dtype {space.dtype}".lstrip()
    return None


def _named_mismatch(label: str, space: gym.Space, problem: str, method: str) -> str:
    return f"env={label!r}: its {method} returned an observation of {problem} (observation space: {space})"


# ---------------------------------------------------------------------- Gymnasium's env checker
_NOISE = ("This is probably too", "alternative render modes", "different from the unwrapped version")
"""``check_env`` warnings that hold for most envs and say nothing about their observations or rewards."""


def _first_mismatch(env: gym.Env) -> tuple[str, str] | None:
    """``(method, problem)`` for the first observation of ``env`` that does not fit its space: reset, then a step."""
    space = env.observation_space
    obs, info = env.reset(seed=0)
    problem = observation_mismatch(obs, space)
    if problem:
        return "reset()", problem
    mask = info.get("action_mask") if isinstance(info, dict) else None
    try:
        action = env.action_space.sample(mask=np.asarray(mask, np.int8)) if (
            mask is not None and isinstance(env.action_space, gym.spaces.Discrete)) else env.action_space.sample()
        obs = env.step(action)[0]
    except Exception:  # noqa: BLE001 - an env refusing a random action says nothing about its observations
        return None
    problem = observation_mismatch(obs, space)
    return ("step()", problem) if problem else None


def check_custom_env(env: Any, make: Callable[[], gym.Env]) -> None:
    """Run Gymnasium's env checker on a new instance of a user's env (``make()``); close it afterwards.

    ``check_env`` (gymnasium/utils/env_checker.py) resets the env with seeds 123 and 456, steps it with
    ``action_space.sample()`` and asserts the observations are in the space; most else it only warns about. Here:

    - an observation of the wrong shape or dtype (see ``observation_mismatch``) raises ``ConfigurationError``
      naming the env, the method, what it returned and the space;
    - any other failure of the checker, including the env's own exception on a random action (an env that
      asserts action masks) becomes one warning naming the env, as do its warnings about returned values;
      training goes on.

    The instance is the env's own, so the training envs' seeds and state are untouched.
    """
    from gymnasium.utils.env_checker import check_env

    label = env_label(env)
    instance = make()
    try:
        failure: Exception | None = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                check_env(instance, skip_render_check=True, skip_close_check=True)
            except Exception as err:  # noqa: BLE001 - every failure is reported below, with the env's name
                failure = err
            try:
                mismatch = _first_mismatch(instance)
            except Exception:  # noqa: BLE001 - a reset that fails is the training envs' to report
                mismatch = None
        if mismatch is not None:
            method, problem = mismatch
            raise ConfigurationError(f"{_named_mismatch(label, instance.observation_space, problem, method)}; make "
                                     "the env return observations of its declared space, or declare the space it "
                                     f"returns (found by Gymnasium's env checker; {SKIP_HINT})") from failure
        notes = []
        for w in caught:
            text = str(w.message)
            if not any(n in text for n in _NOISE) and text not in notes:
                notes.append(text)
        if failure is not None:
            notes.insert(0, f"{type(failure).__name__}: {failure}")
        if notes:
            warnings.warn(f"env={label!r}: Gymnasium's env checker (gymnasium.utils.env_checker.check_env) reports: "
                          f"{'; '.join(notes)} ({SKIP_HINT})", UserWarning, stacklevel=2)
    finally:
        instance.close()


# ---------------------------------------------------------------------- the vector envs' stacking and sub-env errors
class SubEnvTraceback(Exception):
    """The traceback of an exception raised in an async sub-env's process, as its worker sent it (text)."""


class NamedObservationFaults:
    """For a Gymnasium vector env: an observation that cannot be stacked, or an exception raised inside a sub-env,
    raises an error naming the env.

    NumPy's own error ("Output array is the wrong shape", "Cannot cast array data ...") names neither the env nor
    the space: at ``reset`` it becomes a ``ConfigurationError`` (the env cannot be run as declared), at ``step`` an
    ``EnvironmentFault`` (it went wrong mid-run). An exception raised by a sub-env's own ``reset`` or ``step`` (a
    user's env dividing by zero) becomes an ``EnvironmentFault`` naming the env, the sub-env and the step of these
    envs, caused by the original (its traceback, for async sub-envs the one their process sent, is what
    ``--traceback`` shows). Other errors pass unchanged. Mixed into ``SyncVectorEnv``/``AsyncVectorEnv`` rather
    than a wrapper, so that checkpoints' saved vector-env chains keep their shape.
    """

    env_label: str = "?"
    vector_steps: int = 0
    """``step`` calls so far (each steps every sub-env once)."""
    worker_error: tuple[int, str] | None = None
    """Async envs: the sub-env index and traceback text of the last exception a worker sent (``_raise_if_errors``)."""

    def reset(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().reset(*args, **kwargs)  # type: ignore[misc]
        except Exception as err:  # noqa: BLE001 - named below, or re-raised unchanged
            fault = self._fault(err, "reset()", ConfigurationError)
            if fault is None:
                raise
            raise fault[0] from fault[1]

    def step(self, actions: Any) -> Any:
        self.vector_steps += 1
        try:
            return super().step(actions)  # type: ignore[misc]
        except Exception as err:  # noqa: BLE001 - named below, or re-raised unchanged
            fault = self._fault(err, "step()", EnvironmentFault)
            if fault is None:
                raise
            raise fault[0] from fault[1]

    def _fault(self, err: Exception, method: str, kind: type[Exception]) -> tuple[Exception, BaseException] | None:
        """The error to raise for ``err`` and its cause; ``None``: re-raise ``err`` unchanged."""
        if isinstance(err, (ValueError, TypeError)):
            named = self._named(err, method, kind)
            if named is not err:
                return named, err
        worker, self.worker_error = self.worker_error, None
        if isinstance(err, (RLLightningError, _StepTimeout, multiprocessing.TimeoutError)):
            return None
        if worker is not None:
            index, cause = worker[0], SubEnvTraceback(worker[1])
        else:
            where = self._sub_env_of(err)
            if where is None:  # raised outside the sub-envs' code: not the env's fault
                return None
            (index, method), cause = where, err
        first = (str(err).strip().splitlines() or [""])[0]
        when = f"at step {self.vector_steps} of these envs" if self.vector_steps else "before their first step"
        return EnvironmentFault(f"env={self.env_label!r}: sub-env {index} raised {type(err).__name__}: {first} "
                                f"(in its {method}, {when}); fix the env (--traceback shows where it raised)"), cause

    def _sub_env_of(self, err: Exception) -> tuple[int, str] | None:
        """``(index, method)`` of the sync sub-env whose code ``err`` passed through: the outermost frame of the
        traceback whose ``self`` is a sub-env or one of its wrappers."""
        owners: dict[int, int] = {}
        for i, env in enumerate(getattr(self, "envs", None) or ()):  # SyncVectorEnv's sub-envs
            while env is not None:
                owners[id(env)] = i
                env = env.env if isinstance(env, gym.Wrapper) else None
        tb = err.__traceback__
        while tb is not None:
            index = owners.get(id(tb.tb_frame.f_locals.get("self")))
            if index is not None:
                return index, f"{tb.tb_frame.f_code.co_name}()"
            tb = tb.tb_next
        return None

    def _named(self, err: Exception, method: str, kind: type[Exception]) -> Exception:
        space = self.single_observation_space  # type: ignore[attr-defined]
        found = None
        for i, obs in enumerate(getattr(self, "_env_obs", ()) or ()):  # SyncVectorEnv keeps each sub-env's last one
            problem = observation_mismatch(obs, space) if obs is not None else None
            if problem:
                found = f"{_named_mismatch(self.env_label, space, problem, method)} in sub-env {i}"
                break
        if found is None:
            if not _looks_like_stacking(err):
                return err
            # Async sub-envs write into shared memory in their own processes: only NumPy's message comes back.
            found = f"env={self.env_label!r}: its {method} returned an observation that does not fit its " \
                    f"observation space {space} ({err})"
        return kind(f"{found}; make the env return observations of its declared space, or declare the space it "
                    "returns")


def _looks_like_stacking(err: Exception) -> bool:
    text = str(err)
    return any(s in text for s in ("wrong shape", "could not broadcast", "Cannot cast array data"))


class EnvStepTimeout(EnvironmentFault):
    """A step of the envs took longer than the ``step_timeout`` setting."""


class _StepTimeout(Exception):
    """Raised by the alarm inside a sync step that overran; turned into ``EnvStepTimeout`` outside it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _StepTimeout


class CheckedSyncVectorEnv(NamedObservationFaults, gym.vector.SyncVectorEnv):
    """``SyncVectorEnv`` whose stacking errors name the env (``NamedObservationFaults``), and whose steps are bounded
    by ``step_timeout`` seconds when that is set.

    The sub-envs step in this process, so the bound is a timer signal (``SIGALRM``, ``signal.setitimer``): Python
    runs its handler in the main thread as soon as the step's code returns to the interpreter, which a pure-Python
    loop or a ``time.sleep`` does at once; C code that never returns to Python is only bounded in
    ``vectorization: async``. The envs are left mid-step: the run ends with ``EnvStepTimeout``.
    """

    step_timeout: float | None = None

    def step(self, actions: Any) -> Any:
        if self.step_timeout is None:
            return super().step(actions)
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError(f"step_timeout={self.step_timeout} bounds sync env steps with a timer signal, "
                                     "which only the main thread receives; use vectorization: async here")
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self.step_timeout)
        try:
            return super().step(actions)
        except _StepTimeout:
            raise EnvStepTimeout(f"env={self.env_label!r}: a step did not return within step_timeout="
                                 f"{self.step_timeout:g} s (sync envs); the env hangs or is slower than that: fix "
                                 "the env, or raise step_timeout (null: no limit)") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class CheckedAsyncVectorEnv(NamedObservationFaults, gym.vector.AsyncVectorEnv):
    """``AsyncVectorEnv`` whose stacking errors name the env (``NamedObservationFaults``), and whose steps are bounded
    by ``step_timeout`` seconds when that is set (``AsyncVectorEnv.step_wait(timeout=...)``); the sub-env processes
    that did not answer are named, and killed when the envs close."""

    step_timeout: float | None = None

    def step(self, actions: Any) -> Any:
        if self.step_timeout is None:
            return super().step(actions)
        self.vector_steps += 1
        self.step_async(actions)
        try:
            return self.step_wait(timeout=self.step_timeout)
        except multiprocessing.TimeoutError:
            self._timed_out = True
            silent = [i for i, pipe in enumerate(self.parent_pipes) if not pipe.poll()]
            raise EnvStepTimeout(f"env={self.env_label!r}: sub-env(s) {', '.join(map(str, silent)) or '?'} did not "
                                 f"return from step() within step_timeout={self.step_timeout:g} s (async envs); the env "
                                 "hangs or is slower than that: fix the env, or raise step_timeout (null: no limit)"
                                 ) from None
        except Exception as err:  # noqa: BLE001 - as NamedObservationFaults.step names them
            fault = self._fault(err, "step()", EnvironmentFault)
            if fault is None:
                raise
            raise fault[0] from fault[1]

    def _raise_if_errors(self, successes: Any) -> None:
        """Gymnasium's ``AsyncVectorEnv._raise_if_errors`` (``gymnasium/vector/async_vector_env.py``), without its
        log: it prints each failed worker's traceback to stderr and re-raises the last exception bare. Here the last
        one's sub-env and traceback are kept in ``worker_error``, for the error ``NamedObservationFaults`` raises."""
        if all(successes):
            return
        errors = [self.error_queue.get() for _ in range(self.num_envs - sum(successes))]
        for index, *_ in errors:  # as Gymnasium's: a worker that failed has ended; its pipe is closed
            self.parent_pipes[index].close()
            self.parent_pipes[index] = None
        self._state = AsyncState.DEFAULT
        index, exctype, value, trace = errors[-1]
        self.worker_error = (index, trace)
        raise exctype(value)

    def close(self, **kwargs: Any) -> None:
        if getattr(self, "_timed_out", False):
            # A sub-env still inside its step would never answer "close", and Gymnasium's terminate (SIGTERM) then
            # joins a process that may handle SIGTERM itself: killed, so that close returns.
            for process in self.processes:
                if process.is_alive():
                    process.kill()
            kwargs["terminate"] = True
        super().close(**kwargs)
