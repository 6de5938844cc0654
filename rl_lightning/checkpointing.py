"""Checkpoint files that survive a kill, readable errors for bad ones, and the run state that makes resume exact.

A run resumes exactly when, besides what Lightning restores (weights, optimizers,
loop counters), the checkpoint holds everything the next env step and the next
update draw on: the random number generators, the envs themselves and their
current observations, the episodes in progress and the algorithm's own state
(replay buffer, exploration noise, target-update counters; see each algorithm's
``on_save_checkpoint``).
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from rl_lightning.errors import ConfigurationError
from rl_lightning.guards import check_checkpoint_finite, non_finite_checkpoint_weights
from rl_lightning.output_paths import write_failure


class CheckpointError(ConfigurationError):
    """A checkpoint file is missing, truncated or not one this library (or this model) can load."""


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True,
                         mmap: bool = False) -> dict:
    """``torch.load`` with errors that name the file and what is wrong with it.

    Every load of the library goes through here (the CLI's ``check_checkpoint``, the Trainer's checkpoint IO
    (``AtomicCheckpointIO``), ``load_from_checkpoint``, export), so a checkpoint whose weights hold NaN or inf is
    refused here, for all of them, naming the tensors: evaluated, it would act at random (NaN logits); exported, fail
    inside the exporter; resumed, fail at its first update as if the loss were to blame. (Saving refuses such weights
    too, ``check_checkpoint_finite``: such a file comes from other code or was edited.) Only ``state_dict`` is read
    for this; a replay buffer (an entry of its own) stays mapped.

    ``mmap``: map the tensors' storage instead of reading it (reading the hyperparameters of a checkpoint that
    holds a large replay buffer then costs almost nothing).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (check --ckpt_path)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only,
                                mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - torch's unpickler fails a text file in many ways ("hello": KeyError 101)
        is_zip = zipfile.is_zipfile(path)
        if is_zip and isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            raise CheckpointError(f"checkpoint {str(path)!r} holds Python objects that torch.load(weights_only=True) "
                                  "refuses to unpickle (a checkpoint from other code, or hyperparameters that are not "
                                  f"plain data): {str(err).splitlines()[0]}") from None
        size = path.stat().st_size
        if size == 0:
            what = "the file is empty"
        elif not is_zip:
            what = (f"the file ({size} bytes) is not a zip archive, as PyTorch checkpoints are: it is truncated or "
                    "another kind of file")
        else:
            what = f"the archive is damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {what}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    bad = non_finite_checkpoint_weights(checkpoint)
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be used: its weights {bad} hold NaN or inf values; "
                              "use an earlier checkpoint of the run (its best-*.ckpt, or one written before the fault)")
    return checkpoint


def require_rl_lightning_state(checkpoint: dict, path: str | os.PathLike | None) -> dict:
    """The library's own entry of a loaded checkpoint; a ``CheckpointError`` naming the file when it has none."""
    state = checkpoint.get("rl_lightning")
    if not isinstance(state, dict) or "algorithm" not in state:
        where = f"checkpoint {str(path)!r}" if path is not None else "the checkpoint"
        kind = "a Lightning checkpoint of another model" if "state_dict" in checkpoint else "not a Lightning checkpoint"
        raise CheckpointError(f"{where} was not written by rl_lightning ({kind}: no 'rl_lightning' entry)")
    lacking = [repr(name) for name in ("observation_space", "action_space") if name not in state]
    if not isinstance(checkpoint.get("state_dict"), dict):
        lacking.insert(0, "'state_dict' (the weights)")
    if lacking:
        where = f"checkpoint {str(path)!r}" if path is not None else "the checkpoint"
        raise CheckpointError(f"{where} is incomplete: it lacks {', '.join(lacking)}; it was edited or written by "
                              "other code: use a checkpoint rl_lightning wrote")
    return state


