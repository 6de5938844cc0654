"""The base every algorithm builds on: environments, the env-step budget, collection, logging, evaluation."""

from __future__ import annotations

import inspect
import io
import math
import pickle
import time
import warnings
from abc import abstractmethod
from typing import Any, Literal

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from rl_lightning.callbacks import EpochProgress, LastCheckpoint
from rl_lightning.checkpointing import (AtomicCheckpointIO, CheckpointError, env_state, load_checkpoint_file,
                                        rename_settings, require_rl_lightning_state, restore_env_state, rng_state,
                                        set_rng_state, settings_differences)
from rl_lightning.algorithms.updates import GradientStepper
from rl_lightning.algorithms.schedule import RoundSchedule
from rl_lightning.data.stream import EvaluationRequests, RoundStream
from rl_lightning.envs.checks import check_env_kwargs
from rl_lightning.envs.factory import EnvSource, check_env_source, import_path_of, make_vector_env, resolve_env
from rl_lightning.envs.spaces import space_from_dict, space_to_dict
from rl_lightning.envs.transforms import spaces_before_wrappers
from rl_lightning.errors import ConfigurationError
from rl_lightning.guards import check_collect_budget
from rl_lightning.evaluation import EvaluationResult, evaluate_episodes
from rl_lightning.lightning_compat import (attached_trainer, batches_fetched_this_epoch, logs_due,
                                           replace_default_checkpoint_io, set_max_epochs)
from rl_lightning.signals import exit_code_for

# Collection runs in the trainer process on purpose (the generator uses the live policy),
# and the stream's exact __len__ is what stops Lightning from pre-fetching a batch.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")

EVAL_SEED_OFFSET = 10_000
"""Evaluation envs are seeded apart from training envs so they never replay the same episodes."""

WORKER_ID_PER_RANK = 100
"""Under DDP, rank ``r`` adds ``r * WORKER_ID_PER_RANK`` to a Unity env's ``worker_id``, for ports of its own."""


def _private_generator() -> torch.Generator:
    """For DataLoaders: each iterator they create draws a seed, which would otherwise come from torch's global
    generator. Lightning creates them a different number of times in a resumed run than in an uninterrupted one,
    and the policy's and the buffer's draws must not depend on that."""
    return torch.Generator().manual_seed(0)


class _RunSupport(L.Callback):
    """What every run of an ``RLModule`` gets, with any trainer.

    - Checkpoints are written atomically (``AtomicCheckpointIO``) unless the trainer was given its own
      checkpoint IO plugin.
    - The module's envs are closed when fit/validate/test raise or are interrupted (Ctrl-C, SIGTERM): Lightning
      then calls ``on_exception`` on callbacks only, not on the LightningModule, nor its ``teardown``. A
      ``LastCheckpoint`` saves first (while the envs it saves are open; Lightning calls checkpoint callbacks
      last), and a run stopped by SIGTERM exits with 143 (``rl_lightning.signals``).
    """

    def setup(self, trainer: L.Trainer, pl_module: RLModule, stage: str) -> None:
        replace_default_checkpoint_io(trainer, AtomicCheckpointIO())

    def on_exception(self, trainer: L.Trainer, pl_module: RLModule, exception: BaseException) -> None:
        exit_code_for(exception)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.on_exception(trainer, pl_module, exception)
        pl_module.close_envs()


