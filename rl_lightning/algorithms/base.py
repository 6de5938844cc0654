"""The base every algorithm builds on: its settings, environments, the round loop, logging, acting and evaluation.

Beside it: ``schedule`` divides the env-step budget into rounds, batches and epochs; ``training_log`` accumulates
what a training point logs; ``checkpoints`` is what a checkpoint holds and how a run resumes; ``updates`` makes one
gradient step. The two families (``on_policy``, ``off_policy``) add collection and storage; the algorithm files
add their networks, acting and losses.
"""

from __future__ import annotations

import math
import os
import warnings
from abc import abstractmethod
from typing import Any, Literal

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from rl_lightning.callbacks import EpochProgress, RunSupport, ensure_last_checkpoint
from rl_lightning.algorithms.updates import GradientStepper
from rl_lightning.algorithms.spawn import build_networks_before_loading
from rl_lightning.algorithms.checkpoints import CheckpointedRun
from rl_lightning.algorithms.normalization import Normalization
from rl_lightning.algorithms.policy_interface import EVAL_SEED_OFFSET, PolicyInterface
from rl_lightning.algorithms.schedule import RoundSchedule
from rl_lightning.algorithms.training_log import TrainingLog
from rl_lightning.data.stream import RoundStream, private_generator
from rl_lightning.envs.checks import check_env_kwargs
from rl_lightning.envs.packages import import_env_packages
from rl_lightning.envs.factory import (EnvSource, check_env_source, is_function_label, make_vector_env, resolve_env,
                                      stored_env_setting)
from rl_lightning.envs.spaces import action_space_kind, check_action_space
from rl_lightning.envs.transforms import spaces_before_wrappers
from rl_lightning.errors import ConfigurationError
from rl_lightning.guards import check_collect_budget
from rl_lightning.run_folder import claim_and_lock
from rl_lightning.setting_ranges import (Count, EnvCopies, EpsilonValue, EvalEpisodes, LayerWidth, PositiveFloat,
                                         Seed, UnitInterval, check_settings)
from rl_lightning.evaluation import EvaluationEpisodes, EvaluationResult
from rl_lightning.trainer_options import check_trainer_options, fast_dev_run_batches
from rl_lightning.lightning_compat import (attached_trainer, batches_fetched_this_epoch,
                                           find_unused_parameters_under_ddp, logs_due, quiet_lightning_notices,
                                           set_max_epochs, world_size)

# Before any Trainer exists (it prints its advertisements when built), for the CLI and Python users alike.
quiet_lightning_notices()

# The dataloaders yield round counts and evaluation requests in the trainer process (collection itself runs in
# training_step, with the live policy): no worker processes, and an exact __len__ on purpose.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")

def resolve_seed(setting: int | None) -> int:
    """The seed a module runs with: its ``seed`` setting; when that is ``None``, Lightning's global seed
    (``seed_everything`` keeps it in the ``PL_GLOBAL_SEED`` environment variable, which DDP ranks inherit;
    ``lightning/fabric/utilities/seed.py``), else 0. A setting that differs from the global seed is warned about
    once: the setting wins."""
    global_seed = os.environ.get("PL_GLOBAL_SEED")
    if setting is None:
        return int(global_seed) if global_seed is not None else 0
    if global_seed is not None and int(global_seed) != setting and (setting, global_seed) not in _WARNED_SEEDS:
        _WARNED_SEEDS.add((setting, global_seed))
        rank_zero_warn(f"the model's seed={setting} differs from the global seed {global_seed} (seed_everything / "
                       "--seed_everything): the model's seed is used; leave it unset (null) to use the global one",
                       stacklevel=1)
    return setting


_WARNED_SEEDS: set[tuple[int, str]] = set()


def algorithms_acting_in(action_space: gym.Space) -> list[str]:
    """The library's algorithms (``RLModule`` subclasses in ``rl_lightning.algorithms``) acting in ``action_space``."""
    kind, found = action_space_kind(action_space), []
    classes = list(RLModule.__subclasses__())
    while classes:
        cls = classes.pop(0)
        classes.extend(cls.__subclasses__())
        # An algorithm, not a family base: it has its updates (abstract methods are not enforced on a LightningModule).
        if (cls.__module__.startswith("rl_lightning.algorithms.") and cls.train_round is not RLModule.train_round
                and kind in getattr(cls, "ACTION_SPACES", ())):
            found.append(cls.__name__)
    return found


