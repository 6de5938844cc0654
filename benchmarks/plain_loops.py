"""The floor: each benchmarked algorithm as a plain PyTorch training loop, same hyperparameters, no framework.

Each function trains for ``total_steps`` env steps and returns a policy ``obs batch -> action batch``
(deterministic). They exist only to measure how much time rl_lightning adds over the bare algorithm, so
they use the same kernels as rl_lightning where that is a plain PyTorch choice (fused Adam, multi-tensor
RMSprop and gradient clipping, no critic weight gradients in DDPG's actor step): the difference between
the two is then the framework, not the arithmetic.
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
