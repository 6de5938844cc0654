"""Checks that keep non-finite numbers out of the weights and out of checkpoints, and runs within their budget.

Each check is one vectorised test per collected batch (``np.isfinite(array).all()`` on the arrays the
collector stored) or per gradient step (one fused test of the loss and the gradient norm), so it costs a
small fraction of a run; only when it fails does the slower search for the first bad element run, to
name the env, the sub-env, the env step and the field in the message. No check draws random numbers:
resumed runs stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl_lightning.errors import ConfigurationError, EnvironmentFault, RLLightningError
from rl_lightning.setting_ranges import LearningRate, settings_of_type


class NonFiniteLoss(RLLightningError, FloatingPointError):
    """A loss or gradient became NaN or infinite; the optimizer step was not taken, so the weights stay finite."""

    exit_code = 1


class NonFiniteCheckpoint(RLLightningError, ValueError):
    """A checkpoint was about to be written with NaN or infinite weights; the previous file is left as it was."""

    exit_code = 1


def env_label(hparams: Mapping[str, Any]) -> str:
    """The env as the user named it, for messages: its id or import path (and a Unity build's ``file_name``)."""
    env = hparams.get("env")
    label = repr(env if isinstance(env, str) else getattr(env, "__qualname__", env))
    file_name = (hparams.get("env_kwargs") or {}).get("file_name")
    return f"{label} (file_name={file_name!r})" if file_name else label


def _is_float(array: np.ndarray) -> bool:
    # Integer, bool and uint8 (image) arrays cannot hold NaN or inf: nothing to check.
    return array.dtype.kind in "fc"


def all_finite(fields: Mapping[str, np.ndarray]) -> bool:
    """Whether every floating array in ``fields`` is finite: one vectorised test per array."""
    return all(np.isfinite(a).all() for a in fields.values() if _is_float(a))


def first_non_finite(fields: Mapping[str, np.ndarray]) -> tuple[str, tuple[int, ...], float] | None:
    """The field, index and value of the earliest non-finite element (smallest leading index, then field order).

    The slow search that builds a message, run only after ``all_finite`` failed.
    """
    best: tuple[str, tuple[int, ...], float] | None = None
    for name, array in fields.items():
        if not _is_float(array):
            continue
        bad = np.argwhere(~np.isfinite(array))
        if len(bad) and (best is None or tuple(bad[0][:1]) < best[1][:1]):
            index = tuple(int(i) for i in bad[0])
            best = (name, index, float(array[index]))
    return best


def obs_fields(prefix: str, obs: Any) -> dict[str, np.ndarray]:
    """Observations as named arrays: ``prefix`` for a Box, ``prefix['key']`` per key of a Dict."""
    if isinstance(obs, Mapping):
        return {f"{prefix}[{k!r}]": np.asarray(v) for k, v in obs.items()}
    return {prefix: np.asarray(obs)}


def non_finite_env_fault(env: str, field: str, value: float, sub_env: int, env_steps: int) -> EnvironmentFault:
    """The error for a non-finite number an env gave: which env, sub-env, env step and field, and what to do.

    ``env_steps``: the run's ``env_steps`` when the env step that returned it was taken; negative: the reset.
    """
    when = "at its reset" if env_steps < 0 else f"in the env step taken at env_steps={env_steps}"
    return EnvironmentFault(
        f"env {env} returned a non-finite {field} ({value}) from sub-env {sub_env} {when}; training stopped "
        "before it reached the weights. Fix the env (or clip or normalise its output with a wrapper) so that "
        "observations and rewards are finite")


def check_collected(env: str, groups: list[tuple[Mapping[str, np.ndarray], Callable[[int], int]]]) -> None:
    """Raise ``EnvironmentFault`` if a time-major ``(T, num_envs, ...)`` array holds NaN or inf.

    ``groups``: named arrays, each group with ``step_of_row(t)``: the run's ``env_steps`` when the env step that
    returned row ``t`` was taken (negative: a reset). The message names the earliest bad number of all groups.
    """
    if all(all_finite(fields) for fields, _ in groups):
        return
    found = []
    for fields, step_of_row in groups:
        bad = first_non_finite(fields)
        if bad is not None:
            name, index, value = bad
            found.append((step_of_row(index[0]), index[1], name, value))
    env_steps, sub_env, name, value = min(found, key=lambda f: (f[0], f[1]))
    raise non_finite_env_fault(env, name, value, sub_env, env_steps)


class NonFiniteAction(RLLightningError, FloatingPointError):
    """The policy produced a NaN or infinite action (from finite observations); it was not sent to the env."""

    exit_code = 1


def divergence_suspects(module: Any) -> str:
    """The settings that most often make a model diverge, with their values: every learning rate its class declares
    (``LearningRate`` in its ``__init__``), ``reward_scale`` and ``max_grad_norm``. No bound rules out a learning rate
    that diverges (it depends on the loss's scale), so the error that stops such a run names them instead."""
    names = [*settings_of_type(type(module), LearningRate), "reward_scale", "max_grad_norm"]
    hparams = getattr(module, "hparams", {})
    return ", ".join(f"{name}={hparams[name]!r}" for name in names if name in hparams)


def non_finite_loss(what: str, env_steps: int, suspects: str = "") -> NonFiniteLoss:
    """The error for a loss or gradient that became NaN or inf, raised before the optimizer step; ``suspects``:
    ``divergence_suspects`` of the model."""
    settings = f" ({suspects})" if suspects else ""
    return NonFiniteLoss(
        f"the {what} became NaN or infinite at env step {env_steps}; training stopped before the optimizer step, "
        f"so the weights are unchanged. Lower a learning rate or reward_scale, set or lower max_grad_norm{settings}, "
        "or check the env's reward scale")


def check_actions(actions: np.ndarray, raw_obs: Any, acted_obs: Any, env: str, env_steps: int, steps_per_row: int,
                  suspects: Callable[[], str]) -> None:
    """Raise before a non-finite action reaches the env, naming what produced it: the env (its observation was not
    finite), observation normalization (it made a finite observation non-finite) or the policy (``suspects()``: its
    settings). ``env_steps``: the step about to be taken; ``steps_per_row``: env steps per vector-env step.

    One vectorised test of the action array (none for integer actions, which cannot be NaN); the search for the
    culprit runs only when it fails.
    """
    if not _is_float(actions) or np.isfinite(actions).all():
        return
    raw = obs_fields("observation", raw_obs)
    if not all_finite(raw):  # the env's fault, by the step that returned the observation (or the reset)
        name, index, value = first_non_finite(raw)
        raise non_finite_env_fault(env, name, value, index[0], max(env_steps - steps_per_row, -1))
    sub_env = int(np.argwhere(~np.isfinite(actions))[0][0])
    acted = obs_fields("observation", acted_obs)
    if not all_finite(acted):
        name, index, value = first_non_finite(acted)
        raise NonFiniteAction(
            f"normalize_observations turned sub-env {index[0]}'s finite {name} into {value} at env_steps={env_steps} "
            "(its running statistics are no longer finite), and the policy's action on it is not finite; it was "
            f"not sent to env {env}. Check the env's observation scale, or raise normalization_epsilon")
    raise NonFiniteAction(
        f"the policy's action for sub-env {sub_env} at env_steps={env_steps} is not finite "
        f"({actions[sub_env].tolist()}) although its observation is: the policy diverged, not env {env} (the "
        f"action was not sent to it). Lower a learning rate or reward_scale, or set max_grad_norm ({suspects()})")


def non_finite_weights(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating tensors in ``state_dict`` that hold NaN or inf (one host sync for all of them)."""
    names = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state_dict[k]).all().to("cpu", non_blocking=True) for k in names])
    if bool(finite.all()):
        return []
    return [k for k, ok in zip(names, finite.tolist()) if not ok]


def non_finite_checkpoint_weights(checkpoint: Mapping[str, Any]) -> str | None:
    """The checkpoint's weights (``state_dict``) that hold NaN or inf, named for a message (the first five), or
    None when all are finite."""
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, Mapping):
        return None
    bad = non_finite_weights(state_dict)
    if not bad:
        return None
    return ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def check_checkpoint_finite(checkpoint: Mapping[str, Any], path: Any) -> None:
    """Raise ``NonFiniteCheckpoint`` if the checkpoint's weights (``state_dict``) hold NaN or inf."""
    shown = non_finite_checkpoint_weights(checkpoint)
    if shown:
        raise NonFiniteCheckpoint(f"refused to write checkpoint {str(path)!r}: the weights {shown} hold NaN or inf "
                                  "values; the previous file (if any) is left as it was")


def check_finite_action_bounds(space: gym.Space, algorithm: str) -> None:
    """Refuse a Box action space with infinite bounds for an algorithm that maps its outputs onto the bounds."""
    if not isinstance(space, gym.spaces.Box):
        return
    if np.isfinite(space.low).all() and np.isfinite(space.high).all():
        return
    raise ConfigurationError(
        f"{algorithm} scales its actions to the action space's bounds, but the env's action space {space} has "
        "infinite bounds (low or high is inf): declare the real bounds in the env's action space, or add a wrapper "
        "that gives a bounded one (e.g. gymnasium.wrappers.TransformAction with a finite Box), or use PPO or A2C, "
        "whose Gaussian policy needs no bounds")


def check_collect_budget(collect_steps: int, total_steps: int, settings: str, fix: str) -> None:
    """Refuse a collection round larger than the whole budget (it would train far past ``total_steps``)."""
    if collect_steps > total_steps:
        raise ConfigurationError(
            f"one collection round is {settings} = {collect_steps} env steps, more than total_steps={total_steps}: "
            f"the run would train {collect_steps} steps instead; {fix}")
