"""What users call on a trained model (``act``, ``forward``, ``evaluate``) and the validation/test hooks that play
evaluation episodes, as a mixin of ``RLModule`` (which provides the networks, spaces, envs and settings it reads)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from rl_lightning.algorithms.inputs import observation_batch
from rl_lightning.data.stream import EvaluationRequests, private_generator
from rl_lightning.envs.spaces import to_space_actions
from rl_lightning.evaluation import EvaluationResult, evaluate_episodes
from rl_lightning.lightning_compat import fitting
from rl_lightning.precision import host_array

EVAL_SEED_OFFSET = 10_000
"""Evaluation envs are seeded apart from training envs so they never replay the same episodes."""


class PolicyInterface(L.LightningModule):
    """Acting and evaluating: ``act`` (NumPy), ``forward`` (tensors: ``model(obs)``, ``trainer.predict``, exports),
    ``evaluate``, and the ``validate``/``test`` steps (evaluation episodes, reduced over DDP ranks)."""

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Actions for one observation or a batch of them (NumPy in, NumPy out).

        ``action_mask``: for discrete actions, which are allowed (True/1), shaped like the actions' logits
        (one row per observation in a batch), e.g. ``info["action_mask"]``.
        """
        mask = None if action_mask is None else torch.as_tensor(np.asarray(action_mask, dtype=bool), device=self.device)
        return host_array(self._actions(self.obs_to_tensor(obs), deterministic, mask))

    def forward(self, obs: Any, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic (most likely) actions for a batch of observations, as a tensor: for ``model(obs)``,
        ``trainer.predict``, ``to_onnx`` and ``to_torchscript``.

        ``obs``: a tensor (or a dict of them for a Dict space; NumPy arrays too), shaped ``(batch, *space.shape)`` or
        one observation; moved to the module's device and, unless uint8 (images), its dtype. Returns what ``act``
        returns, as a tensor: Discrete action indices (int64), MultiDiscrete index rows, Box actions clipped or scaled
        to the bounds; a hybrid space's single row (the continuous values, then the branch indices).
        ``action_mask`` (bool, True = allowed) restricts discrete actions.
        """
        return self._actions(self._obs_tensors(obs), True, None if action_mask is None
                             else action_mask.to(self.device, torch.bool))

    def _actions(self, obs: Any, deterministic: bool, action_mask: torch.Tensor | None) -> torch.Tensor:
        """``act`` and ``forward``: shapes checked, observations normalized with the frozen statistics (when the
        model normalizes them), actions in the env's terms (a Discrete start added)."""
        if self.observation_space is None:
            raise RuntimeError("the model has no networks yet: train it, load a checkpoint, or call setup('fit')")
        batch, single = observation_batch(self.observation_space, obs)
        if self.normalization is not None:
            batch = self.normalization.normalize_tensor(batch)
        if action_mask is not None and single:
            action_mask = action_mask.unsqueeze(0)
        actions = to_space_actions(self.predict_actions(batch, deterministic, action_mask), self.action_space)
        return actions[0] if single else actions

    def _obs_tensors(self, obs: Any) -> Any:
        """``obs_to_tensor`` for tensors too: on the module's device, floats in its dtype (a no-op when they are)."""
        if isinstance(obs, dict):
            return {k: self._obs_tensors(v) for k, v in obs.items()}
        if not isinstance(obs, torch.Tensor):
            return self.obs_to_tensor(obs)
        return obs.to(self.device, None if obs.dtype == torch.uint8 else self.dtype)

    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> torch.Tensor:
        """``trainer.predict``: the deterministic actions (``forward``) of each batch of the dataloaders given to it:
        observations, a one-element tuple of them (a ``TensorDataset``'s), or ``(observations, action_mask)``."""
        if isinstance(batch, (list, tuple)):
            return self(*batch)
        return self(batch)

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
        # Each rank plays its own episodes: the metrics are those of all of them, the same on every rank
        # (ModelCheckpoint monitors them on each).
        self.evaluation_episodes.update(self.evaluate())
        result = self.evaluation_episodes.compute()
        self.evaluation_episodes.reset()
        self.last_evaluation = result
        # sync_dist: the values are equal on every rank already; it only tells Lightning so (else it warns).
        self.log_dict(result.metrics("eval"), batch_size=1, prog_bar=True, sync_dist=True)
        self.log("step", float(self.env_steps), batch_size=1, sync_dist=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(EvaluationRequests(), batch_size=None, generator=private_generator())

    def test_dataloader(self) -> DataLoader:
        return DataLoader(EvaluationRequests(), batch_size=None, generator=private_generator())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step()

    def on_fit_end(self) -> None:
        if self.last_evaluation is not None and self.trainer.is_global_zero:
            print(f"Evaluation after {self.env_steps} env steps: {self.last_evaluation.summary()}")
        if fitting(self) and self.trainer.is_global_zero and self.env_steps < self.hparams.total_steps:
            from rl_lightning.trainer_options import early_stop_reason

            total = self.hparams.total_steps
            print(f"Training stopped early, after {self.env_steps} of total_steps={total} env steps "
                  f"({100 * self.env_steps / total:.0f}%): {early_stop_reason(self.trainer, self)}", flush=True)

    def on_validation_end(self) -> None:
        if not fitting(self):  # `validate`: the result in one line (in fit, the epoch's metrics show it)
            self.on_fit_end()

    def on_test_end(self) -> None:
        self.on_fit_end()
