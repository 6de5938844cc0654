"""What a checkpoint holds beyond Lightning's weights, optimizers and loops, and how a run comes back from one.

``checkpoint["rl_lightning"]`` holds the algorithm's name, the spaces the networks were built for (so
``load_from_checkpoint`` needs no env), whether the env gave action masks (``env_gives_action_masks``: the plain
ONNX export's ``action_masks`` input), and an algorithm's state in two kinds:

- ``COUNTERS``: run-wide counts (env steps, episodes; DQN adds its target updates), the same on every DDP rank,
  restored whenever a checkpoint is loaded;
- the *run state* of every process, written during ``fit`` only: random generators, envs, current observations,
  unlogged episodes and what the algorithm adds in ``run_state()`` (DDPG's exploration noise), restored right
  before the first batch of a resumed fit.

(The off-policy family's replay buffers, too large for the pickled run state, are an entry of their own.)
Loading checks the algorithm and the settings (``rl_lightning.checkpointing.settings_differences``).
"""

from __future__ import annotations

import io
import pickle
from contextvars import ContextVar
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from rl_lightning.checkpointing import (CheckpointError, check_checkpoint_weights, env_state, load_checkpoint_file,
                                        rename_settings, require_rl_lightning_state, restore_env_state, rng_state,
                                        set_rng_state, settings_differences)
from rl_lightning.envs.spaces import space_from_dict, space_to_dict
from rl_lightning.errors import ConfigurationError
from rl_lightning.lightning_compat import attached_trainer, fitting, world_size

_LOADING: ContextVar[tuple[Any, bool | None] | None] = ContextVar("rl_lightning_loading", default=None)
"""While ``load_from_checkpoint`` runs: its file and ``strict`` argument, which Lightning's ``_load_state``
(``lightning/pytorch/core/saving.py``) does not pass to ``on_load_checkpoint``."""


