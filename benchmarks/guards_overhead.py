"""What the non-finite guards cost: the time spent in each check during a CartPole run, against the run's time.

    python benchmarks/guards_overhead.py                        # PPO and DQN, configs/*_cartpole.yaml, 20k steps
    python benchmarks/guards_overhead.py --total-steps 50000 --configs ppo_cartpole

Each check is wrapped with a timer (``time.perf_counter`` around the call) while the run trains as the config
says (evaluation and checkpoints included, one torch thread as the command uses); the report is the checks'
total time as a share of the ``fit`` wall time. A timer costs ~0.1 us per call, which the figures include.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

import rl_lightning.algorithms.off_policy as off_policy
import rl_lightning.algorithms.on_policy as on_policy
import rl_lightning.checkpointing as checkpointing
from rl_lightning.algorithms.off_policy import OffPolicyModule
from rl_lightning.algorithms.on_policy import OnPolicyModule
from rl_lightning.algorithms.updates import GradientStepper

ROOT = Path(__file__).resolve().parents[1]

CHECKS = {
    "rollout (obs, reward)": (OnPolicyModule, "check_rollout_finite"),
    "replay rows (obs, next obs, reward)": (OffPolicyModule, "check_stored_finite"),
    "loss + grad norm": (GradientStepper, "_check_finite"),
    # Per env step: the policy's actions before they reach the env (the collectors call the function by this name).
    "actions (on-policy, per env step)": (on_policy, "check_actions"),
    "actions (off-policy, per env step)": (off_policy, "check_actions"),
}


def timed(totals: dict[str, list[float]], name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = totals.setdefault(name, [0.0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1
    return wrapper


def run(config_name: str, total_steps: int) -> None:
    config = yaml.safe_load((ROOT / "configs" / f"{config_name}.yaml").read_text())
    model_cfg = config["model"]
    module, cls_name = model_cfg["class_path"].rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
    kwargs = dict(model_cfg["init_args"], total_steps=total_steps, steps_per_epoch=min(total_steps, 10_000))
    totals: dict[str, list[float]] = {}
    originals = {}
    for name, (owner, attr) in CHECKS.items():
        originals[(owner, attr)] = getattr(owner, attr)
        setattr(owner, attr, timed(totals, name, getattr(owner, attr)))
    original_ckpt = checkpointing.check_checkpoint_finite
    checkpointing.check_checkpoint_finite = timed(totals, "checkpoint weights", original_ckpt)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = cls(**kwargs)
            trainer = L.Trainer(max_epochs=-1, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, default_root_dir=tmp, num_sanity_val_steps=0,
                                callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp, save_last=True)])
            start = time.perf_counter()
            trainer.fit(model)
            wall = time.perf_counter() - start
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
        checkpointing.check_checkpoint_finite = original_ckpt
    spent = sum(t for t, _ in totals.values())
    print(f"{config_name}: {model.env_steps} env steps in {wall:.2f} s; checks {spent * 1e3:.1f} ms "
          f"= {100 * spent / wall:.3f} % of the run")
    for name, (t, n) in totals.items():
        print(f"  {name:38s} {n:7d} calls  {t * 1e6 / max(n, 1):8.2f} us/call  {100 * t / wall:.3f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["ppo_cartpole", "dqn_cartpole"])
    parser.add_argument("--total-steps", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.configs:
        run(name, args.total_steps)


if __name__ == "__main__":
    main()
