"""What PPO and A2C share: an actor-critic, rollout collection with GAE, optimizers and schedules.

A rollout steps the envs with ``rl_lightning.envs.steps``, acts through the policy's rollout actor
(``ActorCritic.rollout_actor``, ``rl_lightning.networks.acting``) and stores each step in a ``RolloutBuffer``
(``rl_lightning.data.rollout``), all in NumPy until ``RolloutBuffer.finish`` moves the rollout to the device.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from rl_lightning.algorithms.base import RLModule
from rl_lightning.algorithms.updates import make_optimizer
from rl_lightning.precision import fused_optimizers_allowed, host_array
from rl_lightning.data.replay import Obs, storage_dtype
from rl_lightning.data.rollout import RolloutBuffer, check_rollout_memory
from rl_lightning.envs.spaces import is_hybrid
from rl_lightning.envs.steps import EnvStep, action_masks, step_envs
from rl_lightning.errors import ConfigurationError, EnvironmentFault
from rl_lightning.guards import (NonFiniteAction, all_finite, check_actions, check_collected, divergence_suspects,
                                 env_label, first_non_finite, non_finite_env_fault, non_finite_weights, obs_fields)
from rl_lightning.lightning_compat import attached_trainer
from rl_lightning.setting_ranges import (Count, Decay, LayerWidth, LearningRate, LogStd, LossWeight, PositiveFloat,
                                        UnitInterval)
from rl_lightning.networks.actor_critic import ActorCritic, to_env_action
from rl_lightning.signals import stop_exception, termination_requested

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}


class OnPolicyModule(RLModule):
    """An actor-critic trained on rollouts of ``n_steps`` per env copy, with advantages from GAE.

    Each round is a rollout of ``n_steps`` per env copy, collected with the
    current policy right before the update that uses it.

    Observations may be a Box (vectors or images) or a Dict of them. Envs that
    give ``info["action_mask"]`` (True/1 = allowed; for ``MultiDiscrete`` the
    branches' masks side by side) have forbidden actions never sampled: the
    mask of each observation is stored with it and applied again in the update
    and when acting (``act``, evaluation).

    Hybrid action spaces (ML-Agents' continuous + discrete branches, ``hybrid_action_space``) get a Gaussian
    for the continuous part and categorical branches (``HybridDistribution``); the rollout stores each action
    as one float row (continuous values, then branch indices), the env and ``act`` get the space's dict.

    Args:
        n_steps: steps per env copy in each rollout (each round).
        gae_lambda: GAE lambda; 0 gives one-step TD advantages, 1 Monte-Carlo ones.
        learning_rate: actor learning rate (the only one with ``shared_trunk``).
        critic_learning_rate: critic learning rate; ``None`` uses ``learning_rate``.
        lr_schedule: ``"linear"`` anneals learning rates to 0 over ``total_steps``.
        optimizer: ``"adam"``, ``"rmsprop"`` or ``"sgd"``.
        optimizer_eps: epsilon of Adam/RMSprop.
        rmsprop_alpha: smoothing constant of RMSprop.
        hidden_sizes: hidden layer sizes of the actor and critic bodies (or of the shared trunk).
        activation: hidden activation: tanh, relu, elu, gelu, silu or leaky_relu.
        shared_trunk: actor and critic share one body and one optimizer (losses are summed).
        ortho_init: orthogonal initialisation (gain sqrt(2) hidden, 0.01 policy head, 1 value head);
            False keeps PyTorch's default initialisation.
        log_std_init: initial log standard deviation of Gaussian (Box) policies.
        ent_coef: entropy bonus coefficient.
        vf_coef: value loss coefficient.
        value_loss: ``"mse"`` or ``"smooth_l1"`` between predicted values and returns.
        max_grad_norm: clip each optimizer's gradient norm to this; ``None`` disables clipping.
        normalize_advantage: standardise advantages (per minibatch).
    """

    ROUND_UNIT = "n_steps"
    ACTION_SPACES = ("discrete", "multi_discrete", "box", "hybrid")

    @property
    def OPTIMIZER_NAMES(self) -> tuple[str, ...]:  # noqa: N802 - the base's declaration, here depending on a setting
        return ("actor_critic",) if self.hparams.shared_trunk else ("actor", "critic")

    MODEL_SETTINGS = RLModule.MODEL_SETTINGS + ("hidden_sizes", "activation", "shared_trunk")
    RESUME_SETTINGS = RLModule.RESUME_SETTINGS + ("optimizer",)

    def __init__(
        self,
        n_steps: Count = 128,
        gae_lambda: UnitInterval = 0.95,
        learning_rate: LearningRate = 3e-4,
        critic_learning_rate: LearningRate | None = None,
        lr_schedule: Literal["constant", "linear"] = "constant",
        optimizer: Literal["adam", "rmsprop", "sgd"] = "adam",
        optimizer_eps: PositiveFloat = 1e-5,
        rmsprop_alpha: Decay = 0.99,
        hidden_sizes: list[LayerWidth] = [64, 64],  # noqa: B006 (a list so the CLI writes it back as YAML)
        activation: str = "tanh",
        shared_trunk: bool = False,
        ortho_init: bool = True,
        log_std_init: LogStd = 0.0,
        ent_coef: LossWeight = 0.0,
        vf_coef: LossWeight = 0.5,
        value_loss: Literal["mse", "smooth_l1"] = "mse",
        max_grad_norm: PositiveFloat | None = 0.5,
        normalize_advantage: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_grad_norm=max_grad_norm, **kwargs)
        if optimizer not in OPTIMIZERS:
            raise ConfigurationError(f"optimizer={optimizer!r}: choose one of {sorted(OPTIMIZERS)}")
        if value_loss not in ("mse", "smooth_l1"):
            raise ConfigurationError(f"value_loss={value_loss!r}: choose 'mse' or 'smooth_l1'")
        self.policy: ActorCritic | None = None
        self.rollout: RolloutBuffer | None = None

    @property
    def rollout_size(self) -> int:
        """Transitions in one rollout of this process: ``n_steps`` per sub-env."""
        return self.hparams.n_steps * self.num_envs

    def build_networks(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        hp = self.hparams
        self.policy = ActorCritic(observation_space, action_space, hp.hidden_sizes, hp.activation, hp.shared_trunk,
                                  hp.ortho_init, hp.log_std_init, self.cnn_layers)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        extra: dict[str, Any] = {}
        if hp.optimizer in ("adam", "rmsprop"):
            extra["eps"] = hp.optimizer_eps
        if hp.optimizer == "rmsprop":
            extra["alpha"] = hp.rmsprop_alpha
        cls = OPTIMIZERS[hp.optimizer]
        extra["allow_fused"] = fused_optimizers_allowed(self)
        if hp.shared_trunk:
            return [make_optimizer(cls, self.policy.parameters(), lr=hp.learning_rate, **extra)]
        critic_lr = hp.critic_learning_rate or hp.learning_rate
        return [make_optimizer(cls, self.policy.actor_parameters(), lr=hp.learning_rate, **extra),
                make_optimizer(cls, self.policy.critic_parameters(), lr=critic_lr, **extra)]

    # ------------------------------------------------------------------ schedules
    def progress_remaining(self) -> float:
        """1 at the start of training, 0 when ``total_steps`` is spent (SB3's convention: after the rollout)."""
        return max(1.0 - self.env_steps / self.hparams.total_steps, 0.0)

    def apply_lr_schedule(self) -> None:
        """Set the optimizers' learning rates for this update (logged as ``lr/<optimizer>``)."""
        if self.hparams.lr_schedule == "linear":
            frac = self.progress_remaining()
            base = [self.hparams.learning_rate, self.hparams.critic_learning_rate or self.hparams.learning_rate]
            for opt, lr in zip(self.optimizers_list(), base):
                for group in opt.param_groups:
                    group["lr"] = lr * frac

    # ------------------------------------------------------------------ collection
    def setup(self, stage: str) -> None:
        envs = self.envs
        super().setup(stage)
        if self.envs is not envs:  # just built and reset: the masks of its first observations
            self._action_mask = action_masks(self._initial_info, self.num_envs)
            if self._action_mask is not None:
                self._check_action_mask(self._action_mask)
        if stage == "fit":
            hp = self.hparams
            obs_shape, obs_dtype = self.observation_storage()
            device = self.trainer.strategy.root_device if attached_trainer(self) is not None else self.device
            check_rollout_memory(hp.n_steps, self.num_envs, obs_shape, self.policy_action_shape(), device,
                                 obs_dtype=obs_dtype,
                                 action_mask_size=None if self._action_mask is None else self._action_mask.shape[-1])

    def _check_action_mask(self, mask: np.ndarray) -> None:
        expected = self.policy.action_mask_size
        if expected is None:
            raise ConfigurationError(f"the env gives info['action_mask'] but its action space {self.action_space} is "
                                     "continuous; action masks need a Discrete or MultiDiscrete action space")
        if mask.shape[-1] != expected:
            raise ConfigurationError(f"info['action_mask'] has {mask.shape[-1]} columns but the action space "
                                     f"{self.action_space} needs {expected} (one per action, branches side by side)")

    def load_run_state(self, state: dict[str, Any]) -> None:
        super().load_run_state(state)
        if isinstance(self._action_mask, torch.Tensor):  # a checkpoint from when the masks were kept as tensors
            self._action_mask = self._action_mask.cpu().numpy()

    def observation_storage(self) -> tuple[Any, Any]:
        """Shapes and dtypes to store observations with (per key for Dict spaces); uint8 images stay uint8."""
        space = self.observation_space
        if isinstance(space, gym.spaces.Dict):
            return ({k: tuple(s.shape) for k, s in space.spaces.items()},
                    {k: storage_dtype(s) for k, s in space.spaces.items()})
        return tuple(space.shape), storage_dtype(space)

    def final_obs_values(self, step: EnvStep, rows: np.ndarray, env_steps: int) -> np.ndarray:
        """``V`` of the final observations of the sub-envs ``rows`` whose episodes ``step`` ended (``env_steps``: the
        run's env step, for the message of the ``EnvironmentFault`` a non-finite one raises)."""
        final_obs = step.final_obs(rows, self.observation_space)
        fields = obs_fields("final observation", final_obs)
        if not all_finite(fields):  # tested only at truncations, all of the step's at once
            name, index, value = first_non_finite(fields)
            raise non_finite_env_fault(env_label(self.hparams), name, value, int(rows[index[0]]), env_steps)
        if self.normalization is not None:  # as the rollout's observations, with the round's statistics
            final_obs = self.normalization.normalize(final_obs)
        return host_array(self.policy.value(self.obs_to_tensor(final_obs)))

    def check_rollout_finite(self, buf: RolloutBuffer, rows: int, next_obs: Any, start_steps: int) -> None:
        """Raise ``EnvironmentFault`` if the first ``rows`` stored steps of the rollout, or ``next_obs`` (the
        observations after them), hold NaN or inf: one vectorised test per stored array.

        The message names the env step that returned the bad number: row ``t``'s reward comes from the step taken at
        ``start_steps + t * num_envs``, its observation from the step before (or from the envs' reset).
        """
        per_row = self.num_envs_all_ranks

        def returned_by(t: int) -> int:  # the step that returned row t's observation; -1: the reset
            step = start_steps + (t - 1) * per_row
            return step if step >= 0 else -1

        stored = {name: array[:rows] for name, array in obs_fields("observation", buf.obs).items()}
        following = {name: array[None] for name, array in obs_fields("observation", next_obs).items()}
        check_collected(env_label(self.hparams), [
            (stored, returned_by),
            (following, lambda t: returned_by(rows)),
            ({"reward": buf.rewards[:rows]}, lambda t: start_steps + t * per_row),
        ])

    @torch.no_grad()
    def collect_round(self) -> dict[str, Any]:
        if termination_requested(self):
            # Asked during the last update (or between batches): stop before anything of this round is drawn, so
            # that a resumed run is the uninterrupted one bit for bit.
            raise stop_exception()
        hp = self.hparams
        envs, mask = self.envs, self._action_mask
        if self.rollout is None:
            obs_shape, obs_dtype = self.observation_storage()
            self.rollout = RolloutBuffer(hp.n_steps, self.num_envs, obs_shape, self.policy_action_shape(),
                                         self.policy_action_dtype(), self.device, obs_dtype=obs_dtype,
                                         action_mask_size=None if mask is None else mask.shape[-1])
        buf = self.rollout
        actor = self.policy.rollout_actor(self.obs_to_tensor)  # NumPy in and out (rl_lightning.networks.acting)
        # With normalization (SB3's VecNormalize order): each step's observations are counted, then acted on and
        # stored normalized; self._obs keeps the envs' raw ones.
        norm = self.normalization
        raw, start_steps = self._obs, self.env_steps
        obs = raw if norm is None else norm.begin_round(raw)
        label, per_row = env_label(hp), self.num_envs_all_ranks
        for t in range(hp.n_steps):
            try:
                action, log_prob, value = actor.act(obs, mask)
            except (ValueError, RuntimeError) as err:
                # A distribution refuses NaN parameters: when the observations acted on are to blame, say so; when
                # the weights are, the settings that made them diverge.
                if not isinstance(err, EnvironmentFault):
                    self.check_rollout_finite(buf, t, obs, start_steps)
                    bad = non_finite_weights(self.policy.state_dict())
                    if bad:
                        raise NonFiniteAction(
                            f"the policy's weights {', '.join(bad[:3])} are not finite at env_steps="
                            f"{start_steps + t * per_row}: the policy diverged, not env {label}. Lower a learning "
                            f"rate or reward_scale, or set max_grad_norm ({divergence_suspects(self)})") from err
                raise
            # Before the env sees it: a NaN action would come back as the env's NaN observation.
            check_actions(action, raw, obs, label, start_steps + t * per_row, per_row,
                          lambda: divergence_suspects(self))
            step = step_envs(envs, to_env_action(action, self.action_space), mask)
            # With envs whose rows do not all decide (Unity), a step's outcome belongs to each row's last decision.
            reward = step.reward if norm is None else norm.observe_rewards(step.reward, step.ended)
            owner = buf.add(t, obs, action, log_prob, value,
                            reward * hp.reward_scale if hp.reward_scale != 1.0 else reward,
                            step.terminated, step.ended, mask, self._decision)
            self._decision = step.decision
            if step.ended.any():
                bootstrap = step.truncated & ~step.terminated
                if owner is not None:
                    bootstrap &= owner >= 0
                if bootstrap.any():
                    # A time limit is not a terminal state: value the final observation (kept by the autoreset).
                    rows = np.flatnonzero(bootstrap)
                    steps = np.full(len(rows), t) if owner is None else owner[rows]
                    buf.final_values[steps, rows] = self.final_obs_values(
                        step, rows, start_steps + t * self.num_envs_all_ranks)
                self.record_episodes(step.info)
            # The next observations and their masks; after a same-step autoreset, already the new episode's.
            raw, mask = step.obs, step.action_mask
            obs = raw if norm is None else norm.observe(raw)
            if termination_requested(self):
                # SIGTERM or Ctrl-C: abandon the rollout (its steps are not counted); the checkpoint keeps the envs
                # as they are.
                self._obs, self._action_mask = raw, mask
                if norm is not None:
                    norm.end_round()
                raise stop_exception()
        # One vectorised test per stored array, before anything computed from them reaches an update.
        self.check_rollout_finite(buf, hp.n_steps, obs, start_steps)
        self._obs, self._action_mask = raw, mask
        if norm is not None:
            norm.end_round()
        self.env_steps += self.round_steps  # all ranks' steps: they collect in lockstep
        return buf.finish(self.policy.value(self.obs_to_tensor(obs)), hp.gamma, hp.gae_lambda, self._decision)

    def policy_action_shape(self) -> tuple[int, ...]:
        space = self.action_space
        if is_hybrid(space):  # one row: the continuous values, then the branch indices
            return (space["continuous"].shape[0] + len(space["discrete"].nvec),)
        return () if isinstance(space, gym.spaces.Discrete) else tuple(space.shape)

    def policy_action_dtype(self) -> torch.dtype:
        space = self.action_space
        return torch.float32 if isinstance(space, gym.spaces.Box) or is_hybrid(space) else torch.long

    def predict_actions(self, obs: Obs, deterministic: bool = True,
                        action_mask: torch.Tensor | None = None) -> torch.Tensor:
        action = self.policy.predict(obs, deterministic, action_mask)
        hybrid = is_hybrid(self.action_space)
        box = self.action_space["continuous"] if hybrid else self.action_space
        if isinstance(box, gym.spaces.Box):
            low = torch.as_tensor(box.low, device=action.device)
            high = torch.as_tensor(box.high, device=action.device)
            if hybrid:  # the continuous part comes first
                n = low.shape[0]
                return torch.cat([torch.maximum(torch.minimum(action[..., :n], high), low), action[..., n:]], dim=-1)
            action = torch.maximum(torch.minimum(action, high), low)
        return action

    def act(self, obs: Any, deterministic: bool = True, action_mask: np.ndarray | None = None) -> Any:
        """``RLModule.act``; hybrid actions come as the action space's dict (``"continuous"``, ``"discrete"``)."""
        actions = super().act(obs, deterministic, action_mask)
        return to_env_action(actions, self.action_space) if is_hybrid(self.action_space) else actions

    # ------------------------------------------------------------------ losses and updates
    def value_loss_fn(self, values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        if self.hparams.value_loss == "smooth_l1":
            return F.smooth_l1_loss(values, returns)
        return F.mse_loss(values, returns)

    def actor_critic_step(self, policy_loss: torch.Tensor, value_loss: torch.Tensor,
                          entropy: torch.Tensor | None) -> None:
        """One gradient step of actor and critic: actor loss = policy - ent_coef * entropy, critic loss =
        vf_coef * value.

        With separate networks both losses are back-propagated at once (their
        parameters are disjoint) and each optimizer clips and steps its own.
        ``entropy`` may be ``None`` when there is no entropy bonus.
        """
        hp = self.hparams
        loss = policy_loss + hp.vf_coef * value_loss
        if entropy is not None and hp.ent_coef != 0:
            loss = loss - hp.ent_coef * entropy
        self.gradient_step(loss, self.optimizers_list())

    @staticmethod
    def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        """1 - Var[returns - values] / Var[returns]: 1 is a perfect critic, 0 no better than a constant."""
        var = returns.var()
        return torch.where(var > 0, 1 - (returns - values).var() / var, torch.zeros_like(var))
