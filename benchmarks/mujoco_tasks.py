"""PPO, SAC or TD3 on a MuJoCo task: rl_lightning vs Stable-Baselines3, same hyperparameters (rl-baselines3-zoo's,
``configs/<algo>_halfcheetah.yaml``), same budget and seeds, returns per seed and wall time side by side.

    pip install -e ".[benchmark,mujoco]"
    nice python benchmarks/mujoco_tasks.py --algo ppo --steps 50000 --seeds 0 1 2
    nice python benchmarks/mujoco_tasks.py --algo sac td3 --steps 50000 --seeds 0 1 2 --jobs 2

PPO runs with observation and reward normalization (rl_lightning: statistics in the model; SB3: ``VecNormalize``).
Each run is its own subprocess (one torch thread). With ``--jobs 1`` the runs go one at a time in alternating order
(rl_lightning first for even seeds, SB3 first for odd ones); with ``--jobs 2`` both libraries' runs of one seed go
side by side, one per core, so each pair shares the machine's state alike. Wall time counts building the model and
training. The score is the mean undiscounted return of ``--eval-episodes`` deterministic episodes on the raw env
(seeds 10000+); PPO's observations are normalized with each library's frozen training statistics
(rl_lightning: ``model.act``; SB3: ``VecNormalize`` with ``training=False``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"ppo": "PPO", "sac": "SAC", "td3": "TD3"}


def settings(algo: str, env_id: str) -> dict:
    args = yaml.safe_load((ROOT / "configs" / f"{algo}_halfcheetah.yaml").read_text())["model"]["init_args"]
    return dict(args, env=env_id)


def play(env_id: str, episodes: int, policy) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes of ``policy`` (raw observation -> action) on the raw env."""
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def run_rl_lightning(algo: str, env_id: str, steps: int, seed: int, episodes: int) -> tuple[list[float], float]:
    import lightning as L

    import rl_lightning

    start = time.perf_counter()
    model = getattr(rl_lightning, CLASSES[algo])(**dict(settings(algo, env_id), total_steps=steps, seed=seed,
                                                         eval_episodes=0, steps_per_epoch=max(steps // 5, 512)))
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu").fit(model)
    wall = time.perf_counter() - start
    return play(env_id, episodes, lambda obs: model.act(obs, deterministic=True)), wall


def run_sb3(algo: str, env_id: str, steps: int, seed: int, episodes: int) -> tuple[list[float], float]:
    import numpy as np
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    hp = settings(algo, env_id)
    start = time.perf_counter()
    normalize = None
    if algo == "ppo":
        envs = normalize = VecNormalize(make_vec_env(env_id, n_envs=hp["num_envs"], seed=seed), gamma=hp["gamma"])
        model = PPO("MlpPolicy", envs, n_steps=hp["n_steps"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"],
                    gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], learning_rate=hp["learning_rate"],
                    clip_range=hp["clip_range"], ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"],
                    max_grad_norm=hp["max_grad_norm"], seed=seed, device="cpu",
                    policy_kwargs=dict(log_std_init=hp["log_std_init"], ortho_init=hp["ortho_init"],
                                       activation_fn=nn.ReLU, net_arch=dict(pi=hp["hidden_sizes"],
                                                                            vf=hp["hidden_sizes"])))
    else:
        envs = make_vec_env(env_id, n_envs=hp["num_envs"], seed=seed)
        common = dict(buffer_size=hp["buffer_size"], learning_starts=hp["learning_starts"],
                      batch_size=hp["batch_size"], tau=hp["tau"], gamma=hp["gamma"], train_freq=hp["train_freq"],
                      gradient_steps=hp["gradient_steps"], learning_rate=hp["critic_learning_rate"],
                      policy_kwargs=dict(net_arch=hp["hidden_sizes"]), seed=seed, device="cpu")
        if algo == "sac":
            model = SAC("MlpPolicy", envs, ent_coef=hp["ent_coef"], **common)
        else:
            dim = envs.action_space.shape[0]
            model = TD3("MlpPolicy", envs, policy_delay=hp["policy_delay"],
                        target_policy_noise=hp["target_policy_noise"], target_noise_clip=hp["target_noise_clip"],
                        action_noise=NormalActionNoise(np.zeros(dim), hp["noise_sigma"] * np.ones(dim)), **common)
    model.learn(steps)
    wall = time.perf_counter() - start
    if normalize is not None:
        normalize.training, normalize.norm_reward = False, False
        return play(env_id, episodes,
                    lambda obs: model.predict(normalize.normalize_obs(obs), deterministic=True)[0]), wall
    return play(env_id, episodes, lambda obs: model.predict(obs, deterministic=True)[0]), wall


def worker(impl: str, algo: str, env_id: str, steps: int, seed: int, episodes: int) -> None:
    import torch

    torch.set_num_threads(1)
    run = run_rl_lightning if impl == "rl_lightning" else run_sb3
    returns, wall = run(algo, env_id, steps, seed, episodes)
    print("RESULT " + json.dumps({"impl": impl, "seed": seed, "returns": returns, "wall": wall}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", nargs="+", default=["ppo"], choices=sorted(CLASSES))
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run (the zoo's budget: 1M)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=["rl_lightning", "sb3"], choices=["rl_lightning", "sb3"])
    parser.add_argument("--jobs", type=int, default=1, choices=[1, 2],
                        help="2: run both libraries' runs of a seed side by side (one core each)")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "ALGO", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.env, args.steps, int(args.worker[2]), args.eval_episodes)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def start(impl: str, algo: str, seed: int) -> subprocess.Popen:
        cmd = [sys.executable, __file__, "--env", args.env, "--steps", str(args.steps),
               "--eval-episodes", str(args.eval_episodes), "--worker", impl, algo, str(seed)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def finish(proc: subprocess.Popen, impl: str, algo: str, seed: int) -> None:
        stdout, stderr = proc.communicate()
        line = next((l for l in stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{impl} {algo} seed {seed} failed:\n{stderr[-3000:]}")
        r = results[(algo, impl, seed)] = json.loads(line[len("RESULT "):])
        print(f"  {algo} {impl:12s} seed {seed}: return {statistics.mean(r['returns']):9.1f}  "
              f"wall {r['wall']:7.1f} s", flush=True)

    results: dict[tuple[str, str, int], dict] = {}
    for algo in args.algo:
        for seed in args.seeds:
            order = args.impls if seed % 2 == 0 else list(reversed(args.impls))
            if args.jobs == 2:
                procs = [(start(impl, algo, seed), impl) for impl in order]
                for proc, impl in procs:
                    finish(proc, impl, algo, seed)
            else:
                for impl in order:
                    finish(start(impl, algo, seed), impl, algo, seed)
    for algo in args.algo:
        extra = ", normalize: true" if algo == "ppo" else ""
        print(f"\n{args.env}, {CLASSES[algo]} (zoo hyperparameters{extra}), {args.steps} env steps, "
              f"{args.eval_episodes} deterministic evaluation episodes per seed, jobs {args.jobs}")
        print(f"| seed | {' | '.join(f'{i} return | {i} wall (s)' for i in args.impls)} |")
        print("|---" * (1 + 2 * len(args.impls)) + "|")
        for seed in args.seeds:
            cells = [f"{statistics.mean(results[(algo, i, seed)]['returns']):.1f} | "
                     f"{results[(algo, i, seed)]['wall']:.0f}" for i in args.impls]
            print(f"| {seed} | {' | '.join(cells)} |")
        cells = [f"{statistics.mean(statistics.mean(results[(algo, i, s)]['returns']) for s in args.seeds):.1f} | "
                 f"{statistics.mean(results[(algo, i, s)]['wall'] for s in args.seeds):.0f}" for i in args.impls]
        print(f"| mean | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
