"""The floor: each benchmarked algorithm as a plain PyTorch training loop, same hyperparameters, no framework.

Each function trains for ``total_steps`` env steps and returns a policy ``obs batch -> action batch``
(deterministic). They exist only to measure how much time rl_lightning adds over the bare algorithm, so
they use the same kernels as rl_lightning where that is a plain PyTorch choice (fused Adam, multi-tensor
RMSprop and gradient clipping, no critic weight gradients in the actor steps of DDPG, TD3 and SAC): the
difference between the two is then the framework, not the arithmetic.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

Policy = Callable[[np.ndarray], np.ndarray]


def mlp(sizes: list[int], activation: type[nn.Module], ortho: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layer = nn.Linear(sizes[i], sizes[i + 1])
        if ortho:
            nn.init.orthogonal_(layer.weight, np.sqrt(2))
            nn.init.zeros_(layer.bias)
        layers.append(layer)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def vector_env(env_id: str, n: int, seed: int) -> gym.vector.VectorEnv:
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs


def _final_obs(next_obs: np.ndarray, info: dict, ended: np.ndarray) -> np.ndarray:
    real = next_obs.copy()
    for i in np.flatnonzero(ended):
        real[i] = info["final_obs"][i]
    return real


# ---------------------------------------------------------------------- on-policy (PPO, A2C)
def on_policy(env_id: str, total_steps: int, seed: int, *, num_envs: int, n_steps: int, gamma: float,
              gae_lambda: float, lr: float, ppo: bool, n_epochs: int = 1, batch_size: int = 0, clip: float = 0.2,
              linear_schedule: bool = False, vf_coef: float = 0.5, max_grad_norm: float = 0.5,
              normalize_advantage: bool = True, rmsprop: bool = False) -> Policy:
    torch.manual_seed(seed)
    envs = vector_env(env_id, num_envs, seed)
    obs_dim, n_act = envs.single_observation_space.shape[0], envs.single_action_space.n
    actor, critic = mlp([obs_dim, 64, 64, n_act], nn.Tanh, True), mlp([obs_dim, 64, 64, 1], nn.Tanh, True)
    nn.init.orthogonal_(actor[-1].weight, 0.01)
    nn.init.orthogonal_(critic[-1].weight, 1.0)
    params = [*actor.parameters(), *critic.parameters()]
    opt = (torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-5, foreach=True) if rmsprop
           else torch.optim.Adam(params, lr=lr, eps=1e-5, fused=True))
    obs = torch.as_tensor(envs.reset(seed=seed)[0], dtype=torch.float32)
    steps = 0
    buf_obs = torch.zeros(n_steps, num_envs, obs_dim)
    buf_act = torch.zeros(n_steps, num_envs, dtype=torch.long)
    buf_logp, buf_val, buf_rew, buf_term, buf_end, buf_final = (torch.zeros(n_steps, num_envs) for _ in range(6))
    while steps < total_steps:
        progress = 1.0 - steps / total_steps
        for g in opt.param_groups:
            g["lr"] = lr * progress if linear_schedule else lr
        clip_now = clip * progress if linear_schedule else clip
        with torch.no_grad():
            for t in range(n_steps):
                dist = Categorical(logits=actor(obs))
                action = dist.sample()
                next_obs, reward, term, trunc, info = envs.step(action.numpy())
                buf_obs[t], buf_act[t], buf_logp[t] = obs, action, dist.log_prob(action)
                buf_val[t] = critic(obs).squeeze(-1)
                buf_rew[t] = torch.as_tensor(reward, dtype=torch.float32)
                buf_term[t] = torch.as_tensor(term, dtype=torch.float32)
                buf_end[t] = torch.as_tensor(term | trunc, dtype=torch.float32)
                buf_final[t] = 0.0
                boot = trunc & ~term
                if boot.any():
                    idx = np.flatnonzero(boot)
                    final = torch.as_tensor(np.stack([info["final_obs"][i] for i in idx]), dtype=torch.float32)
                    buf_final[t, idx] = critic(final).squeeze(-1)
                obs = torch.as_tensor(next_obs, dtype=torch.float32)
            steps += n_steps * num_envs
            last_val = critic(obs).squeeze(-1)
            adv = torch.zeros(n_steps, num_envs)
            gae = torch.zeros(num_envs)
            for t in reversed(range(n_steps)):
                next_v = last_val if t == n_steps - 1 else buf_val[t + 1]
                next_v = next_v * (1 - buf_end[t])
                delta = buf_rew[t] + gamma * (next_v + buf_final[t]) - buf_val[t]
                gae = delta + gamma * gae_lambda * (1 - buf_end[t]) * gae
                adv[t] = gae
            returns = adv + buf_val
        b_obs, b_act, b_logp = buf_obs.flatten(0, 1), buf_act.flatten(), buf_logp.flatten()
        b_adv, b_ret = adv.flatten(), returns.flatten()
        n = b_obs.shape[0]
        for _ in range(n_epochs):
            for idx in (torch.randperm(n).split(batch_size) if ppo else [torch.arange(n)]):
                dist = Categorical(logits=actor(b_obs[idx]))
                logp = dist.log_prob(b_act[idx])
                a = b_adv[idx]
                if normalize_advantage and len(idx) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                if ppo:
                    ratio = (logp - b_logp[idx]).exp()
                    pl = -torch.min(ratio * a, ratio.clamp(1 - clip_now, 1 + clip_now) * a).mean()
                else:
                    pl = -(logp * a).mean()
                vl = F.mse_loss(critic(b_obs[idx]).squeeze(-1), b_ret[idx])
                opt.zero_grad()
                (pl + vf_coef * vl).backward()
                nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
                opt.step()
    envs.close()
    return lambda o: actor(torch.as_tensor(o, dtype=torch.float32)).argmax(-1).numpy()


# ---------------------------------------------------------------------- DQN
def dqn(env_id: str, total_steps: int, seed: int, *, lr: float, batch_size: int, buffer_size: int,
        learning_starts: int, gamma: float, target_update: int, train_freq: int, gradient_steps: int,
        exploration_fraction: float, final_eps: float, hidden: list[int], max_grad_norm: float = 10.0) -> Policy:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    envs = vector_env(env_id, 1, seed)
    obs_dim, n_act = envs.single_observation_space.shape[0], envs.single_action_space.n
    q = mlp([obs_dim, *hidden, n_act], nn.ReLU)
    q_target = copy.deepcopy(q)
    opt = torch.optim.Adam(q.parameters(), lr=lr, fused=True)
    S = torch.zeros(buffer_size, obs_dim)
    S2 = torch.zeros(buffer_size, obs_dim)
    A = torch.zeros(buffer_size, dtype=torch.long)
    R = torch.zeros(buffer_size)
    D = torch.zeros(buffer_size)
    size = pos = updates_due = 0
    obs = envs.reset(seed=seed)[0]
    for step in range(1, total_steps + 1):
        eps = max(final_eps, 1.0 - (1.0 - final_eps) * (step - 1) / (exploration_fraction * total_steps))
        if step <= learning_starts or rng.random() < eps:
            action = envs.action_space.sample()
        else:
            with torch.no_grad():
                action = q(torch.as_tensor(obs, dtype=torch.float32)).argmax(-1).numpy()
        next_obs, reward, term, trunc, info = envs.step(action)
        ended = term | trunc
        real_next = _final_obs(next_obs, info, ended) if ended.any() else next_obs
        S[pos], S2[pos] = torch.as_tensor(obs[0]), torch.as_tensor(real_next[0])
        A[pos], R[pos], D[pos] = int(action[0]), float(reward[0]), float(term[0])
        pos, size = (pos + 1) % buffer_size, min(size + 1, buffer_size)
        obs = next_obs
        if step % target_update == 0:
            updates_due += 1
        if step > learning_starts and step % train_freq == 0:
            for _ in range(gradient_steps):
                idx = torch.randint(0, size, (batch_size,))
                with torch.no_grad():
                    target = R[idx] + gamma * (1 - D[idx]) * q_target(S2[idx]).max(-1).values
                qa = q(S[idx]).gather(-1, A[idx, None]).squeeze(-1)
                loss = F.smooth_l1_loss(qa, target)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(q.parameters(), max_grad_norm, foreach=True)
                opt.step()
        if updates_due:
            q_target.load_state_dict(q.state_dict())
            updates_due = 0
    envs.close()
    return lambda o: q(torch.as_tensor(o, dtype=torch.float32)).argmax(-1).numpy()


# ---------------------------------------------------------------------- DDPG
def ddpg(env_id: str, total_steps: int, seed: int, *, lr: float, batch_size: int, buffer_size: int,
         learning_starts: int, gamma: float, tau: float, noise_std: float, hidden: list[int]) -> Policy:
    torch.manual_seed(seed)
    envs = vector_env(env_id, 1, seed)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    low = torch.as_tensor(envs.single_action_space.low)
    high = torch.as_tensor(envs.single_action_space.high)
    actor = nn.Sequential(mlp([obs_dim, *hidden, act_dim], nn.ReLU), nn.Tanh())
    critic = mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU)
    actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
    a_opt = torch.optim.Adam(actor.parameters(), lr=lr, fused=True)
    c_opt = torch.optim.Adam(critic.parameters(), lr=lr, fused=True)
    S = torch.zeros(buffer_size, obs_dim)
    S2 = torch.zeros(buffer_size, obs_dim)
    A = torch.zeros(buffer_size, act_dim)
    R = torch.zeros(buffer_size)
    D = torch.zeros(buffer_size)
    size = pos = 0

    def scale(a: torch.Tensor) -> torch.Tensor:
        return low + (a + 1.0) * 0.5 * (high - low)

    obs = envs.reset(seed=seed)[0]
    for step in range(1, total_steps + 1):
        if step <= learning_starts:
            a = torch.rand(1, act_dim) * 2 - 1
        else:
            with torch.no_grad():
                a = (actor(torch.as_tensor(obs, dtype=torch.float32)) + noise_std * torch.randn(1, act_dim)).clamp(-1, 1)
        next_obs, reward, term, trunc, info = envs.step(scale(a).numpy())
        ended = term | trunc
        real_next = _final_obs(next_obs, info, ended) if ended.any() else next_obs
        S[pos], S2[pos], A[pos] = torch.as_tensor(obs[0]), torch.as_tensor(real_next[0]), a[0]
        R[pos], D[pos] = float(reward[0]), float(term[0])
        pos, size = (pos + 1) % buffer_size, min(size + 1, buffer_size)
        obs = next_obs
        if step > learning_starts:
            idx = torch.randint(0, size, (batch_size,))
            with torch.no_grad():
                nq = critic_t(torch.cat([S2[idx], actor_t(S2[idx])], -1)).squeeze(-1)
                target = R[idx] + gamma * (1 - D[idx]) * nq
            c_loss = F.mse_loss(critic(torch.cat([S[idx], A[idx]], -1)).squeeze(-1), target)
            c_opt.zero_grad()
            c_loss.backward()
            c_opt.step()
            critic.requires_grad_(False)
            a_loss = -critic(torch.cat([S[idx], actor(S[idx])], -1)).mean()
            a_opt.zero_grad()
            a_loss.backward()
            a_opt.step()
            critic.requires_grad_(True)
            with torch.no_grad():
                for net, tgt in ((actor, actor_t), (critic, critic_t)):
                    for p, tp in zip(net.parameters(), tgt.parameters()):
                        tp.lerp_(p, tau)
    envs.close()
    return lambda o: scale(actor(torch.as_tensor(o, dtype=torch.float32))).numpy()


# ---------------------------------------------------------------------- SAC and TD3 (one env, Box actions)
class BoxReplay:
    """A replay buffer of preallocated tensors for one env with Box actions (stored in [-1, 1])."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs, self.next_obs = torch.zeros(capacity, obs_dim), torch.zeros(capacity, obs_dim)
        self.act, self.rew, self.term = torch.zeros(capacity, act_dim), torch.zeros(capacity), torch.zeros(capacity)

    def add(self, obs: np.ndarray, action: torch.Tensor, reward: float, next_obs: np.ndarray, term: bool) -> None:
        i = self.pos
        self.obs[i], self.next_obs[i], self.act[i] = torch.as_tensor(obs), torch.as_tensor(next_obs), action
        self.rew[i], self.term[i] = reward, float(term)
        self.pos, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, self.size, (n,))
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.term[idx]