class RLModule(PolicyInterface, CheckpointedRun):
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
        env_packages: modules imported before the env is made, for env suites that register their ids on import
            (``[minigrid]``, ``[ale_py]``; rl-baselines3-zoo's ``--gym-packages``). ``env: "package:EnvId"`` imports
            one package for one id the same way.
        wrappers: Gymnasium wrappers applied to each copy, innermost first: import paths, or
            ``{"class_path": ..., "init_args": {...}}``.
        seed: seeds the networks' initialisation, action sampling and the envs (copy ``i`` gets ``seed + i``;
            under DDP rank ``r``'s copies continue the numbering at ``seed + r * num_envs``). ``None`` takes
            Lightning's global seed (``seed_everything``, the CLI's ``--seed_everything``) when one is set, else 0.
        total_steps: training budget in environment steps, summed over all env copies (and DDP ranks).
        steps_per_epoch: environment steps per epoch (all ranks); evaluation and epoch-end checkpoints happen this
            often.
        eval_episodes: episodes played by each evaluation (``validate``, ``test``, and after each epoch of ``fit``),
            by each DDP rank; 0 disables evaluation during ``fit``.
        eval_num_envs: env copies the evaluation episodes are spread over.
        eval_deterministic: evaluate the policy's most likely action instead of sampling.
        eval_env_kwargs: keyword arguments for the evaluation env, overriding ``env_kwargs``.
        eval_wrappers: Gymnasium wrappers for the evaluation env only, applied after ``wrappers`` (same forms); they
            may differ from a checkpoint's, but must keep the spaces the model acts in (e.g. a rendering wrapper).
        eval_video_folder: record every evaluation episode as an MP4 file in this folder (Gymnasium's ``RecordVideo``
            on each evaluation copy, files ``copy<i>-episode-<k>.mp4``; the env is made with
            ``render_mode="rgb_array"`` unless ``eval_env_kwargs`` sets one; needs ``moviepy``:
            ``pip install -e ".[video]"``). In ``fit`` every epoch's evaluation is recorded, numbered on.
        log_interval: environment steps between logged training points (``run/*``, ``model/*``, ``time/*``);
            each point averages each diagnostic over the rounds (collect-then-update) since the previous one.
            Points are also written at every epoch's end, and only on batches Lightning writes logs on
            (``trainer.log_every_n_steps``; the CLI's default is 1).
            Logging every batch costs ~0.1 ms per metric in Lightning, as much as a small update.
        check_env: check a custom env class or factory (not a registered id, not Unity) once at setup with Gymnasium's
            env checker: an observation of the wrong shape or dtype stops the run naming the env and its space, other
            findings are warnings. About a millisecond for a small env; ``False`` skips it.
        step_timeout: seconds one step of the training or evaluation envs may take; a step that takes longer ends
            the run with an error naming the env (the last checkpoint stays). ``None`` (default): no limit. For envs
            built from single Gymnasium envs (sync: a timer signal, see ``rl_lightning.envs.checks``; async: the
            sub-env processes are killed); Unity's envs have ``env_kwargs.timeout_wait``.
        num_threads: torch's CPU threads (``torch.set_num_threads``) while the module trains or evaluates, put back
            afterwards. ``None``: the ``OMP_NUM_THREADS`` environment variable when set, else 1. One thread suits the
            small networks and batches of most RL runs (several threads cost more in synchronisation than they
            save, and lose badly on a busy machine); raise it for large image networks or batches on free cores.
            The same for the CLI, scripts and notebooks.
        cnn_layers: the conv stack that encodes image observations, one ``[out_channels, kernel, stride]`` per layer
            (each followed by a ReLU, then a linear layer; ``null``: Nature DQN's ``[[32, 8, 4], [64, 4, 2],
            [64, 3, 1]]``, for Atari-sized images). Small images need a smaller stack, e.g. MiniGrid's 7x7 views:
            ``[[16, 2, 1], [32, 2, 1], [64, 2, 1]]``.
        gamma: discount factor.
        reward_scale: rewards are multiplied by this for learning (episode statistics stay unscaled).
        max_grad_norm: clip each optimizer's gradient norm to this before it steps; ``None`` disables clipping.
        rounds_per_batch: rounds (collect, then update) per training batch. ``None`` chooses enough for about 256
            env steps per batch, 1 when a round has that many, never more than an epoch's worth. The updates, epochs
            and budget are those of one round per batch; several rounds share Lightning's per-batch work.
        normalize_observations: normalize observations with running statistics of the training envs' (as SB3's
            ``VecNormalize``), kept in the model: checkpointed, frozen in evaluation, applied by ``act`` and the
            ONNX export (``rl_lightning.algorithms.normalization``). A Box observation space of floats only.
        normalize_rewards: divide rewards for learning by the running standard deviation of the discounted return
            (``gamma``), as ``VecNormalize`` does (episode statistics stay unscaled; ``reward_scale`` applies after).
        clip_obs: normalized observations are clipped to [-clip_obs, clip_obs].
        clip_reward: normalized rewards are clipped to [-clip_reward, clip_reward].
        normalization_epsilon: added to the variances before their square root.
    """

    ROUND_UNIT: str
    """The setting that gives each sub-env's steps per round (``"n_steps"``, ``"train_freq"``)."""
    ACTION_SPACES: tuple[str, ...]
    """The kinds of action space the algorithm acts in (``rl_lightning.envs.spaces.ACTION_SPACE_KINDS``), checked before
    its networks are built."""
    BACKWARD_LEAVES_PARAMETERS_UNUSED = False
    """Whether a backward of the algorithm leaves some parameters without gradients (DDPG's critic loss, the actor).
    Under DDP, which by default waits for every parameter's gradient before it averages them ("Expected to have
    finished reduction ..." at the next backward), its unused-parameter detection then marks them ready instead; an
    explicit ``DDPStrategy(find_unused_parameters=...)`` is left as given."""

    MODEL_SETTINGS: tuple[str, ...] = ("env", "wrappers", "normalize_observations", "normalize_rewards", "cnn_layers")
    """Settings that define the networks or their spaces: a checkpoint loads only into a model with the same ones
    (subclasses add their network shapes)."""
    RESUME_SETTINGS: tuple[str, ...] = ("num_envs", "vectorization")
    """Settings the saved run state depends on (envs, buffers, optimizer kinds): resuming ``fit`` needs the same
    ones; evaluating does not."""

    def __init__(
        self,
        env: EnvSource = "CartPole-v1",
        num_envs: EnvCopies = 1,
        vectorization: Literal["sync", "async"] = "sync",
        env_kwargs: dict[str, Any] | None = None,
        env_packages: list[str] | None = None,
        wrappers: list[str | dict[str, Any]] | None = None,
        seed: Seed | None = None,
        total_steps: Count = 100_000,
        steps_per_epoch: Count = 10_000,
        eval_episodes: EvalEpisodes = 20,
        eval_num_envs: EnvCopies = 4,
        eval_deterministic: bool = True,
        eval_env_kwargs: dict[str, Any] | None = None,
        eval_wrappers: list[str | dict[str, Any]] | None = None,
        eval_video_folder: str | None = None,
        log_interval: Count = 1000,
        check_env: bool = True,
        step_timeout: PositiveFloat | None = None,
        num_threads: Count | None = None,
        cnn_layers: list[list[LayerWidth]] | None = None,
        gamma: UnitInterval = 0.99,
        reward_scale: PositiveFloat = 1.0,
        max_grad_norm: PositiveFloat | None = None,
        rounds_per_batch: Count | None = None,
        normalize_observations: bool = False,
        normalize_rewards: bool = False,
        clip_obs: PositiveFloat = 10.0,
        clip_reward: PositiveFloat = 10.0,
        normalization_epsilon: EpsilonValue = 1e-8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Every numeric setting against the range its annotation declares, here and in the algorithm's classes
        # (rl_lightning.setting_ranges); they check only what lies between settings themselves.
        check_settings(type(self), self.hparams)
        self.cnn_layers  # noqa: B018 - a malformed conv stack is refused here, before anything is built
        # An env class is kept as its import path: YAML-friendly and loadable with weights_only=True. A function that
        # cannot be imported (a lambda, a closure) is kept here and named by a label in the settings (checkpoints);
        # a model loaded with that label and no env acts and exports, building envs asks for the function.
        self.hparams.env = stored_env_setting(env)
        self.env_function = env if callable(env) and is_function_label(self.hparams.env) else None
        self.automatic_optimization = False
        import_env_packages(env_packages)  # before the id is looked up: importing them registers their ids
        resolved = None if is_function_label(env) else resolve_env(env)  # an unknown id fails here
        if resolved is not None:
            check_env_kwargs(env, resolved, env_kwargs)  # so does a key the env does not take
            check_env_kwargs(env, resolved, eval_env_kwargs, "eval_env_kwargs")
        self._env_checked = not check_env
        # A vector env class (Unity) brings its own sub-envs: their number is known once it is built.
        self.env_sets_num_envs = isinstance(resolved, type) and issubclass(resolved, gym.vector.VectorEnv)
        # Built with the networks, once the observation space is known (_attach_spaces).
        self.normalization: Normalization | None = None
        self.envs: gym.vector.VectorEnv | None = None
        self.eval_envs: gym.vector.VectorEnv | None = None
        self.observation_space: gym.Space | None = None
        self.action_space: gym.Space | None = None
        # The env's spaces before the `wrappers` entries: what an exported policy takes and gives (rl_lightning.export).
        self.env_spaces: tuple[gym.Space, gym.Space] | None = None
        self.env_steps = 0
        self.episodes = 0
        self._num_envs_by_rank: list[int] | None = None  # under DDP: each rank's training sub-envs, from setup
        self.training_log = TrainingLog()
        self._obs: np.ndarray | None = None  # the envs' current observations
        self._initial_info: dict[str, Any] = {}
        self._unity_stats_reducer: Any = None  # a Unity env's custom metrics over the ranks (rl_lightning.unity.stats)
        self.last_evaluation: EvaluationResult | None = None
        self.evaluation_episodes = EvaluationEpisodes()  # gathers the evaluation episodes of all ranks
        self._action_mask: np.ndarray | None = None  # the current observations' masks, if any (rl_lightning.envs.steps)
        # Whether the training envs give action masks (info["action_mask"] at their first reset), kept in checkpoints:
        # a plain ONNX export takes an action_masks input only then. None: not known (not trained yet, or a
        # checkpoint from before it was recorded).
        self.env_gives_action_masks: bool | None = None
        # Envs whose sub-envs do not all act at every step (Unity: agents between decisions, sub-envs without an
        # agent) say which rows hold a decision in info["decision"]; None: all of them, always.
        self._decision: np.ndarray | None = None
        self._stepper: GradientStepper | None = None
        self._threads_before: int | None = None  # torch's thread count before setup, put back in teardown
        # Weights for networks not built yet (ddp_spawn's launching process) build them first (algorithms/spawn.py).
        self.register_load_state_dict_pre_hook(build_networks_before_loading)

    # ------------------------------------------------------------------ algorithm interface
    @abstractmethod
    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Create the networks for these spaces (of a kind in ``ACTION_SPACES``); raise ``ConfigurationError`` for
        anything else the algorithm cannot handle."""

    @abstractmethod
    def collect_round(self) -> Any:
        """Step the envs for one round with the current policy, advance ``env_steps``, return what the round's
        updates train on."""

    @abstractmethod
    def train_round(self, data: Any) -> dict[str, Any]:
        """The updates of one round on ``collect_round()``'s data; returns the diagnostics to log."""

    OPTIMIZER_NAMES: tuple[str, ...] = ()
    """Names of ``configure_optimizers``' optimizers, in order: their learning rates are logged as ``lr/<name>``."""

    def optimizers_list(self) -> list[Any]:
        """``self.optimizers()`` as a list, also when ``configure_optimizers`` returned one optimizer."""
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def learning_rates(self) -> dict[str, float]:
        """``lr/<name>``: the learning rate of each optimizer (of its first parameter group) right now."""
        optimizers = self.optimizers_list()
        names = self.OPTIMIZER_NAMES if len(self.OPTIMIZER_NAMES) == len(optimizers) else [
            f"optimizer_{i}" for i in range(len(optimizers))]
        return {f"lr/{name}": float(opt.param_groups[0]["lr"]) for name, opt in zip(names, optimizers)}

    @abstractmethod
    def predict_actions(self, obs: torch.Tensor, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Env-ready actions for a batch of observations on ``self.device``.

        ``action_mask`` (bool, True = allowed, one row per observation) restricts discrete actions.
        """

    # ------------------------------------------------------------------ environments
    @property
    def seed(self) -> int:
        """The run's seed: the ``seed`` setting, else Lightning's global seed, else 0 (see ``resolve_seed``)."""
        return resolve_seed(self.hparams.seed)

    def _rank_seed(self) -> int:
        # Each DDP rank owns differently seeded envs: offset by the copies of lower ranks.
        return self.seed + self.global_rank * self.hparams.num_envs

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
        wrappers = [*(hp.wrappers or ()), *((hp.get("eval_wrappers") or ()) if evaluation else ())]
        video_folder = hp.get("eval_video_folder") if evaluation else None
        if video_folder is not None and world_size(self) > 1:
            video_folder = os.path.join(video_folder, f"rank{self.global_rank}")
        return make_vector_env(self.env_source, num_envs=num_envs, vectorization=hp.vectorization, seed=seed,
                               env_kwargs=kwargs, wrappers=wrappers, rank=self.global_rank,
                               exact_num_envs=not evaluation, step_timeout=hp.get("step_timeout"),
                               video_folder=video_folder)

    @property
    def env_source(self) -> EnvSource:
        """What the envs are built from: the ``env`` setting, or the function it names when that is not importable."""
        return self.env_function if self.env_function is not None else self.hparams.env

    def _attach_spaces(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        if self.observation_space is None:
            check_action_space(action_space, type(self).__name__, self.ACTION_SPACES,
                               algorithms_acting_in(action_space))
            self.build_networks(observation_space, action_space)
            hp = self.hparams
            if hp.get("normalize_observations") or hp.get("normalize_rewards"):
                self.normalization = Normalization(observation_space, hp.normalize_observations, hp.normalize_rewards,
                                                   hp.gamma, hp.clip_obs, hp.clip_reward, hp.normalization_epsilon)
            self.observation_space, self.action_space = observation_space, action_space
        elif (observation_space, action_space) != (self.observation_space, self.action_space):
            raise ConfigurationError(
                f"the env's spaces (observation {observation_space}, action {action_space}) differ from the "
                f"model's (observation {self.observation_space}, action {self.action_space})")

    @property
    def cnn_layers(self) -> list[list[int]] | None:
        """The ``cnn_layers`` setting, checked: each layer ``[out_channels, kernel, stride]`` (older checkpoints: None)."""
        layers = self.hparams.get("cnn_layers")
        if layers is not None and (not layers or any(len(layer) != 3 for layer in layers)):
            raise ConfigurationError(f"cnn_layers={layers!r} must be a non-empty list of [out_channels, kernel, "
                                     "stride] layers, e.g. [[16, 2, 1], [32, 2, 1]], or null for Nature DQN's")
        return layers

    @property
    def torch_threads(self) -> int:
        """The CPU threads the module runs with: the ``num_threads`` setting, else ``OMP_NUM_THREADS``, else 1."""
        setting = self.hparams.get("num_threads")
        if setting is not None:
            return setting
        variable = os.environ.get("OMP_NUM_THREADS", "")
        return int(variable) if variable.isdigit() and int(variable) > 0 else 1

    def setup(self, stage: str) -> None:
        # One thread policy for every way in (CLI, script, notebook): a notebook kept torch's default of one thread
        # per core and ran 20 times slower than the CLI on a busy 2-core machine. Put back in teardown.
        if self._threads_before is None:
            self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        # Envs are built here, not in __init__, so that load_from_checkpoint needs no env
        # and each DDP rank builds its own.
        if not self._env_checked:  # on an instance of its own: the training envs' seeds and state are untouched
            check_env_source(self.env_source, self.hparams.env_kwargs)
            self._env_checked = True
        if self.observation_space is None:
            torch.manual_seed(self.seed)  # the networks' initialisation, also for validate/test without fit
        if stage == "fit":
            torch.manual_seed(self.seed)
            if self.envs is None:
                self.envs = self.make_envs()
                obs, self._initial_info = self.envs.reset(seed=self._rank_seed())
                self._attach_spaces(self.envs.single_observation_space, self.envs.single_action_space)
                self._note_env_spaces(self.envs)
                self._obs = obs
                self._decision = self._initial_info.get("decision")
                self.env_gives_action_masks = "action_mask" in self._initial_info
                if self.normalization is not None:
                    self.normalization.envs_reset(obs, self.num_envs)
            if world_size(self) > 1:
                self._num_envs_by_rank = self._gather_num_envs()
                # After the networks: the same initial weights on every rank, different action and minibatch draws.
                torch.manual_seed(self._rank_seed())
            if attached_trainer(self) is not None:
                check_trainer_options(self.trainer)
            if self.BACKWARD_LEAVES_PARAMETERS_UNUSED:
                find_unused_parameters_under_ddp(attached_trainer(self))
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
            self._note_env_spaces(self.eval_envs, evaluation=True)

    def _note_env_spaces(self, envs: gym.vector.VectorEnv, evaluation: bool = False) -> None:
        if self.env_spaces is None:
            hp = self.hparams
            # Evaluation copies: the eval_wrappers and the video recorder sit outside the training wrappers.
            outer = (len(hp.get("eval_wrappers") or ()) + (hp.get("eval_video_folder") is not None)) if evaluation else 0
            self.env_spaces = spaces_before_wrappers(envs, len(hp.wrappers or ()) + outer)

    def _gather_num_envs(self) -> list[int]:
        # Once per fit, so that counting the global env steps of each batch needs no collective. Unity ranks can
        # have different agent counts; every rank still collects one batch per training step.
        gathered: list[Any] = [None] * world_size(self)
        torch.distributed.all_gather_object(gathered, self.num_envs)
        return gathered

    def reduce_across_ranks(self, tensor: torch.Tensor, op: Literal["sum", "mean"] = "sum") -> torch.Tensor:
        """``tensor`` summed (or averaged) over the DDP ranks; itself, with no collective, in a single process.

        Every rank must call it at the same point, as with any collective.
        """
        if world_size(self) == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor.clone(), reduce_op=op)  # Lightning reduces in place

    def teardown(self, stage: str) -> None:
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
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

        trainer = attached_trainer(self)
        if trainer is not None and trainer.state.fn == "fit":
            claim_and_lock(trainer)  # a new run's own folder, and no other fit writing into it
            ensure_last_checkpoint(trainer)  # last.ckpt current whatever checkpoint callbacks the trainer has
        callbacks: list[L.Callback] = [RunSupport(), EpochProgress()]
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
        """Observations as tensors on the module's device: uint8 (images) stays uint8, the rest in the module's dtype
        (float32; float64 or bfloat16 under Lightning's "64-true" / "bf16-true" precision: ``rl_lightning.precision``)."""
        if isinstance(obs, dict):
            return {k: self.obs_to_tensor(v) for k, v in obs.items()}
        obs = np.asarray(obs)
        dtype = torch.uint8 if obs.dtype == np.uint8 else self.dtype
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
        """How the budget divides into rounds, batches and epochs (with the envs' real count, once they are built).

        Under ``fast_dev_run=N`` an epoch is N batches."""
        hp = self.hparams
        steps_per_epoch, rounds_per_batch = hp.steps_per_epoch, self.rounds_per_batch
        dev_batches = fast_dev_run_batches(attached_trainer(self))
        if dev_batches:
            steps_per_epoch = dev_batches * rounds_per_batch * self.round_steps
        return RoundSchedule(hp.total_steps, steps_per_epoch, self.round_steps, rounds_per_batch)

    def epoch_batches(self) -> list[int]:
        """The rounds of each batch of the epoch starting now (the same on every DDP rank: the counts are global)."""
        return self.schedule.epoch_batches(self.env_steps)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RoundStream(self.epoch_batches), batch_size=None, num_workers=0,
                          generator=private_generator())

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
        elif max_epochs - self.current_epoch < needed and not fast_dev_run_batches(self.trainer):
            warnings.warn(f"trainer.max_epochs={max_epochs} stops training before total_steps="
                          f"{self.hparams.total_steps} env steps ({needed} epochs of {self.hparams.steps_per_epoch} "
                          "steps needed); set trainer.max_epochs=-1 to let total_steps end training", stacklevel=1)
        self.training_log.restart_clock(self.env_steps)
        self._stepper = GradientStepper(self)
        # Last, right before the first batch: after Lightning restored the weights, optimizers and loops, with
        # nothing between it and the first env step drawing random numbers.
        self.restore_run_state()

    def training_step(self, rounds: int) -> None:
        """Run ``rounds`` rounds (the dataloader's item): each collects with the live policy, then updates on what
        it collected; then write a training point if one is due (``log_training``)."""
        for _ in range(rounds):
            self.log_training(self.train_round(self.collect_round()), end_of_batch=False)
        if self.normalization is not None and world_size(self) > 1:  # one collective per batch
            self.normalization.merge_ranks(self.all_gather)
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
    @property
    def episode_listeners(self) -> list[Any]:
        """Called with the returns of the episodes of each env step that ended some (e.g. a curriculum's callback)."""
        return self.training_log.episode_listeners

    def record_episodes(self, info: dict[str, Any]) -> None:
        """Keep the returns and lengths of episodes that ended in this env step (from ``RecordEpisodeStatistics``).

        They are counted in ``episodes`` and logged by the next ``log_training``, with those of the other ranks.
        """
        self.training_log.record_episodes(info)

    def _log_due(self) -> bool:
        """Whether this batch writes a training point (see ``log_interval``)."""
        trainer = self.trainer
        if (trainer.should_stop or self.env_steps >= self.hparams.total_steps
                or batches_fetched_this_epoch(trainer) >= trainer.num_training_batches):
            return True  # the epoch's (or the run's) last batch: epoch-end callbacks see fresh values
        since = self.training_log.steps_since_point(self.env_steps)
        if since is not None and since < self.hparams.log_interval:
            return False
        return logs_due(trainer)

    def log_training(self, metrics: dict[str, torch.Tensor | float], end_of_batch: bool = True) -> None:
        """Log the algorithm's diagnostics with episode statistics and throughput, against env steps.

        ``training_step`` calls it with each round's diagnostics (``metrics``, this rank's: rank 0's reach the
        logger) and at the end of every batch, when a point may be written: each diagnostic's mean over the rounds
        that gave it since the last point, every ``log_interval`` env steps (``TrainingLog``). The episode
        statistics are those of the episodes all ranks finished since the last point. Under DDP every rank writes
        its points on the same batches (the rule depends only on the global step counts), as the reduction of the
        episode statistics needs.
        """
        self.training_log.add_round(metrics)
        if not end_of_batch or (attached_trainer(self) is not None and not self._log_due()):
            return
        reduce = (lambda t: self.reduce_across_ranks(t.to(self.device))) if world_size(self) > 1 else None
        means, (count, return_sum, length_sum), rate = self.training_log.point(self.env_steps, reduce)
        if count > 0:
            self.episodes += count
            self.log("run/score", return_sum / count, prog_bar=True, batch_size=1)
            self.log("run/episode_length", length_sum / count, batch_size=1)
            self.log("run/episodes", float(self.episodes), batch_size=1)
        if self.env_sets_num_envs:  # a vector env of its own (Unity) may send custom metrics
            from rl_lightning.unity.stats import training_point_stats  # mlagents_envs only when needed

            self.log_dict(training_point_stats(self), batch_size=1)  # unity/<key>: what the build's StatsRecorder sent
        if rate is not None:
            self.log("time/steps_per_second", rate, prog_bar=True, batch_size=1)
        self.log_dict(means, batch_size=1)
        if attached_trainer(self) is not None:
            self.log_dict(self.learning_rates(), batch_size=1)
        self.log("env_steps", float(self.env_steps), prog_bar=True, logger=False, batch_size=1)
        # Lightning uses a logged "step" as the logger's x-axis: environment steps, not optimizer steps.
        self.log("step", float(self.env_steps), batch_size=1)
