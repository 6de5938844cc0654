"""Build Gymnasium vector environments from an id or a user's own env class.

Every vector env the library builds from single envs uses Gymnasium's ``SAME_STEP`` autoreset:
a sub-env that ends an episode is reset inside the same ``step`` call, the
returned observation is the first one of the next episode and the last one of
the finished episode is kept in ``info["final_obs"]`` (mask ``info["_final_obs"]``).
The collectors bootstrap truncated episodes from that final observation
(``rl_lightning.envs.steps`` reads it). A vector env that brings its own sub-envs (Unity's, or one a user's
function returns, such as ``gym.make_vec``'s) may use ``NEXT_STEP`` autoreset instead, read the same way through
``rl_lightning.envs.autoreset``.
Episode returns and lengths come from Gymnasium's vector
``RecordEpisodeStatistics`` (``info["episode"]``, mask ``info["_episode"]``).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from rl_lightning.errors import ConfigurationError, RLLightningError
from rl_lightning.envs.autoreset import autoreset_mode, read_as_same_step
from rl_lightning.envs.checks import (CheckedAsyncVectorEnv, CheckedSyncVectorEnv, check_custom_env, check_env_kwargs,
                                      env_label)
from rl_lightning.envs.transforms import wrap_sub_envs

EnvSource = Union[str, Callable[..., Union[gym.Env, gym.vector.VectorEnv]]]
"""A registered Gymnasium id (``"CartPole-v1"``), an import path to an env
class or factory (``"my_pkg.envs:MyEnv"``), or the class/factory itself (a
function, lambda or closure; it may return a vector env)."""

WrapperSpec = Union[str, dict[str, Any], Callable[[gym.Env], gym.Env]]
"""An import path of a wrapper applied as ``Wrapper(env)``, a dict
``{"class_path": ..., "init_args": {...}}`` applied as ``Wrapper(env, **init_args)``,
or a callable taking and returning an env."""


def _import_object(path: str) -> Any:
    """Import ``"pkg.module:Name"`` or ``"pkg.module.Name"``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{path!r} is not an import path like 'package.module:Name'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def import_path_of(obj: Any) -> str | None:
    """``"module:QualName"`` of an importable class or function, else ``None`` (lambdas, local objects)."""
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(obj, type) and not callable(obj) or not module or not name or "<" in name:
        return None
    try:
        return f"{module}:{name}" if _import_object(f"{module}:{name}") is obj else None
    except (ImportError, AttributeError):
        return None


def stored_env_setting(env: EnvSource) -> str | Any:
    """What the ``env`` setting holds in hyperparameters, configs and checkpoints: an id or import path as given,
    a class's or function's import path, else (a lambda, a closure, a ``functools.partial``) a label naming the
    function, ``"<function module:qualname>"``, which cannot be built from (``resolve_env`` says so)."""
    if isinstance(env, str) or not callable(env):
        return env
    path = import_path_of(env)
    if path is not None:
        return path
    module = getattr(env, "__module__", None) or type(env).__module__
    name = getattr(env, "__qualname__", None) or type(env).__qualname__
    return f"<function {module}:{name}>"


def is_function_label(env: Any) -> bool:
    """Whether ``env`` is the label ``stored_env_setting`` keeps for a function that cannot be imported."""
    return isinstance(env, str) and env.startswith("<function ") and env.endswith(">")


REGISTERING_PACKAGES = {"ALE": ("ale_py", "ale-py")}
"""Env id namespaces (``ALE/Pong-v5``) and the module (and pip package) that registers their ids when imported:
Gymnasium 1.x loads no plugins itself (its ``register_envs`` is a no-op that only shows the import is used,
``gymnasium/envs/registration.py``)."""


