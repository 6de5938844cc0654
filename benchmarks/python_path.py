"""The Python path against the CLI: the same PPO CartPole run (the quick start's config) from ``rl-lightning fit``
and from a script that builds ``PPO`` and ``L.Trainer`` as the README's "In Python" section does.

    python benchmarks/python_path.py                        # 100k env steps, 3 rounds, on an idle machine
    python benchmarks/python_path.py --steps 20000 --busy 1 # with one core kept busy by another process

Each run is its own subprocess with the environment the user has (no OMP_NUM_THREADS set), so the thread policy
each path applies is what is measured. Rounds alternate the order (CLI first, then Python first). ``--busy N``
starts N processes spinning on a core each for the whole measurement, as a shared machine would have. Printed:
the env steps per second of each run (from the training clock, ``time/steps_per_second`` of the final epoch's
line) and the wall time of each process; the ratio Python / CLI is the figure to read.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ppo_cartpole.yaml"

SCRIPT = """
import sys, time
import lightning as L
from rl_lightning import PPO

steps = int(sys.argv[1])
model = PPO(env="CartPole-v1", num_envs=8, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8,
            learning_rate=1e-3, lr_schedule="linear", clip_range_schedule="linear", hidden_sizes=[64, 64],
            total_steps=steps, steps_per_epoch=10_000, eval_episodes=0, seed=0)
trainer = L.Trainer(max_epochs=-1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
start = time.perf_counter()
trainer.fit(model)
print(f"TRAINED {model.env_steps} {time.perf_counter() - start:.3f}")
"""


def spin() -> None:
    while True:
        pass


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**env, "PYTHONWARNINGS": "ignore"}


def run_cli(steps: int, folder: Path) -> float:
    args = [sys.executable, "-m", "rl_lightning", "fit", "--config", str(CONFIG), f"--model.init_args.total_steps={steps}",
            "--model.init_args.eval_episodes=0", "--model.init_args.seed=0", "--trainer.enable_checkpointing=false",
            f"--trainer.logger.init_args.save_dir={folder}", "--trainer.enable_model_summary=false"]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=environment(), cwd=folder)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    rates = re.findall(r"(\d+) steps/s", proc.stdout)
    return steps / wall if not rates else float(statistics.fmean(map(float, rates)))


def run_python(steps: int, folder: Path) -> float:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(steps)], capture_output=True, text=True,
                          env=environment(), cwd=folder)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    rates = re.findall(r"(\d+) steps/s", proc.stdout)
    trained, seconds = re.search(r"TRAINED (\d+) ([\d.]+)", proc.stdout).groups()
    return float(statistics.fmean(map(float, rates))) if rates else int(trained) / float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on a core each during the runs")
    args = parser.parse_args()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / "rl_lightning_python_path"
    folder.mkdir(parents=True, exist_ok=True)
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    results: dict[str, list[float]] = {"cli": [], "python": []}
    try:
        for r in range(args.rounds):
            order = ("cli", "python") if r % 2 == 0 else ("python", "cli")
            for path in order:
                rate = (run_cli if path == "cli" else run_python)(args.steps, folder)
                results[path].append(rate)
                print(f"round {r} {path:6s} {rate:8.0f} env steps/s", flush=True)
    finally:
        for p in spinners:
            p.terminate()
    cli, python = statistics.median(results["cli"]), statistics.median(results["python"])
    print(f"\nPPO CartPole, {args.steps} env steps, {args.busy} busy core(s), torch threads at start: "
          f"{os.cpu_count()} cores")
    print("| path | env steps/s (median) | vs CLI |\n|---|---|---|")
    print(f"| rl-lightning fit (CLI) | {cli:.0f} | 1.00x |")
    print(f"| Python script (PPO + L.Trainer) | {python:.0f} | {python / cli:.2f}x |")


if __name__ == "__main__":
    main()
