"""PPO on a MuJoCo task with observation and reward normalization: rl_lightning (statistics in the model) vs
Stable-Baselines3 + ``VecNormalize``, same hyperparameters (rl-baselines3-zoo's, ``configs/ppo_halfcheetah.yaml``),
same budget and seeds, returns per seed and wall time side by side.

    pip install -e ".[benchmark,mujoco]"
    nice python benchmarks/mujoco_normalize.py --steps 50000 --seeds 0 1 2

Each run is its own subprocess (one torch thread), in alternating order (rl_lightning first for even seeds, SB3
first for odd ones). Wall time counts building the model and training. The score is the mean undiscounted return
of ``--eval-episodes`` deterministic episodes on the raw env (seeds 10000+), each library normalizing the
observations with its frozen training statistics (rl_lightning: ``model.act``; SB3: ``VecNormalize`` with
``training=False``).
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
CONFIG = ROOT / "configs" / "ppo_halfcheetah.yaml"


def settings(env_id: str) -> dict:
    args = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]
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


def run_rl_lightning(env_id: str, steps: int, seed: int, episodes: int) -> tuple[list[float], float]:
    import lightning as L

    from rl_lightning import PPO

    start = time.perf_counter()
    model = PPO(**dict(settings(env_id), total_steps=steps, seed=seed, eval_episodes=0,
                       steps_per_epoch=max(steps // 5, 512)))
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu").fit(model)
    wall = time.perf_counter() - start
    return play(env_id, episodes, model.act), wall


def run_sb3(env_id: str, steps: int, seed: int, episodes: int) -> tuple[list[float], float]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    hp = settings(env_id)
    start = time.perf_counter()
    envs = VecNormalize(make_vec_env(env_id, n_envs=hp["num_envs"], seed=seed), gamma=hp["gamma"])
    model = PPO("MlpPolicy", envs, n_steps=hp["n_steps"], batch_size=hp["batch_size"], n_epochs=hp["n_epochs"],
                gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], learning_rate=hp["learning_rate"],
                clip_range=hp["clip_range"], ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"],
                max_grad_norm=hp["max_grad_norm"], seed=seed, device="cpu",
                policy_kwargs=dict(log_std_init=hp["log_std_init"], ortho_init=hp["ortho_init"],
                                   activation_fn=nn.ReLU, net_arch=dict(pi=hp["hidden_sizes"],
                                                                        vf=hp["hidden_sizes"])))
    model.learn(steps)
    wall = time.perf_counter() - start
    envs.training, envs.norm_reward = False, False
    return play(env_id, episodes, lambda obs: model.predict(envs.normalize_obs(obs), deterministic=True)[0]), wall


def worker(impl: str, env_id: str, steps: int, seed: int, episodes: int) -> None:
    import torch

    torch.set_num_threads(1)
    returns, wall = (run_rl_lightning if impl == "rl_lightning" else run_sb3)(env_id, steps, seed, episodes)
    print("RESULT " + json.dumps({"impl": impl, "seed": seed, "returns": returns, "wall": wall}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run (the zoo's budget: 1M)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=["rl_lightning", "sb3"], choices=["rl_lightning", "sb3"])
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.env, args.steps, int(args.worker[1]), args.eval_episodes)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    results: dict[tuple[str, int], dict] = {}
    for seed in args.seeds:
        order = args.impls if seed % 2 == 0 else list(reversed(args.impls))
        for impl in order:
            cmd = [sys.executable, __file__, "--env", args.env, "--steps", str(args.steps),
                   "--eval-episodes", str(args.eval_episodes), "--worker", impl, str(seed)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{impl} seed {seed} failed:\n{out.stderr[-3000:]}")
            results[(impl, seed)] = json.loads(line[len("RESULT "):])
            r = results[(impl, seed)]
            print(f"  {impl:12s} seed {seed}: return {statistics.mean(r['returns']):9.1f}  wall {r['wall']:7.1f} s",
                  flush=True)
    print(f"\n{args.env}, PPO (zoo hyperparameters, normalize: true), {args.steps} env steps, "
          f"{args.eval_episodes} deterministic evaluation episodes per seed")
    print(f"| seed | {' | '.join(f'{i} return | {i} wall (s)' for i in args.impls)} |")
    print("|---" * (1 + 2 * len(args.impls)) + "|")
    for seed in args.seeds:
        cells = [f"{statistics.mean(results[(i, seed)]['returns']):.1f} | {results[(i, seed)]['wall']:.0f}"
                 for i in args.impls]
        print(f"| {seed} | {' | '.join(cells)} |")
    cells = [f"{statistics.mean(statistics.mean(results[(i, s)]['returns']) for s in args.seeds):.1f} | "
             f"{statistics.mean(results[(i, s)]['wall'] for s in args.seeds):.0f}" for i in args.impls]
    print(f"| mean | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
