"""Train a config over several seeds and print a per-seed learning table.

    python benchmarks/seed_sweep.py configs/ppo_cartpole.yaml --seeds 0 1 2 3 4 --threshold 475
    python benchmarks/seed_sweep.py configs/a2c_cartpole_td.yaml --episode-windows 441-540 -- --model.init_args.total_steps=250000

Options after ``--`` go to ``rl-lightning fit``.

Each seed runs ``rl-lightning fit`` in its own process (``--jobs`` at a time,
one torch thread each) and logs to ``lightning_logs/sweeps/<config>/seed_<n>``.
The table lists the final ``eval/return_mean``, the first env step at which
an evaluation reached ``--threshold`` (if given), the best evaluation and the
wall time of the whole process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under ``log_dir`` as ``{tag: [(env_step, value), ...]}``, all points kept."""
    series: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})  # 0: no down-sampling
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


def latest_version(log_dir: Path) -> Path:
    """The newest ``version_<n>`` folder of a TensorBoard run (earlier sweeps of the same seed stay untouched)."""
    versions = sorted(log_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return versions[-1] if versions else log_dir


def episode_window_mean(scalars: dict[str, list[tuple[int, float]]], first: int, last: int) -> float | None:
    """Mean training return of episodes ``first``..``last`` (1-based), from ``run/score`` and ``run/episodes``.

    Each logged point is the mean return of the episodes finished in one batch;
    a batch's mean stands for each of its episodes (exact when a batch ends at most one episode).
    """
    scores = dict(scalars.get("run/score", []))
    total, n, previous = 0.0, 0, 0
    for step, cumulative in scalars.get("run/episodes", []):
        cumulative = int(cumulative)
        lo, hi = max(previous + 1, first), min(cumulative, last)
        if hi >= lo:
            total += scores[step] * (hi - lo + 1)
            n += hi - lo + 1
        previous = cumulative
    return total / n if n == last - first + 1 else None


def run_seed(config: str, seed: int, out: Path, extra: list[str]) -> tuple[int, float, int]:
    cmd = [sys.executable, "-m", "rl_lightning", "fit", "--config", config, f"--model.init_args.seed={seed}",
           f"--trainer.logger.init_args.save_dir={out}", f"--trainer.logger.init_args.name=seed_{seed}",
           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
    return seed, wall, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threshold", type=float, default=None, help="report the first env step reaching this")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at the same time")
    parser.add_argument("--out", default=None, help="log folder (default lightning_logs/sweeps/<config name>)")
    parser.add_argument("--report-only", action="store_true", help="print the table from earlier runs' logs")
    parser.add_argument("--episode-windows", nargs="*", default=[], metavar="FIRST-LAST",
                        help="also report the mean training return over these episode ranges, e.g. 441-540")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    out = Path(args.out or Path("lightning_logs") / "sweeps" / Path(args.config).stem)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = [(seed, float("nan"), 0) for seed in args.seeds]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda s: run_seed(args.config, s, out, args.extra), args.seeds))

    print(f"\n{args.config}: {len(args.seeds)} seeds, {args.jobs} at a time, one torch thread each")
    windows = [tuple(int(x) for x in w.split("-")) for w in args.episode_windows]
    window_cols = "".join(f" train return ep {a}-{b} |" for a, b in windows)
    print(f"| seed | final eval return | env steps | first step >= {args.threshold} | best eval | wall time (s) |"
          + window_cols)
    print("|---|---|---|---|---|---|" + "---|" * len(windows))
    reached = 0
    for seed, wall, code in results:
        scalars = load_scalars(latest_version(out / f"seed_{seed}"))
        curve = scalars.get("eval/return_mean", [])
        if code != 0 or not curve:
            print(f"| {seed} | failed (exit {code}) | | | | {wall:.1f} |")
            continue
        final_step, final = curve[-1]
        first = next((s for s, v in curve if args.threshold is not None and v >= args.threshold), None)
        ok = args.threshold is not None and final >= args.threshold
        reached += ok
        window_values = [episode_window_mean(scalars, a, b) for a, b in windows]
        print(f"| {seed} | {final:.1f} | {final_step} | {first if first is not None else '-'} | "
              f"{max(v for _, v in curve):.1f} | {wall:.1f} |"
              + "".join(" - |" if v is None else f" {v:.1f} |" for v in window_values))
    if args.threshold is not None:
        print(f"\nfinal eval return >= {args.threshold}: {reached} of {len(results)} seeds")


if __name__ == "__main__":
    main()