def _listed(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_checkpoint_weights(found: dict[str, Any], expected: dict[str, Any], where: str, model: str,
                             strict: bool = True) -> None:
    """``CheckpointError`` naming the checkpoint (``where``) when its weights (``found``, its ``state_dict``) do not
    load into ``model``'s (``expected``, the built model's ``state_dict()``): the names either side lacks (``strict``,
    as ``load_state_dict`` checks them) and tensors of another shape (which it refuses whatever ``strict``).

    Without this, ``load_state_dict``'s ``RuntimeError`` lists them, but as a traceback that names no file."""
    problems = []
    if strict:
        missing = [name for name in expected if name not in found]
        unexpected = [name for name in found if name not in expected]
        if missing:
            problems.append(f"it lacks {_listed(missing)}")
        if unexpected:
            problems.append(f"the model has no {_listed(unexpected)}")
    shapes = []
    for name, value in found.items():
        want = expected.get(name)
        if not isinstance(want, torch.Tensor):
            continue
        if not isinstance(value, torch.Tensor):
            shapes.append(f"{name} is a {type(value).__name__}, not a tensor of shape {tuple(want.shape)}")
        elif value.shape != want.shape:
            shapes.append(f"{name} has shape {tuple(value.shape)} where the model's has {tuple(want.shape)}")
    if shapes:
        problems.append(_listed(shapes, shown=3))
    if problems:
        raise CheckpointError(f"the weights in {where} do not fit the {model} model its settings build: "
                              f"{'; '.join(problems)}; it was edited or written by other code: use a checkpoint "
                              "rl_lightning wrote")


def _comparable(value: Any) -> Any:
    """A setting as plain data: tuples as lists, mappings (jsonargparse Namespaces too) as dicts, classes as paths,
    functions that cannot be imported (lambdas, closures: ``load_from_checkpoint(path, env=f)`` puts them among the
    checkpoint's settings) as the label a model keeps for them."""
    from rl_lightning.envs.factory import stored_env_setting

    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, type) or callable(value):
        return stored_env_setting(value)
    return value


RENAMED_SETTINGS = {"rollouts_per_batch": "rounds_per_batch"}
"""Settings that took another name: older checkpoints still load (``rename_settings``), older configs are told."""


def rename_settings(hyper_parameters: dict[str, Any]) -> list[str]:
    """Give ``hyper_parameters`` (of an older checkpoint) the settings' current names, in place; returns the renamed
    ones."""
    renamed = [old for old in RENAMED_SETTINGS if old in hyper_parameters]
    for old in renamed:
        hyper_parameters[RENAMED_SETTINGS[old]] = hyper_parameters.pop(old)
    return renamed


def settings_differences(model_class: type, saved_algorithm: str, saved: dict[str, Any], current: dict[str, Any],
                         resuming: bool) -> tuple[list[str], list[str]]:
    """How a run's settings (``current``) differ from those a checkpoint was written with (``saved``).

    Returns the differences that forbid loading it (each ``"name: saved -> current"``): another algorithm, and
    ``model_class.MODEL_SETTINGS`` (plus ``RESUME_SETTINGS`` when ``resuming`` a fit); and the other settings that
    differ, which the run takes from ``current`` (budget, evaluation, logging, env process settings,
    hyperparameters). Only the algorithm is reported when it differs. Settings missing on either side (older
    checkpoints) are not compared.
    """
    if saved_algorithm != model_class.__name__:  # then the other settings are not comparable
        return [f"algorithm: {saved_algorithm} -> {model_class.__name__}"], []
    blocking: list[str] = []
    fixed = set(model_class.MODEL_SETTINGS) | (set(model_class.RESUME_SETTINGS) if resuming else set())
    changed: list[str] = []
    for name in current:
        if name.startswith("_") or name not in saved:
            continue
        before, after = _comparable(saved[name]), _comparable(current[name])
        if before == after or (name in ("wrappers", "env_kwargs", "eval_env_kwargs") and not before and not after):
            continue
        difference = f"{name}: {before!r} -> {after!r}"
        (blocking if name in fixed else changed).append(difference)
    return blocking, changed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, syncs it, then renames it into place.

    A process killed at any moment (during a save included) leaves either the
    previous file or the new one, never a partial one; the temporary file of a
    killed save is removed when its folder is next written or loaded from. (Lightning's own writer
    stages the file in the system temp directory and moves it, which is a copy,
    not a rename, when that is another filesystem.) Loading and writing errors name the file (a full
    disk too: ``rl_lightning.output_paths.write_failure``). A checkpoint whose weights
    hold NaN or inf is refused (``NonFiniteCheckpoint``), leaving the previous file in place.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        # The last line of defence: a checkpoint with NaN weights would replace a good last/best one.
        check_checkpoint_finite(checkpoint, path)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_orphaned_temporaries(path)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            # Named before the partial file goes: it still takes its space and shows a reached file size limit.
            failure = write_failure(err, path, "checkpoint", partial=tmp)
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:  # its folder is not there or not writable: nothing was written
                pass
            if failure is not None:
                raise failure from err
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash of the machine
        finally:
            os.close(dir_fd)

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if Path(path).is_file():  # a run resumed (or evaluated) from a folder a killed save may have left litter in
            _remove_orphaned_temporaries(Path(path))
        return load_checkpoint_file(path, map_location=map_location if map_location is not None else "cpu",
                                    weights_only=True if weights_only is None else weights_only)