class CheckpointedRun(L.LightningModule):
    """The checkpoint hooks of ``RLModule`` (which provides the counters, spaces and envs they read)."""

    COUNTERS: tuple[str, ...] = ("env_steps", "episodes")
    """Attributes saved in every checkpoint and restored whenever one is loaded (subclasses add theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self._resume_state: dict[str, Any] | None = None  # this process's run state from the checkpoint being resumed
        self._reapply_optimizer_settings = False  # see on_load_checkpoint
        self._loaded_outside_fit = False  # weights from a checkpoint loaded outside fit (see on_fit_start)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rl_lightning"] = {
            "algorithm": type(self).__name__,
            **{name: getattr(self, name) for name in self.COUNTERS},
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
        }
        if self.env_spaces is not None:
            try:
                checkpoint["rl_lightning"]["env_spaces"] = [space_to_dict(s) for s in self.env_spaces]
            except TypeError:
                # The env's own spaces, before the wrappers, hold a space the library cannot describe (MiniGrid's
                # MissionSpace, text): the spaces the model acts in (after the wrappers) are recorded above, and an
                # export reads the env's own off a built env.
                pass
        if self.env_gives_action_masks is not None:
            checkpoint["rl_lightning"]["env_gives_action_masks"] = self.env_gives_action_masks
        if self.envs is not None and fitting(self):
            checkpoint["rl_lightning"]["run_state"] = self._gather_run_states()

    def run_state(self) -> dict[str, Any]:
        """What this process's next env steps and updates depend on beyond the weights, optimizers and counters.

        The one place for an algorithm's own state: subclasses add their entries (``super().run_state()`` first)
        and read them back in ``load_run_state``. (A replay buffer, too large for this pickle, is the off-policy
        family's own checkpoint entry.)
        """
        state = {
            "rng": rng_state(),
            "envs": env_state(self.envs),  # None: the envs restart on resume (Unity, async envs)
            "obs": self._obs,
            **self.training_log.state(),
            "action_mask": self._action_mask,
        }
        if self.normalization is not None:  # the discounted returns of the episodes under way
            state["normalization"] = self.normalization.run_state()
        return state

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Restore ``run_state()`` into a module whose envs are built (``restore_run_state`` calls it)."""
        # Envs without saved state (Unity, async, Box2D) keep the new episodes setup started, with their
        # observations and masks. Stored transitions need no change: one-step targets bootstrap from the stored
        # next observation whether or not its episode goes on, and rollouts end at each batch.
        if state["envs"] is not None:
            restore_env_state(self.envs, state["envs"])
            self._obs = state["obs"]
            self._action_mask = state["action_mask"]
            if self.normalization is not None and "normalization" in state:
                self.normalization.load_run_state(state["normalization"])
        self.training_log.load_state(state)
        set_rng_state(state["rng"])

    def _gather_run_states(self) -> list[bytes]:
        # One entry per process: under DDP each rank has its own envs, generators and episodes. Pickled,
        # so that the checkpoint still loads with weights_only=True (the states are only read to resume).
        mine = pickle.dumps(self.run_state())
        if self.trainer.world_size == 1:
            return [mine]
        gathered: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    @classmethod
    def _check_checkpoint(cls, checkpoint: dict[str, Any], path: Any = None) -> dict[str, Any]:
        state = require_rl_lightning_state(checkpoint, path)
        if state["algorithm"] != cls.__name__:
            where = f"checkpoint {str(path)!r}" if path is not None else "the checkpoint"
            raise CheckpointError(f"{where} holds a {state['algorithm']} model; load it with "
                                  f"{state['algorithm']}, not {cls.__name__}")
        return state

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> CheckpointedRun:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, after checking the checkpoint holds this algorithm.

        The model needs no environment: its networks are rebuilt from the spaces stored in the checkpoint.
        """
        checkpoint = load_checkpoint_file(checkpoint_path, mmap=True)
        cls._check_checkpoint(checkpoint, checkpoint_path)
        token = _LOADING.set((checkpoint_path, kwargs.get("strict")))
        try:
            if rename_settings(checkpoint.get("hyper_parameters", {})):  # written before a setting was renamed
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                buffer.seek(0)
                checkpoint_path = buffer
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        finally:
            _LOADING.reset(token)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = attached_trainer(self)
        loading = _LOADING.get()
        path = trainer.ckpt_path if trainer is not None else loading[0] if loading is not None else None
        state = self._check_checkpoint(checkpoint, path)
        # This run's settings are what runs (see settings_differences): those that define the networks (and, to
        # resume a fit, the saved run state) must be the checkpoint's, the others take this run's values.
        blocking, changed = settings_differences(type(self), state["algorithm"], checkpoint.get("hyper_parameters", {}),
                                                 dict(self.hparams), resuming=fitting(self))
        if blocking:
            where = f"checkpoint {str(path)!r}" if path is not None else "the checkpoint"
            raise CheckpointError(f"{where} was written with other settings than this run's, which must match to "
                                  f"{'resume' if fitting(self) else 'load'} it (checkpoint -> this run): "
                                  f"{'; '.join(blocking)}. Use the settings of the checkpoint's run (its config.yaml) "
                                  "or train a new run without ckpt_path")
        if changed and fitting(self):
            rank_zero_info("Resuming with this run's settings where they differ from the checkpoint's: "
                           + "; ".join(changed))
        # Lightning restores the optimizers' hyperparameters (learning rates, eps) with their state: this run's go back
        # in once training starts. Only when settings changed, so that a plain resume stays bit-identical.
        self._reapply_optimizer_settings = bool(changed) and fitting(self)
        spaces = space_from_dict(state["observation_space"]), space_from_dict(state["action_space"])
        if self.observation_space is not None and spaces != (self.observation_space, self.action_space):
            raise ConfigurationError(
                f"the checkpoint's model was trained on observations {spaces[0]} and actions {spaces[1]}, but this "
                f"run's env has observations {self.observation_space} and actions {self.action_space}: resume or "
                "evaluate it with the env it was trained on")
        self._attach_spaces(*spaces)
        # Here, not in load_state_dict (next, in both Lightning's load_from_checkpoint and a Trainer's ckpt_path): its
        # error would name neither the file nor the settings.
        strict = loading[1] if loading is not None and loading[1] is not None else self.strict_loading
        check_checkpoint_weights(checkpoint["state_dict"], self.state_dict(),
                                 f"checkpoint {str(path)!r}" if path is not None else "the checkpoint",
                                 type(self).__name__, strict=strict)
        if state.get("env_spaces") and self.env_spaces is None:
            self.env_spaces = tuple(space_from_dict(s) for s in state["env_spaces"])
        if self.env_gives_action_masks is None:  # envs built in this run's setup know better; older checkpoints: None
            self.env_gives_action_masks = state.get("env_gives_action_masks")
        for name in self.COUNTERS:
            if name in state:  # an older checkpoint may lack a newer counter
                setattr(self, name, state[name])
        self._loaded_outside_fit = not fitting(self)
        self._resume_state = None
        run_states = state.get("run_state")
        if run_states and fitting(self):
            rank = self.global_rank
            if len(run_states) != world_size(self):
                rank_zero_warn(f"the checkpoint was written by {len(run_states)} process(es), this run has "
                               f"{world_size(self)}: ranks beyond {len(run_states) - 1} start their envs and "
                               "generators afresh", stacklevel=1)
            if rank < len(run_states):
                self._resume_state = pickle.loads(run_states[rank])  # noqa: S301 - the run's own checkpoint

    def on_fit_start(self) -> None:
        # After Lightning restored any checkpoint given to this fit. Weights loaded before it (load_from_checkpoint,
        # or validate/test with a checkpoint) start a new run from them: a new budget of total_steps env steps, with
        # the counters (and the schedules that follow them) from zero; resuming a run is fit's ckpt_path.
        if self._loaded_outside_fit:
            self._loaded_outside_fit = False
            if self.env_steps:
                rank_zero_info(f"Training the loaded weights as a new run of total_steps={self.hparams.total_steps} "
                               f"env steps (the checkpoint's run had {self.env_steps}); to continue that run instead, "
                               "fit with ckpt_path=<the checkpoint>")
            for name in self.COUNTERS:
                setattr(self, name, 0)

    def restore_run_state(self) -> None:
        """When a resumed fit starts (``on_train_start``): load this process's run state and give the restored
        optimizers this run's hyperparameters where the settings changed."""
        if self._resume_state is not None:
            self.load_run_state(self._resume_state)
            self._resume_state = None
        if self._reapply_optimizer_settings:
            self._apply_configured_optimizer_settings()
            self._reapply_optimizer_settings = False

    def _apply_configured_optimizer_settings(self) -> None:
        """Give the restored optimizers this run's hyperparameters (``configure_optimizers``'), keeping their state."""
        configured = self.configure_optimizers()
        configured = configured if isinstance(configured, (list, tuple)) else [configured]
        for restored, fresh in zip(self.optimizers_list(), configured):
            for group, new_group in zip(restored.param_groups, fresh.param_groups):
                group.update({k: v for k, v in new_group.items() if k != "params"})
