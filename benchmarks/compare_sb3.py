"""rl_lightning vs Stable-Baselines3 vs a plain PyTorch loop, side by side, same hyperparameters (rl-baselines3-zoo).

    pip install -e ".[benchmark]"
    python benchmarks/compare_sb3.py                          # 6 tasks x 3 seeds x 3 implementations
    python benchmarks/compare_sb3.py --tasks sac_pendulum td3_pendulum
    python benchmarks/compare_sb3.py --tasks ppo_cartpole --seeds 0 1 2 3 4
    python benchmarks/compare_sb3.py --scale 0.05 --seeds 0   # a quick smoke run (5% of each budget)
    python benchmarks/compare_sb3.py --unity                  # also the Unity path's table (unity_speed.py)

Each run is its own subprocess (one torch thread, OMP/MKL threads 1), started in an alternating order
(rl_lightning, SB3, plain; then SB3, plain, rl_lightning; ...) so slow drifts of the machine hit all three
alike. Wall time counts building the model and training, not the final evaluation, which plays the same
deterministic episodes for all three (20 episodes; 10 for Pendulum; seeds 10000+), nor importing the
library: that is a fixed cost per process, shown in its own column (Lightning's import takes ~1.9 s,
SB3's ~0.3 s, on top of torch's ~1 s that all three pay).

The tasks: PPO, A2C and DQN on CartPole-v1; DDPG, SAC and TD3 on Pendulum-v1. SAC learns from env step 256 in
all three implementations, as configs/sac_pendulum.yaml does (rl_lightning wants at least one minibatch of 256
in the buffer first), not from SB3's default 100: like for like. Under ``--scale`` below 1 the Pendulum
tasks' learning_starts becomes min(the zoo's value, max(batch size, half the scaled budget)), the same for all
three implementations, so a smoke run also reaches the updates (DDPG's and TD3's 10k random steps would exceed
the whole of a 5% budget); at full scale that is the zoo's value for every task.
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

ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    # name: (algorithm, env, budget, eval episodes)
    "ppo_cartpole": ("PPO", "CartPole-v1", 100_000, 20),
    "a2c_cartpole": ("A2C", "CartPole-v1", 100_000, 20),
    "dqn_cartpole": ("DQN", "CartPole-v1", 50_000, 20),
    "ddpg_pendulum": ("DDPG", "Pendulum-v1", 20_000, 10),
    "sac_pendulum": ("SAC", "Pendulum-v1", 20_000, 10),
    "td3_pendulum": ("TD3", "Pendulum-v1", 20_000, 10),
}
# The Pendulum tasks' (learning_starts, batch_size): the zoo's, but SAC's 256 for SB3's 100 (see above).
PENDULUM_STARTS = {"ddpg_pendulum": (10_000, 256), "sac_pendulum": (256, 256), "td3_pendulum": (10_000, 256)}
IMPLS = ("rl_lightning", "sb3", "plain")


def learning_starts(task: str, steps: int) -> int:
    """The env steps before ``task``'s first update in a run of ``steps``: the zoo's value at full budget; in a
    shorter (scaled) run at most half of it, but at least one minibatch (rl_lightning's rule)."""
    starts, batch_size = PENDULUM_STARTS[task]
    return starts if steps >= TASKS[task][2] else min(starts, max(batch_size, steps // 2))


# ---------------------------------------------------------------------- one run (in a worker process)
def train_rl_lightning(task: str, steps: int, seed: int):
    import lightning as L
    import yaml

    import rl_lightning

    model_cfg = yaml.safe_load((ROOT / "configs" / f"{task}.yaml").read_text())["model"]
    args = dict(model_cfg["init_args"], total_steps=steps, seed=seed, eval_episodes=0,
                steps_per_epoch=max(steps // 10, 1))
    if task in PENDULUM_STARTS:
        args["learning_starts"] = learning_starts(task, steps)
    if task == "dqn_cartpole":
        args["exploration_fraction"] = 0.16  # the zoo's 16% of its 50k budget
    model = getattr(rl_lightning, model_cfg["class_path"].rsplit(".", 1)[1])(**args)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(model)
    return lambda obs: model.act(obs, deterministic=True)


def train_sb3(task: str, steps: int, seed: int):
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise
    import numpy as np

    def linear(start):
        return lambda progress_remaining: progress_remaining * start

    if task == "ppo_cartpole":
        model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), n_steps=32, batch_size=256,
                    gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=linear(1e-3),
                    clip_range=linear(0.2), seed=seed, device="cpu")
    elif task == "a2c_cartpole":
        model = A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), ent_coef=0.0, seed=seed,
                    device="cpu")
    elif task == "dqn_cartpole":
        model = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                    learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                    exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]),
                    seed=seed, device="cpu")
    elif task == "ddpg_pendulum":
        model = DDPG("MlpPolicy", "Pendulum-v1", gamma=0.98, buffer_size=200_000,
                     learning_starts=learning_starts(task, steps),
                     action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)), gradient_steps=1, train_freq=1,
                     learning_rate=1e-3, policy_kwargs=dict(net_arch=[400, 300]), seed=seed, device="cpu")
    elif task == "sac_pendulum":
        # SB3's SAC defaults otherwise (buffer 1M, batch 256, tau 0.005, gamma 0.99, ent_coef "auto", [256, 256]).
        model = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, learning_starts=learning_starts(task, steps),
                    seed=seed, device="cpu")
    else:
        model = TD3("MlpPolicy", "Pendulum-v1", gamma=0.98, buffer_size=200_000,
                    learning_starts=learning_starts(task, steps),
                    action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)), gradient_steps=1, train_freq=1,
                    learning_rate=1e-3, batch_size=256, tau=0.005, policy_delay=2, target_policy_noise=0.2,
                    target_noise_clip=0.5, policy_kwargs=dict(net_arch=[400, 300]), seed=seed, device="cpu")
    model.learn(total_timesteps=steps)
    return lambda obs: model.predict(obs, deterministic=True)[0]


