"""Actor-critic networks for on-policy algorithms: separate or shared-trunk, any supported action space."""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from rl_lightning.data.replay import Obs
from rl_lightning.envs.spaces import is_hybrid, to_space_actions
from rl_lightning.networks.acting import ObsToTensor, RolloutActor, TorchActor
from rl_lightning.networks.encoders import make_encoder
from rl_lightning.networks.host import HostActorCritic, HostMLP
from rl_lightning.networks.mlp import orthogonal_init


def masked_logits(logits: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` with forbidden actions (``action_mask`` False) set to the dtype's most negative finite value.

    Their probability is then exactly 0 (never sampled), while log-probs, the
    entropy (``Categorical`` computes it as ``-sum(p * logit)``, and ``0 * finite = 0``)
    and their gradients stay finite, which ``-inf`` would not guarantee.
    A row with no allowed action becomes uniform rather than NaN.
    """
    if action_mask is None:
        return logits
    return logits.masked_fill(~action_mask, torch.finfo(logits.dtype).min)


class MultiCategorical(Distribution):
    """Independent categorical branches (a ``MultiDiscrete`` action); log-probs and entropies add up.

    ``action_mask`` holds the branches' masks side by side (``sum(nvec)`` columns,
    as Unity ML-Agents gives them); each branch is masked with its own part.
    """

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, nvec: Sequence[int], action_mask: torch.Tensor | None = None) -> None:
        logits = masked_logits(logits, action_mask)
        self.branches = [Categorical(logits=part, validate_args=False) for part in logits.split(list(nvec), dim=-1)]
        super().__init__(batch_shape=logits.shape[:-1], validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return torch.stack([b.sample(sample_shape) for b in self.branches], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return sum(b.log_prob(v) for b, v in zip(self.branches, value.unbind(-1)))

    def entropy(self) -> torch.Tensor:
        return sum(b.entropy() for b in self.branches)

    @property
    def mode(self) -> torch.Tensor:
        return torch.stack([b.probs.argmax(-1) for b in self.branches], dim=-1)


class DiagGaussian(Normal):
    """A diagonal Gaussian over a vector action: log-prob and entropy sum over action dimensions."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(value).sum(-1)

    def entropy(self) -> torch.Tensor:
        return super().entropy().sum(-1)


class HybridDistribution(Distribution):
    """A hybrid action (ML-Agents' continuous + discrete branches): a diagonal Gaussian and categorical branches.

    The parts are independent given the observation, so log-probs and entropies add up. An action is one float
    tensor: the ``n`` continuous values, then the branch indices (small whole numbers, exact in float32), so the
    rollout stores it as it stores any action. ``action_mask`` covers the discrete branches only.
    """

    arg_constraints: dict = {}

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, logits: torch.Tensor, nvec: Sequence[int],
                 action_mask: torch.Tensor | None = None) -> None:
        self.continuous = DiagGaussian(mean, std, validate_args=False)
        self.discrete = MultiCategorical(logits, nvec, action_mask)
        self.n = mean.shape[-1]
        super().__init__(batch_shape=mean.shape[:-1], validate_args=False)

    def _join(self, continuous: torch.Tensor, discrete: torch.Tensor) -> torch.Tensor:
        return torch.cat([continuous, discrete.to(continuous.dtype)], dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self._join(self.continuous.sample(sample_shape), self.discrete.sample(sample_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        continuous, discrete = value[..., :self.n], value[..., self.n:]
        return self.continuous.log_prob(continuous) + self.discrete.log_prob(discrete.round().long())

    def entropy(self) -> torch.Tensor:
        return self.continuous.entropy() + self.discrete.entropy()

    @property
    def mode(self) -> torch.Tensor:
        return self._join(self.continuous.mean, self.discrete.mode)


class ActorCritic(nn.Module):
    """A policy head and a value head over encoder bodies (MLP for vectors, conv net for images).

    With ``shared_trunk`` one body feeds both heads (the seeds' 256-unit nets,
    trained with one optimizer); otherwise actor and critic have bodies of their
    own and can be given separate optimizers.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden_sizes: Sequence[int] = (64, 64),
                 activation: str = "tanh", shared_trunk: bool = False, ortho_init: bool = True,
                 log_std_init: float = 0.0, cnn_layers: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        self.shared_trunk = shared_trunk
        if shared_trunk:
            self.trunk = make_encoder(observation_space, hidden_sizes, activation, cnn_layers=cnn_layers)
            self.actor_body = self.critic_body = self.trunk
        else:
            self.actor_body = make_encoder(observation_space, hidden_sizes, activation, cnn_layers=cnn_layers)
            self.critic_body = make_encoder(observation_space, hidden_sizes, activation, cnn_layers=cnn_layers)

        self.action_space = action_space
        self.log_std: nn.Parameter | None = None
        self.hybrid = is_hybrid(action_space)
        if isinstance(action_space, gym.spaces.Discrete):
            head_dim = int(action_space.n)
        elif self.hybrid:  # the Gaussian's means, then the branches' logits
            self.n_continuous = int(action_space["continuous"].shape[0])
            self.nvec = [int(n) for n in action_space["discrete"].nvec]
            head_dim = self.n_continuous + sum(self.nvec)
            self.log_std = nn.Parameter(torch.full((self.n_continuous,), float(log_std_init)))
        elif isinstance(action_space, gym.spaces.MultiDiscrete):
            self.nvec = [int(n) for n in action_space.nvec]
            head_dim = sum(self.nvec)
        else:
            head_dim = int(action_space.shape[0])
            self.log_std = nn.Parameter(torch.full((head_dim,), float(log_std_init)))
        self.policy_head = nn.Linear(self.actor_body.out_dim, head_dim)
        self.value_head = nn.Linear(self.critic_body.out_dim, 1)

        if ortho_init:
            orthogonal_init(self.actor_body, math.sqrt(2))
            if not shared_trunk:
                orthogonal_init(self.critic_body, math.sqrt(2))
            orthogonal_init(self.policy_head, 0.01)
            orthogonal_init(self.value_head, 1.0)

    def actor_parameters(self) -> list[nn.Parameter]:
        params = [*self.actor_body.parameters(), *self.policy_head.parameters()]
        return params + ([self.log_std] if self.log_std is not None else [])

    def critic_parameters(self) -> list[nn.Parameter]:
        return [*self.critic_body.parameters(), *self.value_head.parameters()]

    @property
    def action_mask_size(self) -> int | None:
        """Columns an action mask has (the discrete logits), or ``None`` for Gaussian policies."""
        if self.hybrid:
            return sum(self.nvec)
        return None if self.log_std is not None else self.policy_head.out_features

    def distribution(self, features: torch.Tensor, action_mask: torch.Tensor | None = None) -> Distribution:
        """The policy over actions; discrete actions that ``action_mask`` forbids (False) get probability 0."""
        out = self.policy_head(features)
        if isinstance(self.action_space, gym.spaces.Discrete):
            return Categorical(logits=masked_logits(out, action_mask), validate_args=False)
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            return MultiCategorical(out, self.nvec, action_mask)
        if self.hybrid:
            mean, logits = out.split([self.n_continuous, sum(self.nvec)], dim=-1)
            return HybridDistribution(mean, self.log_std.exp().expand_as(mean), logits, self.nvec, action_mask)
        return DiagGaussian(out, self.log_std.exp().expand_as(out), validate_args=False)

    def forward(self, obs: Obs, action_mask: torch.Tensor | None = None) -> tuple[Distribution, torch.Tensor]:
        """The action distribution and the state value (shape ``batch``) for a batch of observations."""
        if self.shared_trunk:
            h = self.trunk(obs)
            return self.distribution(h, action_mask), self.value_head(h).squeeze(-1)
        return (self.distribution(self.actor_body(obs), action_mask),
                self.value_head(self.critic_body(obs)).squeeze(-1))

    def value(self, obs: Obs) -> torch.Tensor:
        return self.value_head(self.critic_body(obs)).squeeze(-1)

    def act(self, obs: Obs, deterministic: bool = False,
            action_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) an action; return it with its log-probability and the state value."""
        if isinstance(self.action_space, gym.spaces.Discrete):
            # The rollouts' hot path: one log-softmax gives the sampling probabilities and the log-probability,
            # half the tensor operations of a Categorical's normalisation, sampling and log_prob (same values).
            h_actor = self.actor_body(obs)  # the trunk itself with shared_trunk
            h_critic = h_actor if self.shared_trunk else self.critic_body(obs)
            log_p = torch.log_softmax(masked_logits(self.policy_head(h_actor), action_mask), dim=-1)
            action = log_p.argmax(-1) if deterministic else torch.multinomial(log_p.exp(), 1).squeeze(-1)
            return action, log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1), self.value_head(h_critic).squeeze(-1)
        dist, value = self(obs, action_mask)
        action = dist.mode if deterministic else dist.sample()
        return action, dist.log_prob(action), value

    def host(self) -> HostActorCritic | None:
        """A NumPy mirror for acting on the CPU (``HostActorCritic.act``, what ``act`` gives), or ``None`` unless the
        action space is Discrete and the bodies are MLPs (tanh or ReLU) on vector observations, on the CPU."""
        if not isinstance(self.action_space, gym.spaces.Discrete):
            return None
        actor, policy_head, value_head = (HostMLP.of(m) for m in (self.actor_body, self.policy_head, self.value_head))
        critic = None if self.shared_trunk else HostMLP.of(self.critic_body)  # None: the trunk serves both
        if None in (actor, policy_head, value_head) or (critic is None and not self.shared_trunk):
            return None
        return HostActorCritic(actor, critic, policy_head, value_head)

    def rollout_actor(self, obs_to_tensor: ObsToTensor) -> RolloutActor:
        """What a collector acts through (NumPy in, NumPy out; ``obs_to_tensor`` puts observations on this module's
        device): the NumPy mirror where it is exact (``host``), whose few operations on a few rows cost a fraction of
        PyTorch's per-operation dispatch, else this module. Make one per rollout (see ``rl_lightning.networks.host``).
        """
        mirror = self.host()
        return mirror if mirror is not None else TorchActor(self, obs_to_tensor)

    def predict(self, obs: Obs, deterministic: bool = True, action_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Actions only: the actor body alone runs."""
        dist = self.distribution(self.actor_body(obs), action_mask)
        return dist.mode if deterministic else dist.sample()


def to_env_action(action: torch.Tensor | np.ndarray, action_space: gym.Space) -> np.ndarray | dict[str, np.ndarray]:
    """Policy actions as the NumPy array a vector env takes; Gaussian actions are clipped to the bounds.

    Hybrid actions (``HybridDistribution``'s single tensor) become the hybrid space's dict of a clipped
    ``"continuous"`` array and an integer ``"discrete"`` one.
    """
    a = action.cpu().numpy() if isinstance(action, torch.Tensor) else action
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(a, action_space.low, action_space.high)
    if is_hybrid(action_space):
        box = action_space["continuous"]
        n = box.shape[0]
        return {"continuous": np.clip(a[..., :n], box.low, box.high).astype(np.float32),
                "discrete": np.rint(a[..., n:]).astype(np.int64)}
    return to_space_actions(a, action_space)  # Discrete(n, start=s): index i is action s + i
