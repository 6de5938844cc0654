"""What DQN and DDPG share: a replay buffer fed by the envs, and minibatches sampled from it.

A round steps the envs with ``rl_lightning.envs.steps``, acts with the algorithm's ``random_actions`` or
``explorer`` (NumPy in and out) and stores the transitions in a ``ReplayBuffer`` (``rl_lightning.data.replay``;
through ``DecisionTransitions`` for envs whose rows do not all decide at every step).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from rl_lightning.algorithms.base import RLModule
from rl_lightning.data.replay import DecisionTransitions, ReplayBuffer
from rl_lightning.data.rollout import minibatch
from rl_lightning.envs.spaces import to_action_indices
from rl_lightning.envs.steps import action_masks, step_envs
from rl_lightning.errors import ConfigurationError
from rl_lightning.guards import (all_finite, check_actions, divergence_suspects, env_label, first_non_finite,
                                 non_finite_env_fault)
from rl_lightning.lightning_compat import attached_trainer, fitting, world_size
from rl_lightning.setting_ranges import BatchSize, Count, LayerWidth, NonNegativeCount, UpdatesPerRound
from rl_lightning.signals import stop_exception, termination_requested
from rl_lightning.trainer_options import fast_dev_run_batches


class OffPolicyModule(RLModule):
    """Learns from a replay buffer.

    Each round is ``train_freq`` steps of every env copy stored in the buffer,
    followed by ``gradient_steps`` updates on minibatches of ``batch_size``
    sampled uniformly from it (none before ``learning_starts`` env steps, which
    are played with uniformly random actions, or with the policy and its
    exploration when ``random_warmup`` is off). With ``train_freq=1`` a round is
    one env step: ``rounds_per_batch`` (see ``RLModule``) shares Lightning's
    per-batch work among many of them.

    Under DDP each rank fills its own replay buffer from its own envs and samples
    its minibatches from it; checkpoints hold every rank's buffer.

    Args:
        buffer_size: transitions the replay buffer holds (all env copies of a rank together; each DDP rank has one).
        batch_size: transitions per gradient step.
        learning_starts: env steps before the first update.
        random_warmup: play uniformly random actions until ``learning_starts``; ``False`` plays the (untrained)
            policy with its exploration (epsilon, action noise) from the first step, as programs that only delay
            training do.
        train_freq: steps of each env copy per round (between training phases).
        gradient_steps: gradient steps per round.
        hidden_sizes: hidden layer sizes of the MLPs (after the conv net for images).
        activation: hidden activation: tanh, relu, elu, gelu, silu or leaky_relu.
        cnn_features: width of the linear layer after the conv net, for image observations.
        image_layout: ``"hwc"``, ``"chw"`` or ``"auto"`` (channels are the smaller end of the shape).
        buffer_in_checkpoint: save the replay buffer in checkpoints (switch off for very large buffers).
    """

    ROUND_UNIT = "train_freq"
    # Whether the buffer keeps each observation's action mask beside the next one's (for updates that take
    # expectations over the allowed actions at ``obs``).
    STORES_ACTION_MASKS = False

    MODEL_SETTINGS = RLModule.MODEL_SETTINGS + ("hidden_sizes", "activation", "cnn_features", "image_layout")
    RESUME_SETTINGS = RLModule.RESUME_SETTINGS + ("buffer_size",)

    def __init__(
        self,
        buffer_size: Count = 1_000_000,
        batch_size: BatchSize = 256,
        learning_starts: NonNegativeCount = 1000,
        random_warmup: bool = True,
        train_freq: Count = 1,
        gradient_steps: UpdatesPerRound = 1,
        hidden_sizes: list[LayerWidth] = [256, 256],  # noqa: B006 (a list so the CLI writes it back as YAML)
        activation: str = "relu",
        cnn_features: LayerWidth = 512,
        image_layout: Literal["auto", "hwc", "chw"] = "auto",
        buffer_in_checkpoint: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size > buffer_size:
            raise ConfigurationError(f"batch_size={batch_size} is larger than buffer_size={buffer_size}; "
                                     "lower batch_size or raise buffer_size")
        if batch_size > learning_starts:
            raise ConfigurationError(f"batch_size={batch_size} is larger than learning_starts={learning_starts}: the "
                                     "first updates would sample fewer distinct transitions than a batch; raise "
                                     "learning_starts to at least batch_size")
        self.buffer: ReplayBuffer | None = None
        self._saved_buffer: dict[str, Any] | None = None
        self._decisions = DecisionTransitions()

    # ------------------------------------------------------------------ acting, per algorithm
    @abstractmethod
    def random_actions(self) -> tuple[np.ndarray, np.ndarray]:
        """Uniform random ``(env_actions, stored_actions)`` for every env copy (before ``learning_starts``)."""

    @abstractmethod
    def explorer(self) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
        """What a round explores with: the envs' observations (as they give them: NumPy, a dict of arrays for Dict
        spaces) -> ``(env_actions, stored_actions)``, NumPy arrays with one row per env copy."""

    def uniform_discrete_actions(self) -> tuple[np.ndarray, np.ndarray]:
        """``random_actions`` for a Discrete action space: uniform over each env copy's allowed actions, drawn in
        the space (from its ``start``) and stored from 0."""
        if self._action_mask is None:
            actions = self.envs.action_space.sample()
        else:
            actions = np.array([self.envs.single_action_space.sample(mask=m.astype(np.int8))
                                for m in self._action_mask])
        return actions, to_action_indices(actions, self.action_space)

    def on_episodes_end(self, ended: np.ndarray) -> None:
        """Called with the mask of env copies whose episode ended this step (e.g. to reset noise)."""

    # ------------------------------------------------------------------ buffer and collection
    def setup(self, stage: str) -> None:
        envs = self.envs
        super().setup(stage)
        if self.envs is not envs:  # new envs, new episodes: no transition of the old ones is left open
            self._decisions = DecisionTransitions()
        if stage == "fit":
            hp = self.hparams
            if (self.learning_starts >= hp.total_steps and self.env_steps < hp.total_steps
                    and not fast_dev_run_batches(attached_trainer(self))):
                raise ConfigurationError(
                    f"learning_starts={hp.learning_starts} >= total_steps={hp.total_steps}: the run would only fill "
                    "the replay buffer and never update the networks; lower learning_starts or raise total_steps")
        if stage == "fit" and self.buffer is None:
            self._action_mask = mask = action_masks(self._initial_info, self.num_envs)
            # Allocated (after a memory check) where the module will live, before training starts.
            device = self.trainer.strategy.root_device if attached_trainer(self) is not None else torch.device("cpu")
            self.buffer = ReplayBuffer(self.hparams.buffer_size, self.observation_space, self.action_space,
                                       device=device, action_mask_size=None if mask is None else mask.shape[-1],
                                       current_action_masks=self.STORES_ACTION_MASKS)
            if self._saved_buffer is not None:
                self.buffer.load_state_dict(self._saved_buffer)
                self._saved_buffer = None

    def gradient_rounds_in_budget(self) -> int:
        """Rounds of the whole budget that end with updates: those after which ``env_steps >= learning_starts``."""
        rounds = math.ceil(self.hparams.total_steps / self.round_steps)
        first = max(1, math.ceil(self.learning_starts / self.round_steps))
        return max(0, rounds - first + 1)

    @property
    def learning_starts(self) -> int:
        """The ``learning_starts`` setting; under ``fast_dev_run``, one minibatch, so its few batches reach updates."""
        if fast_dev_run_batches(attached_trainer(self)):
            return self.hparams.batch_size
        return self.hparams.learning_starts

    @torch.no_grad()
    def collect_round(self) -> dict[str, Any]:
        if termination_requested(self):
            # Asked during the last update (or between batches): stop before anything of this round is drawn, so
            # that a resumed run is the uninterrupted one bit for bit.
            raise stop_exception()
        hp = self.hparams
        envs, buf = self.envs, self.buffer
        explore, obs = self.explorer(), self._obs
        # With normalization the buffer keeps the envs' raw observations and rewards, normalized when sampled (as
        # SB3 does): a transition stored long ago is then read with the statistics the policy acts with now.
        norm = self.normalization
        acting_obs = obs if norm is None else norm.begin_round(obs)
        start_rows, start_steps = buf.added, self.env_steps
        learning_starts = self.learning_starts
        # Envs whose rows do not all decide (Unity): per env step, the rows written before it and their sub-envs.
        trace: list[tuple[int, np.ndarray]] = []
        label = env_label(hp)
        for _ in range(hp.train_freq):
            if hp.random_warmup and self.env_steps < learning_starts:
                env_actions, stored = self.random_actions()
            else:
                env_actions, stored = explore(acting_obs)
                # Before the env sees them: a NaN action would come back as the env's NaN observation.
                check_actions(stored, obs, acting_obs, label, self.env_steps, self.num_envs_all_ranks,
                              lambda: divergence_suspects(self))
            step = step_envs(envs, env_actions, self._action_mask)
            if norm is not None:
                norm.observe_rewards(step.reward, step.ended)  # the statistics only: stored raw
            reward = step.reward * hp.reward_scale if hp.reward_scale != 1.0 else step.reward
            # A finished episode's real next observation is its final one (the envs already reset), with its mask.
            next_obs, next_mask = step.transition_obs(), step.transition_action_mask()
            mask = self._action_mask if self.STORES_ACTION_MASKS else None  # obs's own
            if self._decision is None and step.decision is None:
                buf.add(obs, stored, reward, next_obs, step.terminated, next_mask, mask)
            else:
                rows_before = buf.added
                stored_rows = self._decisions.store(buf, self._decision, obs, stored, reward, next_obs, step.terminated,
                                                    next_mask, step.decision | step.ended, mask)
                trace.append((rows_before, stored_rows))
                self._decision = step.decision
            if step.ended.any():
                self.record_episodes(step.info)
                self.on_episodes_end(step.ended)
            obs, self._action_mask = step.obs, step.action_mask
            acting_obs = obs if norm is None else norm.observe(obs)
            self.env_steps += self.num_envs_all_ranks  # all ranks' steps: they collect in lockstep
            if termination_requested(self):
                # SIGTERM or Ctrl-C: stop collecting; the stored transitions stay, the round's updates are not made.
                self._obs = obs
                if norm is not None:
                    norm.end_round()
                raise stop_exception()
        self._obs = obs
        if norm is not None:
            norm.end_round()
        # One vectorised test per stored field, before anything is sampled from them.
        self.check_stored_finite(start_rows, start_steps, trace)
        if self.env_steps < learning_starts:
            return {}  # still warming up: nothing to sample, and train_round makes no update
        batch = buf.sample(hp.gradient_steps * hp.batch_size)
        if norm is not None:
            for key in ("obs", "next_obs"):
                batch[key] = norm.normalize_tensor(batch[key])
            batch["rewards"] = norm.scale_rewards_tensor(batch["rewards"])
        return batch

    def check_stored_finite(self, start_rows: int, start_steps: int, trace: list[tuple[int, np.ndarray]]) -> None:
        """Raise ``EnvironmentFault`` if a transition stored since the buffer had ``start_rows`` rows written holds
        NaN or inf in an observation, next observation (the final one where an episode ended) or reward.

        ``trace``: per env step, the rows written before it and the sub-envs it stored (empty when every step
        stored one row per sub-env), to name the sub-env and the env step in the message.
        """
        skipped, fields = self.buffer.rows_since(start_rows)
        if all_finite(fields):
            return
        name, index, value = first_non_finite(fields)
        row = start_rows + skipped + index[0]
        if not trace:
            step, sub_env = divmod(row - start_rows, self.num_envs)
        else:
            step = next(i for i, (before, subs) in enumerate(trace) if before <= row < before + len(subs))
            sub_env = int(trace[step][1][row - trace[step][0]])
        head, _, key = name.partition(".")
        field = "reward" if head == "rewards" else "observation"  # a next one is what the env returned
        # The env step that returned it: the transition's own for its reward and next observation, the one
        # before for its observation (a new episode's first, from an autoreset; -1: the envs' reset).
        env_steps = start_steps + (step - (head == "obs")) * self.num_envs_all_ranks
        raise non_finite_env_fault(env_label(self.hparams), f"{field}[{key!r}]" if key else field, value, sub_env,
                                   max(env_steps, -1))

    def minibatches(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``gradient_steps`` minibatches of a sampled training batch."""
        b = self.hparams.batch_size
        return [minibatch(batch, slice(i * b, (i + 1) * b)) for i in range(self.hparams.gradient_steps)]

    def buffer_metrics(self) -> dict[str, float]:
        return {"buffer/fill": self.buffer.size / self.buffer.capacity}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.hparams.buffer_in_checkpoint and self.buffer is not None:
            buffers = self._gather_buffer_states()
            if buffers is not None:  # rank 0, the one that writes the file
                checkpoint["rl_lightning"]["replay_buffer"] = buffers[0]
                if len(buffers) > 1:
                    checkpoint["rl_lightning"]["replay_buffers_of_other_ranks"] = buffers[1:]

    def _gather_buffer_states(self) -> list[dict[str, Any]] | None:
        """Every rank's buffer state, in rank order, on rank 0 (the others get None).

        A gather, not an all-gather: only the rank that writes the checkpoint holds all buffers in memory.
        Lightning calls ``on_save_checkpoint`` on every rank, so every rank takes part.
        """
        mine = self.buffer.state_dict()  # on the CPU: no device of another rank ends up in the pickle
        if world_size(self) == 1 or not fitting(self):
            return [mine]
        gathered: list[Any] | None = [None] * world_size(self) if self.global_rank == 0 else None
        torch.distributed.gather_object(mine, gathered, dst=0)
        return gathered

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["rl_lightning"]
        saved = state.get("replay_buffer")
        if saved is not None and fitting(self):
            # Each rank resumes with its own buffer.
            buffers = [saved, *state.get("replay_buffers_of_other_ranks", [])]
            if len(buffers) != world_size(self):
                rank_zero_warn(f"the checkpoint holds the replay buffers of {len(buffers)} process(es), this run has "
                               f"{world_size(self)}: rank r resumes with a copy of saved rank r % {len(buffers)}'s",
                               stacklevel=1)
            saved = buffers[self.global_rank % len(buffers)]
        if saved is not None and self.buffer is not None:
            self.buffer.load_state_dict(saved)
        else:
            self._saved_buffer = saved  # loaded once setup has built the buffer