def train_plain(task: str, steps: int, seed: int):
    sys.path.insert(0, str(Path(__file__).parent))
    import plain_loops

    if task == "ppo_cartpole":
        return plain_loops.on_policy("CartPole-v1", steps, seed, num_envs=8, n_steps=32, gamma=0.98, gae_lambda=0.8,
                                     lr=1e-3, ppo=True, n_epochs=20, batch_size=256, clip=0.2, linear_schedule=True)
    if task == "a2c_cartpole":
        return plain_loops.on_policy("CartPole-v1", steps, seed, num_envs=8, n_steps=5, gamma=0.99, gae_lambda=1.0,
                                     lr=7e-4, ppo=False, normalize_advantage=False, rmsprop=True)
    if task == "dqn_cartpole":
        return plain_loops.dqn("CartPole-v1", steps, seed, lr=2.3e-3, batch_size=64, buffer_size=100_000,
                               learning_starts=1000, gamma=0.99, target_update=10, train_freq=256, gradient_steps=128,
                               exploration_fraction=0.16, final_eps=0.04, hidden=[256, 256])
    if task == "ddpg_pendulum":
        return plain_loops.ddpg("Pendulum-v1", steps, seed, lr=1e-3, batch_size=256, buffer_size=200_000,
                                learning_starts=learning_starts(task, steps), gamma=0.98, tau=0.005, noise_std=0.1,
                                hidden=[400, 300])
    if task == "sac_pendulum":
        return plain_loops.sac("Pendulum-v1", steps, seed, lr=1e-3, batch_size=256, buffer_size=1_000_000,
                               learning_starts=learning_starts(task, steps), gamma=0.99, tau=0.005, hidden=[256, 256])
    return plain_loops.td3("Pendulum-v1", steps, seed, lr=1e-3, batch_size=256, buffer_size=200_000,
                           learning_starts=learning_starts(task, steps), gamma=0.98, tau=0.005, noise_std=0.1,
                           hidden=[400, 300], policy_delay=2, target_noise=0.2, target_noise_clip=0.5)