class RLModule(L.LightningModule):
    """A LightningModule that trains a policy on environments it builds and steps itself.

    Training is a sequence of rounds: every sub-env takes ``ROUND_UNIT`` steps (the algorithm's own setting,
    ``n_steps`` or ``train_freq``), then the algorithm updates on what they collected. Subclasses implement
    ``build_networks``, ``collect_round`` (step the envs for one round, return its data), ``train_round`` (that
    round's updates, each through ``gradient_step``), ``configure_optimizers`` and ``predict_actions``. The
    dataloader yields, per training batch, how many rounds ``training_step`` runs (``rounds_per_batch``); the
    division of the budget into rounds, batches and epochs is ``RoundSchedule``'s.

    Training is measured in environment steps: ``env_steps`` counts every
    transition collected (all sub-envs), training ends once it reaches
    ``total_steps``, and TensorBoard plots every metric against it. One epoch is
    ``steps_per_epoch`` env steps (rounded up to whole rounds); validation
    (evaluation episodes) and checkpoint callbacks run at its end.

    Under DDP (``strategy="ddp"``) each process (rank) steps its own envs, seeded
    apart, and the step counts are global: ``env_steps``, ``episodes``,
    ``total_steps`` and ``steps_per_epoch`` count the transitions of all ranks,
    so every rank runs the same batches and schedules. Episode statistics and
    evaluation results are reduced over the ranks before they are logged.

    Args:
        env: Gymnasium env id (``"CartPole-v1"``), import path of an env class or factory
            (``"my_pkg.envs:MyEnv"``), the class/factory itself, or ``"unity"`` (``env_kwargs`` are then
            ``UnityVectorEnv``'s: ``file_name``, ``worker_id``, ``engine_settings``, ``parameters`` ...).
        num_envs: number of environment copies stepped together (under DDP: by each rank).
        vectorization: ``"sync"`` steps the copies in this process, ``"async"`` in subprocesses.
        env_kwargs: keyword arguments for ``gym.make`` or the env class. Under DDP, rank ``r`` > 0 adds ``r * 100``
            to a Unity env's ``worker_id`` (also in ``eval_env_kwargs``), so each rank's processes get their own ports.
        wrappers: Gymnasium wrappers applied to each copy, innermost first: import paths, or
            ``{"class_path": ..., "init_args": {...}}``.
        seed: seeds the networks' initialisation, action sampling and the envs (copy ``i`` gets ``seed + i``;
            under DDP rank ``r``'s copies continue the numbering at ``seed + r * num_envs``).
        total_steps: training budget in environment steps, summed over all env copies (and DDP ranks).
        steps_per_epoch: environment steps per epoch (all ranks); evaluation and epoch-end checkpoints happen this
            often.
        eval_episodes: episodes played by each evaluation (``validate``, ``test``, and after each epoch of ``fit``),
            by each DDP rank; 0 disables evaluation during ``fit``.
        eval_num_envs: env copies the evaluation episodes are spread over.
        eval_deterministic: evaluate the policy's most likely action instead of sampling.
        eval_env_kwargs: keyword arguments for the evaluation env, overriding ``env_kwargs``.
        log_interval: environment steps between logged training points (``run/*``, ``model/*``, ``time/*``);
            each point averages each diagnostic over the rounds (collect-then-update) since the previous one.
            Points are also written at every epoch's end, and only on batches Lightning writes logs on
            (``trainer.log_every_n_steps``; the CLI's default is 1).
            Logging every batch costs ~0.1 ms per metric in Lightning, as much as a small update.
        check_env: check a custom env class or factory (not a registered id, not Unity) once at setup with Gymnasium's
            env checker: an observation of the wrong shape or dtype stops the run naming the env and its space, other
            findings are warnings. About a millisecond for a small env; ``False`` skips it.
        gamma: discount factor.
        reward_scale: rewards are multiplied by this for learning (episode statistics stay unscaled).
        max_grad_norm: clip each optimizer's gradient norm to this before it steps; ``None`` disables clipping.
        rounds_per_batch: rounds (collect, then update) per training batch. ``None`` chooses enough for about 256
            env steps per batch, 1 when a round has that many, never more than an epoch's worth. The updates, epochs
            and budget are those of one round per batch; several rounds share Lightning's per-batch work.
    """

    ROUND_UNIT: str
    """The setting that gives each sub-env's steps per round (``"n_steps"``, ``"train_freq"``)."""

    MODEL_SETTINGS: tuple[str, ...] = ("env", "wrappers")
    """Settings that define the networks or their spaces: a checkpoint loads only into a model with the same ones
    (subclasses add their network shapes)."""
    RESUME_SETTINGS: tuple[str, ...] = ("num_envs", "vectorization")
    """Settings the saved run state depends on (envs, buffers, optimizer kinds): resuming ``fit`` needs the same
    ones; evaluating does not."""

    def __init__(
        self,
        env: EnvSource = "CartPole-v1",
        num_envs: int = 1,
        vectorization: Literal["sync", "async"] = "sync",
        env_kwargs: dict[str, Any] | None = None,
        wrappers: list[str | dict[str, Any]] | None = None,
        seed: int = 0,
        total_steps: int = 100_000,
        steps_per_epoch: int = 10_000,
        eval_episodes: int = 20,
        eval_num_envs: int = 4,
        eval_deterministic: bool = True,
        eval_env_kwargs: dict[str, Any] | None = None,
        log_interval: int = 1000,
        check_env: bool = True,
        gamma: float = 0.99,
        reward_scale: float = 1.0,
        max_grad_norm: float | None = None,
        rounds_per_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # An env class is kept as its import path: YAML-friendly and loadable with weights_only=True.
        self.hparams.env = import_path_of(env) or env
        self.automatic_optimization = False
        resolved = resolve_env(env)  # an unknown id fails here, before anything is built
        check_env_kwargs(env, resolved, env_kwargs)  # so does a key the env does not take
        check_env_kwargs(env, resolved, eval_env_kwargs, "eval_env_kwargs")
        self._env_checked = not check_env
        # A vector env class (Unity) brings its own sub-envs: their number is known once it is built.
        self.env_sets_num_envs = isinstance(resolved, type) and issubclass(resolved, gym.vector.VectorEnv)
        for name in ("num_envs", "total_steps", "steps_per_epoch", "eval_num_envs", "log_interval"):
            value = getattr(self.hparams, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name}={value!r} must be a positive integer")
        if eval_episodes < 0:
            raise ConfigurationError(f"eval_episodes={eval_episodes} must be >= 0")
        unit = self.hparams.get(self.ROUND_UNIT)
        if not isinstance(unit, int) or unit < 1:
            raise ConfigurationError(f"{self.ROUND_UNIT}={unit!r} must be a positive integer")
        if rounds_per_batch is not None and (not isinstance(rounds_per_batch, int) or rounds_per_batch < 1):
            raise ConfigurationError(f"rounds_per_batch={rounds_per_batch!r} must be a positive integer, or null to "
                                     f"choose it from {self.ROUND_UNIT}")
        if not 0.0 <= gamma <= 1.0:
            raise ConfigurationError(f"gamma={gamma} must lie in [0, 1]")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ConfigurationError(f"max_grad_norm={max_grad_norm} must be > 0, or null for no clipping")
        self.envs: gym.vector.VectorEnv | None = None
        self.eval_envs: gym.vector.VectorEnv | None = None
        self.observation_space: gym.Space | None = None
        self.action_space: gym.Space | None = None
        # The env's spaces before the `wrappers` entries: what an exported policy takes and gives (rl_lightning.export).
        self.env_spaces: tuple[gym.Space, gym.Space] | None = None
        self.env_steps = 0
        self.episodes = 0
        self._num_envs_by_rank: list[int] | None = None  # under DDP: each rank's training sub-envs, from setup
        self._finished_returns: list[np.ndarray] = []
        self._finished_lengths: list[np.ndarray] = []
        # Called with the returns of the episodes of each env step that ended some (e.g. a curriculum's callback).
        self.episode_listeners: list[Any] = []
        self._obs: np.ndarray | None = None  # the envs' current observations
        self._initial_info: dict[str, Any] = {}
        self._last_log: tuple[float, int] | None = None
        # Sums of the diagnostics of the rounds since the last logged point, and how many rounds gave each.
        self._pending: dict[str, Any] = {}
        self._pending_counts: dict[str, int] = {}
        self._unity_stats_reducer: Any = None  # a Unity env's custom metrics over the ranks (rl_lightning.unity.stats)
        self.last_evaluation: EvaluationResult | None = None
        self._resume_state: dict[str, Any] | None = None  # this process's run state from the checkpoint being resumed
        self._action_mask: np.ndarray | None = None  # the current observations' masks, if any (rl_lightning.envs.steps)
        # Envs whose sub-envs do not all act at every step (Unity: agents between decisions, sub-envs without an
        # agent) say which rows hold a decision in info["decision"]; None: all of them, always.
        self._decision: np.ndarray | None = None
        self._stepper: GradientStepper | None = None
        self._reapply_optimizer_settings = False  # see on_load_checkpoint

    # ------------------------------------------------------------------ algorithm interface
    @abstractmethod
    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Create the networks for these spaces; raise ``ConfigurationError`` for spaces the algorithm can't handle."""

    @abstractmethod
    def collect_round(self) -> Any:
        """Step the envs for one round with the current policy, advance ``env_steps``, return what the round's
        updates train on."""

    @abstractmethod
    def train_round(self, data: Any) -> dict[str, Any]:
        """The updates of one round on ``collect_round()``'s data; returns the diagnostics to log."""

    @abstractmethod
    def predict_actions(self, obs: torch.Tensor, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Env-ready actions for a batch of observations on ``self.device``.

        ``action_mask`` (bool, True = allowed, one row per observation) restricts discrete actions.
        """

    # ------------------------------------------------------------------ environments
    def _rank_seed(self) -> int:
        # Each DDP rank owns differently seeded envs: offset by the copies of lower ranks.
        return self.hparams.seed + self.global_rank * self.hparams.num_envs

    def make_envs(self, evaluation: bool = False) -> gym.vector.VectorEnv:
        """Build the training envs, or the evaluation envs (own seed, ``eval_env_kwargs`` applied)."""
        hp = self.hparams
        kwargs = dict(hp.env_kwargs or {})
        if evaluation:
            kwargs.update(hp.eval_env_kwargs or {})
            num_envs = max(1, min(hp.eval_num_envs, hp.eval_episodes or 1))
            seed = self._rank_seed() + EVAL_SEED_OFFSET
        else:
            num_envs, seed = hp.num_envs, self._rank_seed()
        if self.global_rank > 0 and self.env_sets_num_envs:
            worker_id = inspect.signature(resolve_env(hp.env)).parameters.get("worker_id")
            if worker_id is not None:  # Unity: one port per process, so one range of ports per rank
                kwargs["worker_id"] = kwargs.get("worker_id", worker_id.default) + self.global_rank * WORKER_ID_PER_RANK
        return make_vector_env(hp.env, num_envs=num_envs, vectorization=hp.vectorization, seed=seed,
                               env_kwargs=kwargs, wrappers=hp.wrappers or ())

    def _attach_spaces(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        if self.observation_space is None:
            self.build_networks(observation_space, action_space)
            self.observation_space, self.action_space = observation_space, action_space
        elif (observation_space, action_space) != (self.observation_space, self.action_space):
            raise ConfigurationError(
                f"the env's spaces (observation {observation_space}, action {action_space}) differ from the "
                f"model's (observation {self.observation_space}, action {self.action_space})")

    def setup(self, stage: str) -> None:
        # Envs are built here, not in __init__, so that load_from_checkpoint needs no env
        # and each DDP rank builds its own.
        if not self._env_checked:  # on an instance of its own: the training envs' seeds and state are untouched
            check_env_source(self.hparams.env, self.hparams.env_kwargs)
            self._env_checked = True
        if stage == "fit":
            torch.manual_seed(self.hparams.seed)
            if self.envs is None:
                self.envs = self.make_envs()
                obs, self._initial_info = self.envs.reset(seed=self._rank_seed())
                self._attach_spaces(self.envs.single_observation_space, self.envs.single_action_space)
                self._note_env_spaces(self.envs)
                self._obs = obs
                self._decision = self._initial_info.get("decision")
            if self._world_size() > 1:
                self._num_envs_by_rank = self._gather_num_envs()
                # After the networks: the same initial weights on every rank, different action and minibatch draws.
                torch.manual_seed(self._rank_seed())
            # Here, once the envs are built: a Unity env's sub-envs (and DDP's ranks) are only counted now.
            unit = self.ROUND_UNIT
            check_collect_budget(self.round_steps, self.hparams.total_steps,
                                 f"{unit}={self.hparams[unit]} x num_envs={self.num_envs_all_ranks}",
                                 f"lower {unit} or num_envs, or raise total_steps")
        needs_eval = stage in ("validate", "test") or (stage == "fit" and self.hparams.eval_episodes > 0)
        if needs_eval and self.eval_envs is None:
            if self.hparams.eval_episodes < 1:
                raise ConfigurationError(f"eval_episodes={self.hparams.eval_episodes}: {stage} needs at least 1")
            self.eval_envs = self.make_envs(evaluation=True)
            self._attach_spaces(self.eval_envs.single_observation_space, self.eval_envs.single_action_space)
            self._note_env_spaces(self.eval_envs)

    def _note_env_spaces(self, envs: gym.vector.VectorEnv) -> None:
        if self.env_spaces is None:
            self.env_spaces = spaces_before_wrappers(envs, len(self.hparams.wrappers or ()))

    def _world_size(self) -> int:
        trainer = attached_trainer(self)
        return trainer.world_size if trainer is not None else 1

    def _gather_num_envs(self) -> list[int]:
        # Once per fit, so that counting the global env steps of each batch needs no collective. Unity ranks can
        # have different agent counts; every rank still collects one batch per training step.
        gathered: list[Any] = [None] * self._world_size()
        torch.distributed.all_gather_object(gathered, self.num_envs)
        return gathered

    def reduce_across_ranks(self, tensor: torch.Tensor, op: Literal["sum", "mean"] = "sum") -> torch.Tensor:
        """``tensor`` summed (or averaged) over the DDP ranks; itself, with no collective, in a single process.

        Every rank must call it at the same point, as with any collective.
        """
        if self._world_size() == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor.clone(), reduce_op=op)  # Lightning reduces in place

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.close_envs()
        elif self.eval_envs is not None:
            self.eval_envs.close()
            self.eval_envs = None

    def close_envs(self) -> None:
        """Close the training and evaluation envs (a Unity env ends its processes)."""
        try:
            if self.envs is not None:
                self.envs.close()
        finally:
            self.envs, self._obs = None, None
            if self.eval_envs is not None:
                self.eval_envs.close()
                self.eval_envs = None

    def configure_callbacks(self) -> list[L.Callback]:
        from rl_lightning.unity.parameters import CurriculumCallback, has_curriculum  # mlagents only when needed

        callbacks: list[L.Callback] = [_RunSupport(), EpochProgress()]
        if has_curriculum((self.hparams.env_kwargs or {}).get("parameters")):  # a Unity curriculum, moved on in fit
            callbacks.append(CurriculumCallback())
        return callbacks

    @property
    def num_envs(self) -> int:
        """Sub-envs stepped together: the built envs' count (Unity: its agents), else the ``num_envs`` setting."""
        return self.envs.num_envs if self.envs is not None else self.hparams.num_envs

    @property
    def num_envs_all_ranks(self) -> int:
        """Sub-envs of all DDP ranks together: each env step of the ranks adds this many to ``env_steps``."""
        return sum(self._num_envs_by_rank) if self._num_envs_by_rank else self.num_envs

    def obs_to_tensor(self, obs: Any) -> Any:
        """Observations as tensors on the module's device: uint8 (images) stays uint8, the rest float32."""
        if isinstance(obs, dict):
            return {k: self.obs_to_tensor(v) for k, v in obs.items()}
        obs = np.asarray(obs)
        dtype = torch.uint8 if obs.dtype == np.uint8 else torch.float32
        return torch.as_tensor(obs, dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ rounds, batches, epochs and the budget
    @property
    def round_steps(self) -> int:
        """Env steps one round adds to ``env_steps``: ``ROUND_UNIT`` steps of every sub-env of every DDP rank."""
        return self.hparams[self.ROUND_UNIT] * self.num_envs_all_ranks

    AUTO_BATCH_STEPS = 256

    @property
    def rounds_per_batch(self) -> int:
        """The ``rounds_per_batch`` setting or, when ``None``: enough rounds for about ``AUTO_BATCH_STEPS`` env steps
        of this process per batch (1 when one round has that many), never more than an epoch's worth."""
        setting = self.hparams.rounds_per_batch
        if setting is not None:
            return setting
        wanted = math.ceil(self.AUTO_BATCH_STEPS / (self.hparams[self.ROUND_UNIT] * self.num_envs))
        return max(1, min(wanted, math.ceil(self.hparams.steps_per_epoch / self.round_steps)))

    @property
    def schedule(self) -> RoundSchedule:
        """How the budget divides into rounds, batches and epochs (with the envs' real count, once they are built)."""
        hp = self.hparams
        return RoundSchedule(hp.total_steps, hp.steps_per_epoch, self.round_steps, self.rounds_per_batch)

    def epoch_batches(self) -> list[int]:
        """The rounds of each batch of the epoch starting now (the same on every DDP rank: the counts are global)."""
        return self.schedule.epoch_batches(self.env_steps)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RoundStream(self.epoch_batches), batch_size=None, num_workers=0, generator=_private_generator())

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # collected directly on the module's device

    def on_train_start(self) -> None:
        # Here, not in on_fit_start: a resumed run's loop counters (current_epoch) are restored by now.
        needed = self.schedule.epochs_left(self.env_steps)
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            # Unbounded: the budget ends training; telling the loop how many epochs that is
            # lets progress bars show "epoch 3/9" instead of an open end.
            set_max_epochs(self.trainer, self.current_epoch + needed)
        elif max_epochs - self.current_epoch < needed:
            warnings.warn(f"trainer.max_epochs={max_epochs} stops training before total_steps="
                          f"{self.hparams.total_steps} env steps ({needed} epochs of {self.hparams.steps_per_epoch} "
                          "steps needed); set trainer.max_epochs=-1 to let total_steps end training", stacklevel=1)
        self._last_log = (time.perf_counter(), self.env_steps)
        self._stepper = GradientStepper(self)
        # A resumed run's own state goes in last, right before the first batch: after Lightning restored the
        # weights, optimizers and loops, with nothing between it and the first env step drawing random numbers.
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
        live = self.optimizers()
        live = live if isinstance(live, list) else [live]
        for restored, fresh in zip(live, configured):
            for group, new_group in zip(restored.param_groups, fresh.param_groups):
                group.update({k: v for k, v in new_group.items() if k != "params"})

    def training_step(self, rounds: int) -> None:
        """Run ``rounds`` rounds (the dataloader's item): each collects with the live policy, then updates on what
        it collected; then write a training point if one is due (``log_training``)."""
        for _ in range(rounds):
            self.log_training(self.train_round(self.collect_round()), end_of_batch=False)
        self.log_training({})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.schedule.spent(self.env_steps):  # no epoch after this one
            self.trainer.should_stop = True

    def gradient_step(self, loss: torch.Tensor, optimizers: Any) -> None:
        """One gradient step: zero the grads of ``optimizers`` (one or a list), back-propagate ``loss``, clip each
        optimizer's gradient norm to ``max_grad_norm`` and step them (see ``GradientStepper``)."""
        if self._stepper is None:  # made in on_train_start; a training_step called outside fit needs one too
            self._stepper = GradientStepper(self)
        self._stepper.gradient_step(loss, optimizers if isinstance(optimizers, (list, tuple)) else [optimizers],
                                    self.hparams.max_grad_norm)

    # ------------------------------------------------------------------ episode statistics and logging
    def record_episodes(self, info: dict[str, Any]) -> None:
        """Keep the returns and lengths of episodes that ended in this env step (from ``RecordEpisodeStatistics``).

        They are counted in ``episodes`` and logged by the next ``log_training``, with those of the other ranks.
        """
        mask = info.get("_episode")
        if mask is not None and mask.any():
            self._finished_returns.append(info["episode"]["r"][mask])
            self._finished_lengths.append(info["episode"]["l"][mask])
            for listener in self.episode_listeners:
                listener(self._finished_returns[-1])

    def _log_due(self) -> bool:
        """Whether this batch writes a training point (see ``log_interval``)."""
        trainer = self.trainer
        if (trainer.should_stop or self.env_steps >= self.hparams.total_steps
                or batches_fetched_this_epoch(trainer) >= trainer.num_training_batches):
            return True  # the epoch's (or the run's) last batch: epoch-end callbacks see fresh values
        if self._last_log is not None and self.env_steps - self._last_log[1] < self.hparams.log_interval:
            return False
        return logs_due(trainer)

    def log_training(self, metrics: dict[str, torch.Tensor | float], end_of_batch: bool = True) -> None:
        """Log the algorithm's diagnostics with episode statistics and throughput, against env steps.

        ``training_step`` calls it with each round's diagnostics (``metrics``, this rank's: rank 0's reach the
        logger), which are summed (detached, no host copy), and at the end of every batch, when a point may be
        written: each diagnostic's mean over the rounds that gave it since the last point, every ``log_interval``
        env steps. The episode statistics are those of the episodes all ranks finished since the last point.
        Under DDP every rank writes its points on the same batches (the rule depends only on the global step
        counts), as the reduction of the episode statistics needs.
        """
        pending, counts = self._pending, self._pending_counts
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
            pending[key] = pending[key] + value if key in pending else value
            counts[key] = counts.get(key, 0) + 1
        if not end_of_batch or (attached_trainer(self) is not None and not self._log_due()):
            return
        means = {key: value / counts[key] for key, value in pending.items()}
        self._pending, self._pending_counts = {}, {}
        count, return_sum, length_sum = self._episode_totals()
        if count > 0:
            self.episodes += count
            self.log("run/score", return_sum / count, prog_bar=True, batch_size=1)
            self.log("run/episode_length", length_sum / count, batch_size=1)
            self.log("run/episodes", float(self.episodes), batch_size=1)
        if self.env_sets_num_envs:  # a vector env of its own (Unity) may send custom metrics
            from rl_lightning.unity.stats import training_point_stats  # mlagents_envs only when needed

            self.log_dict(training_point_stats(self), batch_size=1)  # unity/<key>: what the build's StatsRecorder sent
        now = time.perf_counter()
        if self._last_log is not None and now > self._last_log[0]:
            sps = (self.env_steps - self._last_log[1]) / (now - self._last_log[0])
            self.log("time/steps_per_second", sps, prog_bar=True, batch_size=1)
        self._last_log = (now, self.env_steps)
        self.log_dict(means, batch_size=1)
        self.log("env_steps", float(self.env_steps), prog_bar=True, logger=False, batch_size=1)
        # Lightning uses a logged "step" as the logger's x-axis: environment steps, not optimizer steps.
        self.log("step", float(self.env_steps), batch_size=1)

    def _episode_totals(self) -> tuple[int, float, float]:
        """Count, return sum and length sum of the episodes finished since the last call, over all ranks."""
        # Our own sums instead of torchmetrics' MeanMetric: under DDP it syncs inside compute(), a collective each rank
        # would have to call, also a rank without finished episodes, and one per state. This is one all_reduce of
        # three numbers per logged point, and none in a single process.
        returns = np.concatenate(self._finished_returns) if self._finished_returns else np.zeros(0)
        lengths = np.concatenate(self._finished_lengths) if self._finished_lengths else np.zeros(0)
        self._finished_returns.clear()
        self._finished_lengths.clear()
        totals = np.array([len(returns), returns.sum(dtype=np.float64), lengths.sum(dtype=np.float64)])
        if self._world_size() > 1:
            totals = self.reduce_across_ranks(torch.as_tensor(totals, device=self.device)).cpu().numpy()
        return int(totals[0]), float(totals[1]), float(totals[2])

    # ------------------------------------------------------------------ acting and evaluation
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Actions for one observation or a batch of them (NumPy in, NumPy out).

        ``action_mask``: for discrete actions, which are allowed (True/1), shaped like the actions' logits
        (one row per observation in a batch), e.g. ``info["action_mask"]``.
        """
        if self.observation_space is None:
            raise RuntimeError("the model has no networks yet: train it, load a checkpoint, or call setup('fit')")
        obs_t = self.obs_to_tensor(obs)
        if isinstance(self.observation_space, gym.spaces.Dict):
            key, space = next(iter(self.observation_space.spaces.items()))
            single = obs_t[key].dim() == len(space.shape)
            batch = {k: v.unsqueeze(0) for k, v in obs_t.items()} if single else obs_t
        else:
            single = obs_t.dim() == len(self.observation_space.shape)
            batch = obs_t.unsqueeze(0) if single else obs_t
        mask = None
        if action_mask is not None:
            mask = torch.as_tensor(np.asarray(action_mask, dtype=bool), device=self.device)
            mask = mask.unsqueeze(0) if single else mask
        actions = self.predict_actions(batch, deterministic, mask)
        actions = actions.cpu().numpy()
        return actions[0] if single else actions

    def evaluate(self, envs: gym.vector.VectorEnv | None = None, n_episodes: int | None = None,
                 deterministic: bool | None = None, seed: int | None = None) -> EvaluationResult:
        """Play evaluation episodes (defaults: the module's eval envs and settings)."""
        envs = envs if envs is not None else self.eval_envs
        if envs is None:
            raise RuntimeError("no evaluation envs: pass `envs` or call setup('validate') first")
        deterministic = self.hparams.eval_deterministic if deterministic is None else deterministic
        was_training = self.training
        self.eval()
        try:
            return evaluate_episodes(lambda o, mask=None: self.act(o, deterministic, mask), envs,
                                     n_episodes or self.hparams.eval_episodes,
                                     seed=self._rank_seed() + EVAL_SEED_OFFSET if seed is None else seed)
        finally:
            self.train(was_training)

    def _evaluation_step(self) -> None:
        if self.trainer.sanity_checking or self.eval_envs is None:  # eval_episodes=0 turns evaluation off in fit
            return
        result = self.evaluate()
        if self._world_size() > 1:
            # Each rank played its own episodes: the metrics are those of all of them, the same on every rank
            # (ModelCheckpoint monitors them on each). Once per evaluation, so a gather of the episodes is cheap.
            results: list[Any] = [None] * self._world_size()
            torch.distributed.all_gather_object(results, result)
            result = EvaluationResult.combine(results)
        self.last_evaluation = result
        # sync_dist: the values are equal on every rank already; it only tells Lightning so (else it warns).
        self.log_dict(result.metrics("eval"), batch_size=1, prog_bar=True, sync_dist=True)
        self.log("step", float(self.env_steps), batch_size=1, sync_dist=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(EvaluationRequests(), batch_size=None, generator=_private_generator())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(EvaluationRequests(), batch_size=None, generator=_private_generator())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step()

    def on_fit_end(self) -> None:
        if self.last_evaluation is not None and self.trainer.is_global_zero:
            print(f"Evaluation after {self.env_steps} env steps: {self.last_evaluation.summary()}")

    def on_validation_end(self) -> None:
        if not self._fitting():  # `validate`: the result in one line (in fit, the epoch's metrics show it)
            self.on_fit_end()

    def on_test_end(self) -> None:
        self.on_fit_end()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rl_lightning"] = {
            "algorithm": type(self).__name__,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
        }
        if self.env_spaces is not None:
            checkpoint["rl_lightning"]["env_spaces"] = [space_to_dict(s) for s in self.env_spaces]
        if self.envs is not None and self._fitting():
            checkpoint["rl_lightning"]["run_state"] = self._gather_run_states()

    def _fitting(self) -> bool:
        return attached_trainer(self) is not None and self.trainer.state.fn == "fit"

    def run_state(self) -> dict[str, Any]:
        """What this process's next env steps and updates depend on beyond the weights, optimizers and counters.

        Subclasses add their own entries (``super().run_state()`` first) and read them back in ``load_run_state``.
        """
        return {
            "rng": rng_state(),
            "envs": env_state(self.envs),  # None: the envs restart on resume (Unity, async envs)
            "obs": self._obs,
            "finished_returns": list(self._finished_returns),
            "finished_lengths": list(self._finished_lengths),
            "action_mask": self._action_mask,
        }

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Restore ``run_state()`` into a module whose envs are built (called when a resumed fit starts)."""
        # Envs without saved state (Unity, async, Box2D) keep the new episodes setup started, with their
        # observations and masks. Stored transitions need no change: one-step targets bootstrap from the stored
        # next observation whether or not its episode goes on, and rollouts end at each batch.
        if state["envs"] is not None:
            restore_env_state(self.envs, state["envs"])
            self._obs = state["obs"]
            self._action_mask = state["action_mask"]
        self._finished_returns = list(state["finished_returns"])
        self._finished_lengths = list(state["finished_lengths"])
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
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> RLModule:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, after checking the checkpoint holds this algorithm.

        The model needs no environment: its networks are rebuilt from the spaces stored in the checkpoint.
        """
        checkpoint = load_checkpoint_file(checkpoint_path, mmap=True)
        cls._check_checkpoint(checkpoint, checkpoint_path)
        if rename_settings(checkpoint.get("hyper_parameters", {})):  # written before a setting was renamed
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            buffer.seek(0)
            checkpoint_path = buffer
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = attached_trainer(self)
        path = trainer.ckpt_path if trainer is not None else None
        state = self._check_checkpoint(checkpoint, path)
        # This run's settings are what runs (see settings_differences): those that define the networks (and, to
        # resume a fit, the saved run state) must be the checkpoint's, the others take this run's values.
        blocking, changed = settings_differences(type(self), state["algorithm"], checkpoint.get("hyper_parameters", {}),
                                                 dict(self.hparams), resuming=self._fitting())
        if blocking:
            where = f"checkpoint {str(path)!r}" if path is not None else "the checkpoint"
            raise CheckpointError(f"{where} was written with other settings than this run's, which must match to "
                                  f"{'resume' if self._fitting() else 'load'} it (checkpoint -> this run): "
                                  f"{'; '.join(blocking)}. Use the settings of the checkpoint's run (its config.yaml) "
                                  "or train a new run without ckpt_path")
        if changed and self._fitting():
            rank_zero_info("Resuming with this run's settings where they differ from the checkpoint's: "
                           + "; ".join(changed))
        # Lightning restores the optimizers' hyperparameters (learning rates, eps) with their state: this run's go back
        # in once training starts. Only when settings changed, so that a plain resume stays bit-identical.
        self._reapply_optimizer_settings = bool(changed) and self._fitting()
        spaces = space_from_dict(state["observation_space"]), space_from_dict(state["action_space"])
        if self.observation_space is not None and spaces != (self.observation_space, self.action_space):
            raise ConfigurationError(
                f"the checkpoint's model was trained on observations {spaces[0]} and actions {spaces[1]}, but this "
                f"run's env has observations {self.observation_space} and actions {self.action_space}: resume or "
                "evaluate it with the env it was trained on")
        self._attach_spaces(*spaces)
        if state.get("env_spaces") and self.env_spaces is None:
            self.env_spaces = tuple(space_from_dict(s) for s in state["env_spaces"])
        self.env_steps = state["env_steps"]
        self.episodes = state["episodes"]
        self._resume_state = None
        run_states = state.get("run_state")
        if run_states and self._fitting():
            rank = self.global_rank
            if len(run_states) != self._world_size():
                rank_zero_warn(f"the checkpoint was written by {len(run_states)} process(es), this run has "
                               f"{self._world_size()}: ranks beyond {len(run_states) - 1} start their envs and "
                               "generators afresh", stacklevel=1)
            if rank < len(run_states):
                self._resume_state = pickle.loads(run_states[rank])  # noqa: S301 - the run's own checkpoint
