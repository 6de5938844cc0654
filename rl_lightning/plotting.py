"""Learning curves from a run's TensorBoard logs, drawn to a PNG (matplotlib, loaded on first use)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def read_scalars(run_dir: str | os.PathLike, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``(env_steps, values)`` of one logged metric, from every TensorBoard event file under ``run_dir``.

    A resumed run writes a second event file into the same folder; points are merged and sorted by step
    (a step logged twice keeps its latest value).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(run_dir).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir!s}: pass a run's log folder, "
                                "e.g. lightning_logs/ppo_cartpole/version_0")
    points: dict[int, float] = {}
    tags: set[str] = set()
    for events in files:
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        tags.update(acc.Tags()["scalars"])
        if tag in acc.Tags()["scalars"]:
            points.update((int(e.step), float(e.value)) for e in acc.Scalars(tag))
    if not points:
        raise KeyError(f"{tag!r} was not logged under {run_dir!s}; logged: {sorted(tags)}")
    steps = np.array(sorted(points))
    return steps, np.array([points[s] for s in steps])


def plot_learning_curves(runs: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
                         output: str | os.PathLike, tag: str = "run/score", smooth: int = 1,
                         title: str | None = None) -> Path:
    """Plot ``tag`` (default: training episode return) against environment steps for one or several runs.

    Args:
        runs: a run's log folder, a list of them, or ``{label: folder}`` for a legend of your own.
        output: the PNG to write.
        tag: a logged metric, e.g. ``"run/score"`` or ``"eval/return_mean"``.
        smooth: moving-average window in logged points (1: raw).

    Returns the path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_learning_curves needs matplotlib: pip install 'rl_lightning[notebooks]'") from err
    if isinstance(runs, Mapping):
        labelled = {str(k): Path(v) for k, v in runs.items()}
    else:
        paths = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
        labelled = {Path(p).parent.name + "/" + Path(p).name: Path(p) for p in paths}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for label, run in labelled.items():
            steps, values = read_scalars(run, tag)
            if smooth > 1 and len(values) >= smooth:
                values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
                steps = steps[smooth - 1:]
            ax.plot(steps, values, label=label)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
        if title:
            ax.set_title(title)
        if len(labelled) > 1:
            ax.legend()
        fig.tight_layout()
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, format="png")
    finally:
        plt.close(fig)
    return output