def import_library(impl: str) -> None:
    """Import what ``impl``'s training function imports, so that its clock starts with the modules loaded."""
    if impl == "rl_lightning":
        import lightning  # noqa: F401

        import rl_lightning.algorithms  # noqa: F401
    elif impl == "sb3":
        import stable_baselines3  # noqa: F401
        from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3  # noqa: F401
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        import plain_loops  # noqa: F401


def worker(impl: str, task: str, steps: int, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from rl_lightning.evaluation import evaluate

    train = {"rl_lightning": train_rl_lightning, "sb3": train_sb3, "plain": train_plain}[impl]
    start = time.perf_counter()
    import_library(impl)
    import_s = time.perf_counter() - start
    start = time.perf_counter()
    policy = train(task, steps, seed)
    wall = time.perf_counter() - start
    _, env_id, _, episodes = TASKS[task]
    with torch.no_grad():
        result = evaluate(policy, env_id, n_episodes=episodes, seed=10_000 + seed)
    return {"impl": impl, "task": task, "seed": seed, "steps": steps, "wall_s": wall, "steps_per_s": steps / wall,
            "import_s": import_s, "eval_return": result.return_mean}


# ---------------------------------------------------------------------- the side-by-side run
def run_one(impl: str, task: str, steps: int, seed: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, __file__, "--worker", impl, task, str(steps), str(seed)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{impl} {task} seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def table(results: list[dict], tasks: list[str]) -> str:
    rows = ["| task | implementation | wall s median (min-max) | env steps/s | eval return (per seed) | "
            "wall vs SB3 | wall vs plain | import s |", "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        med = {impl: statistics.median(r["wall_s"] for r in results if r["task"] == task and r["impl"] == impl)
               for impl in IMPLS if any(r["task"] == task and r["impl"] == impl for r in results)}
        for impl in med:
            rs = sorted((r for r in results if r["task"] == task and r["impl"] == impl), key=lambda r: r["seed"])
            walls = [r["wall_s"] for r in rs]
            sps = statistics.median(r["steps_per_s"] for r in rs)
            returns = ", ".join(f"{r['eval_return']:.0f}" for r in rs)
            vs_sb3 = f"{med[impl] / med['sb3']:.2f}x" if "sb3" in med else "-"
            vs_plain = f"{med[impl] / med['plain']:.2f}x" if "plain" in med else "-"
            import_s = statistics.median(r.get("import_s", float("nan")) for r in rs)
            rows.append(f"| {task} | {impl} | {med[impl]:.1f} ({min(walls):.1f}-{max(walls):.1f}) | {sps:,.0f} | "
                        f"{returns} | {vs_sb3} | {vs_plain} | {import_s:.2f} |")
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        impl, task, steps, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(worker(impl, task, steps, seed)), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each task's budget (smoke runs)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--unity", action="store_true",
                        help="then print the Unity path's table: each stand-in game's steps/s through the protocol "
                             "vs played directly (benchmarks/unity_speed.py)")
    args = parser.parse_args()
    results = []
    for task in args.tasks:
        steps = max(int(TASKS[task][2] * args.scale), 1)
        for k, seed in enumerate(args.seeds):
            order = args.impls[k % len(args.impls):] + args.impls[:k % len(args.impls)]
            for impl in order:
                r = run_one(impl, task, steps, seed)
                print(f"{task:14s} {impl:12s} seed {seed}: {r['wall_s']:7.1f} s  {r['steps_per_s']:8,.0f} steps/s  "
                      f"eval {r['eval_return']:8.1f}  import {r['import_s']:.2f} s", flush=True)
                results.append(r)
    print()
    print(table(results, args.tasks))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.unity:
        print()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        subprocess.run([sys.executable, str(Path(__file__).parent / "unity_speed.py")], env=env, check=True)


if __name__ == "__main__":
    main()