def missing_package(err: BaseException, what: str) -> ConfigurationError | None:
    """A ``ConfigurationError`` saying what ``what`` (``"env='HalfCheetah-v5'"``) needs installed, when ``err`` (or an
    error it came from) is a package that is not installed: Gymnasium's ``DependencyNotInstalled`` (its message says
    what to pip install: MuJoCo, Box2D, opencv for ``AtariPreprocessing``) or an ``ImportError`` naming a module;
    else ``None``."""
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        if isinstance(err, gym.error.DependencyNotInstalled):
            return ConfigurationError(f"{what} needs a package that is not installed: {err}")
        if isinstance(err, ImportError):  # "No module named 'x'"; Lightning's "Requirement 'wandb>=0.12.10' not met"
            return ConfigurationError(f"{what} needs a package that is not installed: {err}")
        err = err.__cause__ or err.__context__
    return None


def _registered(env_id: str) -> Callable[..., gym.Env]:
    """``gym.make(env_id, **kwargs)`` as a factory that says which id it makes (it never makes a vector env)."""
    def make(**kwargs: Any) -> gym.Env:
        try:
            return gym.make(env_id, **kwargs)
        except (gym.error.DependencyNotInstalled, ImportError) as err:  # MuJoCo or Box2D envs without their package
            raise (missing_package(err, f"env={env_id!r}") or err) from None

    make.registered_id = env_id  # type: ignore[attr-defined]
    return make


def as_env_worker() -> None:
    """In an async sub-env's own process (forked from the trainer's): Ctrl-C ignored, SIGTERM ends it.

    A forked process inherits the trainer's Python signal handlers. Ctrl-C reaches every process of the terminal's
    group: the worker would raise KeyboardInterrupt inside its env and end (Gymnasium's ``_async_worker`` reports it
    as the env's error), so the run could not stop at a consistent point; the trainer stops it and closes the
    workers. A SIGTERM handler that only sets a flag would keep a worker stuck in a hung step alive when the envs
    are closed with ``terminate`` (``AsyncVectorEnv.close_extras``), and its ``join`` would wait forever.
    """
    if multiprocessing.parent_process() is None:  # the trainer's own process (not a worker): leave it as it is
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _is_import_path(name: str) -> bool:
    return ":" in name or ("." in name and "/" not in name and not name[-1].isdigit())