def _remove_orphaned_temporaries(path: Path) -> None:
    """Temporary checkpoint files in ``path``'s folder left by processes killed while saving (pid in the name)."""
    for tmp in path.parent.glob(".*.ckpt.*.tmp"):
        pid = tmp.name[:-len(".tmp")].rsplit(".", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


# ---------------------------------------------------------------------- random number generators
def rng_state() -> dict[str, Any]:
    """The global generators every draw of the library goes through (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- environments
def _vector_chain(venv: gym.vector.VectorEnv) -> tuple[list[gym.vector.VectorWrapper], gym.vector.VectorEnv]:
    wrappers = []
    while isinstance(venv, gym.vector.VectorWrapper):
        wrappers.append(venv)
        venv = venv.env
    return wrappers, venv


_NATIVE_STATE_MODULES = {"Box2D"}
"""Packages of env internals whose objects pickle but do not come back usable."""
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def env_state(venv: gym.vector.VectorEnv) -> bytes | None:
    """The complete state of a sync vector env (sub-envs, their RNGs, vector wrappers), or None if it has none to take.

    Only ``SyncVectorEnv`` qualifies: its sub-envs live in this process. Their
    factories (``env_fns``, often closures) are left out; the rest must pickle,
    which holds for classic-control and toy-text envs (not Box2D's, see below). Async envs (sub-env
    state in other processes) and Unity (state in the game) return None.
    """
    wrappers, base = _vector_chain(venv)
    if not isinstance(base, gym.vector.SyncVectorEnv):
        return None
    native = next((type(v) for env in base.envs for v in vars(env.unwrapped).values()
                   if type(v).__module__.split(".")[0] in _NATIVE_STATE_MODULES), None)
    if native is not None:
        # Box2D's worlds pickle without error into objects that cannot be stepped (measured: LunarLander and
        # BipedalWalker fail their first step after a restore), so these envs restart on resume instead.
        _warn_once(f"the training envs hold {native.__module__}.{native.__qualname__} objects, whose state cannot be "
                   "saved: a resumed run starts new episodes instead of continuing the interrupted ones")
        return None
    state = {"wrappers": [{k: v for k, v in w.__dict__.items() if k != "env"} for w in wrappers],
             "vector": {k: v for k, v in base.__dict__.items() if k != "env_fns"}}
    try:
        return pickle.dumps(state)
    except Exception as err:  # noqa: BLE001 - any env attribute may refuse pickling
        _warn_once(f"the training envs cannot be saved in checkpoints ({type(err).__name__}: {err}); a resumed run "
                   "starts new episodes instead of continuing the interrupted ones")
        return None


def restore_env_state(venv: gym.vector.VectorEnv, blob: bytes) -> None:
    """Put the state taken by ``env_state`` into ``venv``, an env built from the same settings."""
    wrappers, base = _vector_chain(venv)
    state = pickle.loads(blob)  # noqa: S301 - the run's own checkpoint, loaded to resume it
    if not isinstance(base, gym.vector.SyncVectorEnv) or len(wrappers) != len(state["wrappers"]):
        raise CheckpointError("the checkpoint's envs were built differently (vector env or wrappers differ)")
    for env in base.envs:
        env.close()
    base.__dict__.update(state["vector"])
    for wrapper, saved in zip(wrappers, state["wrappers"]):
        wrapper.__dict__.update(saved)