def _box_env(env_id: str, seed: int) -> tuple[gym.vector.VectorEnv, int, int, Callable[[torch.Tensor], torch.Tensor]]:
    """One env copy, its observation and action sizes, and the map from [-1, 1] actions to its bounds."""
    envs = vector_env(env_id, 1, seed)
    low = torch.as_tensor(envs.single_action_space.low)
    high = torch.as_tensor(envs.single_action_space.high)
    return (envs, envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
            lambda a: low + (a + 1.0) * 0.5 * (high - low))


def _soft_update(pairs: list[tuple[nn.Module, nn.Module]], tau: float) -> None:
    with torch.no_grad():
        for net, tgt in pairs:
            for p, tp in zip(net.parameters(), tgt.parameters()):
                tp.lerp_(p, tau)


def td3(env_id: str, total_steps: int, seed: int, *, lr: float, batch_size: int, buffer_size: int,
        learning_starts: int, gamma: float, tau: float, noise_std: float, hidden: list[int], policy_delay: int,
        target_noise: float, target_noise_clip: float) -> Policy:
    """TD3 (Fujimoto et al. 2018): twin critics regressed onto the smaller target value, a clipped-noise target
    action, and the actor and all targets moved once every ``policy_delay`` critic updates."""
    torch.manual_seed(seed)
    envs, obs_dim, act_dim, scale = _box_env(env_id, seed)
    actor = nn.Sequential(mlp([obs_dim, *hidden, act_dim], nn.ReLU), nn.Tanh())
    q1, q2 = mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU), mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU)
    actor_t, q1_t, q2_t = copy.deepcopy(actor), copy.deepcopy(q1), copy.deepcopy(q2)
    a_opt = torch.optim.Adam(actor.parameters(), lr=lr, fused=True)
    c_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=lr, fused=True)  # one optimizer, as SB3
    buf = BoxReplay(buffer_size, obs_dim, act_dim)
    updates = 0
    obs = envs.reset(seed=seed)[0]
    for step in range(1, total_steps + 1):
        if step <= learning_starts:
            a = torch.rand(1, act_dim) * 2 - 1
        else:
            with torch.no_grad():
                a = actor(torch.as_tensor(obs, dtype=torch.float32)) + noise_std * torch.randn(1, act_dim)
                a = a.clamp(-1, 1)
        next_obs, reward, term, trunc, info = envs.step(scale(a).numpy())
        ended = term | trunc
        real_next = _final_obs(next_obs, info, ended) if ended.any() else next_obs
        buf.add(obs[0], a[0], float(reward[0]), real_next[0], bool(term[0]))
        obs = next_obs
        if step <= learning_starts:
            continue
        s, act, r, s2, d = buf.sample(batch_size)
        with torch.no_grad():
            noise = (torch.randn(batch_size, act_dim) * target_noise).clamp(-target_noise_clip, target_noise_clip)
            a2 = (actor_t(s2) + noise).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], -1)
            target = r + gamma * (1 - d) * torch.minimum(q1_t(sa2), q2_t(sa2)).squeeze(-1)
        sa = torch.cat([s, act], -1)
        c_loss = F.mse_loss(q1(sa).squeeze(-1), target) + F.mse_loss(q2(sa).squeeze(-1), target)
        c_opt.zero_grad()
        c_loss.backward()
        c_opt.step()
        updates += 1
        if updates % policy_delay == 0:
            q1.requires_grad_(False)  # the actor's gradient goes through Q1 to the action, not into Q1's weights
            a_loss = -q1(torch.cat([s, actor(s)], -1)).mean()
            a_opt.zero_grad()
            a_loss.backward()
            a_opt.step()
            q1.requires_grad_(True)
            _soft_update([(actor, actor_t), (q1, q1_t), (q2, q2_t)], tau)
    envs.close()
    return lambda o: scale(actor(torch.as_tensor(o, dtype=torch.float32))).numpy()