def _unity_vector_env(setting: str) -> type:
    """``UnityVectorEnv``, or a ``ConfigurationError`` saying what to install when ``mlagents_envs`` cannot load.

    Only Unity runs import ``mlagents_envs``: Gym runs work without it, and beside a protobuf that another package
    upgraded. mlagents-envs 0.28's generated ``*_pb2`` modules fail on protobuf >= 4 with a ``TypeError``
    ("Descriptors cannot be created directly"), hence both kinds of error here.
    """
    try:
        from rl_lightning.unity.vector_env import UnityVectorEnv
    except (ImportError, TypeError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigurationError(
            f"{setting}='unity' needs mlagents-envs 0.28.0 with protobuf 3.20.x, which failed to import "
            f"({type(err).__name__}: {first_line}): pip install mlagents-envs==0.28.0 protobuf==3.20.3, or use a "
            "virtual env of its own for Unity runs if another package needs a newer protobuf") from None
    return UnityVectorEnv


def resolve_env(env: EnvSource, setting: str = "env") -> Callable[..., gym.Env]:
    """Return a factory ``f(**env_kwargs) -> gym.Env`` for ``env``, failing fast on unknown ids.

    Checking happens without building the environment, so a typo is reported
    before anything is started.
    """
    if callable(env):
        return env
    if is_function_label(env):
        raise ConfigurationError(
            f"{setting}={env!r} was a function that cannot be imported (a lambda or closure), which a checkpoint or "
            f"config cannot hold; pass the function itself ({setting}=..., e.g. "
            f"Model.load_from_checkpoint(path, {setting}=my_function)) or an importable one ('package.module:name')")
    if env == "unity":
        return _unity_vector_env(setting)
    if not isinstance(env, str) or not env:
        raise ConfigurationError(f"{setting}={env!r}: expected a Gymnasium env id, an import path or an env class")
    if env.startswith("rl_lightning/"):
        import rl_lightning.games  # noqa: F401 (registers the stand-in games)
    namespace = env.partition("/")[0] if "/" in env else None
    if env not in gym.registry and namespace in REGISTERING_PACKAGES:
        module, package = REGISTERING_PACKAGES[namespace]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigurationError(f"{setting}={env!r}: the {namespace}/ envs come with the package {package}, "
                                     f"which failed to import ({err}): pip install {package}") from None
    if env in gym.registry:
        return _registered(env)
    module_name, sep, env_id = env.partition(":")
    if sep and "-v" in env_id:
        # "package.module:EnvName-v0": the module registers the id on import.
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigurationError(f"{setting}={env!r}: module {module_name!r} could not be imported ({err})") from None
        return resolve_env(env_id, setting)
    if _is_import_path(env):
        try:
            obj = _import_object(env)
        except (ImportError, AttributeError) as err:
            raise ConfigurationError(f"{setting}={env!r} could not be imported ({err}); "
                                     "give a registered env id or 'package.module:EnvClass'") from None
        if not callable(obj):
            raise ConfigurationError(f"{setting}={env!r} is not callable; it must name an env class or factory")
        if isinstance(obj, type) and not issubclass(obj, (gym.Env, gym.vector.VectorEnv)):
            raise ConfigurationError(f"{setting}={env!r} is the class {obj.__module__}.{obj.__qualname__}, not a "
                                     f"{_ENV_KINDS}")
        return obj
    close = difflib.get_close_matches(env, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else (
        "see `gymnasium.pprint_registry()` for the registered ids; ")
    raise ConfigurationError(f"{setting}={env!r} is not a registered Gymnasium env id; {hint}an env suite registers "
                             "its ids when imported: name its package in env_packages (e.g. env_packages: "
                             "[minigrid]) or write the id as 'package:EnvId'")


def is_custom_env(env: EnvSource) -> bool:
    """Whether ``env`` is a user's own env class or factory: not a registered id and not a vector env (Unity)."""
    factory = resolve_env(env)  # also imports the module that registers a "package.module:EnvName-v0"
    if isinstance(factory, type) and issubclass(factory, gym.vector.VectorEnv):
        return False
    return not (isinstance(env, str) and env.partition(":")[2 if ":" in env else 0] in gym.registry)


def check_env_source(env: EnvSource, env_kwargs: dict[str, Any] | None = None) -> None:
    """Check a user's own env class or factory once with Gymnasium's env checker (``checks.check_custom_env``).

    Registered ids (Gymnasium's and the ones a module registers) and vector envs of their own (Unity, or one a
    user's function returns) are not checked. The instance checked is built from ``env_kwargs`` apart from any training env.
    """
    if is_custom_env(env):
        factory = resolve_env(env)
        if may_return_vector_env(factory):
            instance = built_env(factory(**dict(env_kwargs or {})), env)
            if isinstance(instance, gym.vector.VectorEnv):  # Gymnasium's checker takes single envs
                instance.close()
                return
            check_custom_env(env, lambda: instance)
            return
        check_custom_env(env, lambda: built_env(factory(**dict(env_kwargs or {})), env))


_ENV_KINDS = ("Gymnasium env: give a registered env id, a gymnasium.Env (or VectorEnv) class, or a function that "
              "returns an env")


def built_env(obj: Any, env: EnvSource) -> Any:
    """``obj``, what ``env``'s class or function returned, when it is an env; else a ``ConfigurationError`` saying
    what it is (``env='os:getcwd'`` names a function that returns a str)."""
    if isinstance(obj, (gym.Env, gym.vector.VectorEnv)):
        return obj
    text = repr(obj)
    shown = text if len(text) <= 60 else text[:57] + "..."
    kind = type(obj).__qualname__ if type(obj).__module__ == "builtins" else (
        f"{type(obj).__module__}.{type(obj).__qualname__}")
    raise ConfigurationError(f"env={env_label(env)!r} returned a {kind} ({shown}), not a {_ENV_KINDS}")


def _apply_wrapper(env: gym.Env, spec: WrapperSpec) -> gym.Env:
    """``env`` wrapped as ``spec`` says; a wrapper that fails to wrap it is reported naming the entry (a package it
    needs and that is not installed: what to install)."""
    name = spec if isinstance(spec, str) else spec.get("class_path") if isinstance(spec, dict) else (
        getattr(spec, "__qualname__", None) or repr(spec))
    if isinstance(spec, dict) and "class_path" not in spec:
        raise ConfigurationError(f"wrappers entry {spec!r} needs a 'class_path'")
    try:
        if isinstance(spec, str):
            return _import_object(spec)(env)
        if isinstance(spec, dict):
            return _import_object(spec["class_path"])(env, **spec.get("init_args", {}))
        return spec(env)
    except Exception as err:  # noqa: BLE001 - the wrapper's own failure, reported with its name
        if isinstance(err, RLLightningError):  # already names what went wrong
            raise
        missing = missing_package(err, f"wrappers entry {name!r}")
        if missing is not None:
            raise missing from err
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigurationError(f"wrappers entry {name!r} failed to wrap the env: {type(err).__name__}: {first}"
                                 ) from err


def _check_wrappers(wrappers: Sequence[WrapperSpec]) -> None:
    for spec in wrappers:
        path = spec if isinstance(spec, str) else spec.get("class_path") if isinstance(spec, dict) else None
        if path is None:
            if not callable(spec):
                raise ConfigurationError(f"wrappers entry {spec!r} is neither an import path, a dict nor a callable")
            continue
        try:
            _import_object(path)
        except (ImportError, AttributeError) as err:
            raise ConfigurationError(f"wrappers entry {path!r} could not be imported ({err})") from None


def may_return_vector_env(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` is a user's function (not a class, not a registered id), which may return a vector env."""
    return not isinstance(factory, type) and getattr(factory, "registered_id", None) is None


def _names_parameter(factory: Callable[..., Any], name: str) -> bool:
    try:
        parameter = inspect.signature(factory).parameters.get(name)
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)


def _check_vector_settings(venv: gym.vector.VectorEnv, env: EnvSource, num_envs: int, vectorization: str,
                           exact_num_envs: bool, factory: Callable[..., Any]) -> None:
    """A vector env from a user's function brings its own sub-envs: ``num_envs`` and ``vectorization`` may only
    agree with it (``num_envs=1``, the default, leaves the count to it); closes it and raises otherwise."""
    problem = None
    if exact_num_envs and num_envs not in (1, venv.num_envs) and not _names_parameter(factory, "num_envs"):
        problem = (f"num_envs={num_envs} but it built {venv.num_envs} sub-envs; leave num_envs at 1 (the function "
                   f"decides), set it to {venv.num_envs}, or give the function a num_envs parameter to receive it")
    elif vectorization == "async" and not isinstance(venv.unwrapped, gym.vector.AsyncVectorEnv):
        problem = (f"vectorization='async' but it built a {type(venv.unwrapped).__name__}; a vector env steps its "
                   "sub-envs its own way: choose it in the function (gym.make_vec(..., vectorization_mode='async')) "
                   "and leave vectorization at 'sync'")
    if problem is not None:
        venv.close()
        raise ConfigurationError(f"env {env_label(env)} returns a vector env: {problem}")


def _own_vector_env(venv: gym.vector.VectorEnv, env: EnvSource, wrappers: Sequence[WrapperSpec],
                    seed: int | None) -> gym.vector.VectorEnv:
    """A vector env that brings its own sub-envs (Unity's, or one a user's function returned), made ready to train
    on: ``wrappers`` applied to each sub-env's data, action spaces seeded, episode statistics recorded, and read as
    a same-step autoreset (``rl_lightning.envs.autoreset``; an autoreset mode the collectors cannot read is
    refused). Closed if any of that fails."""
    try:
        autoreset_mode(venv, env_label(env))  # checked before anything else is built on it
        own_statistics = getattr(venv, "records_episode_statistics", False)  # Unity: per agent, not per slot
        inner: Any = venv
        while not own_statistics and inner is not None:  # a user's env may have its own RecordEpisodeStatistics
            own_statistics = isinstance(inner, gym.wrappers.vector.RecordEpisodeStatistics)
            inner = getattr(inner, "env", None)
        for spec in wrappers:  # observation/action wrappers, applied to each sub-env's data
            venv = wrap_sub_envs(venv, lambda e, spec=spec: _apply_wrapper(e, spec))
    except BaseException:
        venv.close()
        raise
    if seed is not None:  # random exploration draws from the action spaces
        venv.action_space.seed(seed)
        venv.single_action_space.seed(seed)
    if not own_statistics:
        venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    return read_as_same_step(venv, env_label(env))


WORKER_ID_PER_RANK = 100
"""Under DDP, rank ``r`` adds ``r * WORKER_ID_PER_RANK`` to a Unity env's ``worker_id``, for ports of its own."""


def make_vector_env(
    env: EnvSource,
    num_envs: int = 1,
    vectorization: Literal["sync", "async"] = "sync",
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[WrapperSpec] = (),
    rank: int = 0,
    exact_num_envs: bool = True,
    step_timeout: float | None = None,
    video_folder: str | os.PathLike | None = None,
) -> gym.vector.VectorEnv:
    """Build a seeded vector env of ``num_envs`` copies of ``env``.

    Args:
        env: a registered id, an import path to an env class/factory, or the class/factory; ``"unity"`` (or any
            ``VectorEnv`` class) is built once from ``env_kwargs`` and brings its own sub-envs.
        num_envs: number of sub-environments.
        vectorization: ``"sync"`` steps the copies in this process, ``"async"`` in subprocesses.
        seed: seeds the action spaces; pass the same seed to the first ``reset(seed=seed)``,
            which seeds sub-env ``i`` with ``seed + i``.
        env_kwargs: keyword arguments for ``gym.make`` or the env class.
        wrappers: applied to each sub-env in order, innermost first (for a vector env of its own, such as
            Unity's, only observation and action wrappers, applied to each sub-env's observations and actions).
        rank: the DDP rank building it: a vector env of its own that takes a ``worker_id`` (Unity: its ports are
            ``base_port + worker_id``) gets ``rank * WORKER_ID_PER_RANK`` added to it, so each rank has its own ports.
        exact_num_envs: whether a vector env a user's function returns must have ``num_envs`` sub-envs (unless
            ``num_envs`` is 1); ``False`` (evaluation envs) takes the count it has.
        step_timeout: seconds a step of the copies may take before the run ends with ``EnvStepTimeout``
            (``CheckedSyncVectorEnv``, ``CheckedAsyncVectorEnv``); ``None``: no limit. Not for a vector env of its own:
            Unity's has ``timeout_wait``, one of a user's must bound its own steps.
        video_folder: record every episode of every copy as an MP4 file in this folder (``EvaluationVideo``, a
            Gymnasium ``RecordVideo``, outermost, after ``wrappers``; the envs are made with ``render_mode="rgb_array"`` unless
            ``env_kwargs`` says otherwise; needs ``moviepy``: ``pip install -e ".[video]"``). Files are named
            ``copy<i>-episode-<k>.mp4``, ``k`` counting copy ``i``'s episodes from 0. Not for a vector env of its
            own (Unity).

    A user's function (not a class) is called once first: if it returns a vector env (``gym.make_vec(...)``, a
    ``VectorEnv`` of its own), that is the env, with ``num_envs`` passed to it if it has a ``num_envs`` parameter;
    a ``NEXT_STEP`` one is read through ``NextStepAutoreset``. Else what it returned is the first sub-env (async:
    closed, each copy is made in its process).
    """
    if num_envs < 1:
        raise ConfigurationError(f"num_envs={num_envs} must be >= 1")
    if vectorization not in ("sync", "async"):
        raise ConfigurationError(f"vectorization={vectorization!r} must be 'sync' or 'async'")
    factory = resolve_env(env)
    _check_wrappers(wrappers)
    check_env_kwargs(env, factory, env_kwargs)
    kwargs = dict(env_kwargs or {})
    if video_folder is not None:
        if isinstance(factory, type) and issubclass(factory, gym.vector.VectorEnv):
            raise ConfigurationError(f"video_folder: env={env_label(env)!r} is a vector env of its own, whose "
                                     "episodes cannot be recorded here (a Unity build records its own videos)")
        if importlib.util.find_spec("moviepy") is None:
            raise ConfigurationError("recording videos (video_folder) needs moviepy, which is not installed: pip "
                                     "install moviepy (or the project's extra: pip install -e \".[video]\")")
        kwargs.setdefault("render_mode", "rgb_array")
    if step_timeout is not None and isinstance(factory, type) and issubclass(factory, gym.vector.VectorEnv):
        own = "env_kwargs.timeout_wait" if "timeout_wait" in inspect.signature(factory).parameters else "its own limit"
        raise ConfigurationError(f"step_timeout={step_timeout} applies to envs built from single Gymnasium envs; "
                                 f"env={env_label(env)!r} is a vector env of its own: set {own} instead, and "
                                 "step_timeout to null")
    if isinstance(factory, type) and issubclass(factory, gym.vector.VectorEnv):
        # A vector env of its own (e.g. "unity": the agents are the sub-envs); num_envs and vectorization don't apply.
        parameters = inspect.signature(factory).parameters
        if seed is not None and "seed" in parameters:
            kwargs.setdefault("seed", seed)
        worker_id = parameters.get("worker_id")
        if rank > 0 and worker_id is not None:
            kwargs["worker_id"] = kwargs.get("worker_id", worker_id.default) + rank * WORKER_ID_PER_RANK
        return _own_vector_env(factory(**kwargs), env, wrappers, seed)
    first: gym.Env | None = None
    if may_return_vector_env(factory):
        # A user's function may return a vector env (gym.make_vec, its own VectorEnv): called once to see which.
        count = {"num_envs": num_envs} if _names_parameter(factory, "num_envs") else {}
        built = built_env(factory(**kwargs, **count), env)
        if isinstance(built, gym.vector.VectorEnv):
            if step_timeout is not None:
                built.close()
                raise ConfigurationError(f"step_timeout={step_timeout} applies to envs built from single Gymnasium "
                                         f"envs; env={env_label(env)!r} returned a vector env of its own, which must "
                                         "bound its own steps: set step_timeout to null")
            _check_vector_settings(built, env, num_envs, vectorization, exact_num_envs, factory)
            return _own_vector_env(built, env, wrappers, seed)
        if vectorization == "sync":
            first = built  # the first sub-env: each copy is still made once
        else:
            built.close()  # async copies are made in their own processes

    def make_one(index: int) -> gym.Env:
        nonlocal first
        if vectorization == "async":
            as_env_worker()
        e, first = (first, None) if first is not None else (built_env(factory(**kwargs), env), None)
        for spec in wrappers:
            e = _apply_wrapper(e, spec)
        if video_folder is not None:
            from rl_lightning.envs.video import EvaluationVideo

            e = EvaluationVideo(e, str(video_folder), index)
        return e

    fns = [functools.partial(make_one, i) for i in range(num_envs)]
    # Their reset and step name the env when an observation does not fit its space (rl_lightning.envs.checks).
    vector_class = CheckedSyncVectorEnv if vectorization == "sync" else CheckedAsyncVectorEnv
    venv = vector_class(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    venv.env_label = env_label(env)
    venv.step_timeout = step_timeout
    venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    venv.records_video = video_folder is not None  # evaluation drops the episodes it leaves unfinished
    if seed is not None:
        # Sub-env observations are seeded by the first `reset(seed=seed)`;
        # the action spaces (random exploration) are seeded here.
        venv.action_space.seed(seed)
        venv.single_action_space.seed(seed)
    return venv