class _GaussianTanhActor(nn.Module):
    """SAC's policy: an MLP trunk, a mean and a log-std head; samples are tanh-squashed into [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.trunk = nn.Sequential(mlp([obs_dim, *hidden], nn.ReLU), nn.ReLU())
        self.mean, self.log_std = nn.Linear(hidden[-1], act_dim), nn.Linear(hidden[-1], act_dim)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised squashed sample and its log-probability."""
        h = self.trunk(s)
        mean, log_std = self.mean(h), self.log_std(h).clamp(-20.0, 2.0)
        u = mean + log_std.exp() * torch.randn_like(mean)
        # log N(u) minus log|d tanh(u)/du|, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
        log_prob = (torch.distributions.Normal(mean, log_std.exp(), validate_args=False).log_prob(u)
                    - 2.0 * (np.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob

    def deterministic(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean(self.trunk(s)))


def sac(env_id: str, total_steps: int, seed: int, *, lr: float, batch_size: int, buffer_size: int,
        learning_starts: int, gamma: float, tau: float, hidden: list[int]) -> Policy:
    """SAC (Haarnoja et al. 2018) with a learned temperature towards entropy ``-dim(A)``; per gradient step, as
    SB3: temperature, then both critics (one optimizer), then the actor, then the critics' targets."""
    torch.manual_seed(seed)
    envs, obs_dim, act_dim, scale = _box_env(env_id, seed)
    actor = _GaussianTanhActor(obs_dim, act_dim, hidden)
    q1, q2 = mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU), mlp([obs_dim + act_dim, *hidden, 1], nn.ReLU)
    q1_t, q2_t = copy.deepcopy(q1), copy.deepcopy(q2)
    log_alpha = torch.zeros(1, requires_grad=True)  # alpha starts at 1
    target_entropy = -float(act_dim)
    a_opt = torch.optim.Adam(actor.parameters(), lr=lr, fused=True)
    c_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=lr, fused=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=lr, fused=True)
    buf = BoxReplay(buffer_size, obs_dim, act_dim)
    obs = envs.reset(seed=seed)[0]
    for step in range(1, total_steps + 1):
        if step <= learning_starts:
            a = torch.rand(1, act_dim) * 2 - 1
        else:
            with torch.no_grad():
                a = actor(torch.as_tensor(obs, dtype=torch.float32))[0]
        next_obs, reward, term, trunc, info = envs.step(scale(a).numpy())
        ended = term | trunc
        real_next = _final_obs(next_obs, info, ended) if ended.any() else next_obs
        buf.add(obs[0], a[0], float(reward[0]), real_next[0], bool(term[0]))
        obs = next_obs
        if step <= learning_starts:
            continue
        s, act, r, s2, d = buf.sample(batch_size)
        a_pi, logp = actor(s)
        alpha = log_alpha.detach().exp()  # this step's alpha: the value before its own update
        alpha_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            a2, logp2 = actor(s2)
            sa2 = torch.cat([s2, a2], -1)
            soft_v = torch.minimum(q1_t(sa2), q2_t(sa2)).squeeze(-1) - alpha * logp2
            target = r + gamma * (1 - d) * soft_v
        sa = torch.cat([s, act], -1)
        c_loss = 0.5 * (F.mse_loss(q1(sa).squeeze(-1), target) + F.mse_loss(q2(sa).squeeze(-1), target))
        c_opt.zero_grad()
        c_loss.backward()
        c_opt.step()
        q1.requires_grad_(False)
        q2.requires_grad_(False)
        sa_pi = torch.cat([s, a_pi], -1)
        a_loss = (alpha * logp - torch.minimum(q1(sa_pi), q2(sa_pi)).squeeze(-1)).mean()
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()
        q1.requires_grad_(True)
        q2.requires_grad_(True)
        _soft_update([(q1, q1_t), (q2, q2_t)], tau)
    envs.close()
    return lambda o: scale(actor.deterministic(torch.as_tensor(o, dtype=torch.float32))).numpy()
