"""What a training point holds: the rounds' diagnostics averaged since the last point, and the finished episodes.

``RLModule.log_training`` hands every round's diagnostics to a ``TrainingLog`` and, when a point is due, logs
what ``point()`` returns against env steps. Keeping the sums here (not as Lightning metrics) leaves one cheap
accumulation per round and one reduction per point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class TrainingLog:
    """The diagnostics of the rounds since the last training point, the episodes finished since then, and the
    time of the last point (for the throughput)."""

    def __init__(self) -> None:
        # Sums of the diagnostics of the rounds since the last point, and how many rounds gave each.
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.finished_returns: list[np.ndarray] = []
        self.finished_lengths: list[np.ndarray] = []
        self.last_point: tuple[float, int] | None = None  # (time, env steps) of the last point
        # Called with the returns of the episodes of each env step that ended some (e.g. a curriculum's callback).
        self.episode_listeners: list[Callable[[np.ndarray], Any]] = []

    def add_round(self, metrics: dict[str, torch.Tensor | float]) -> None:
        """Add one round's diagnostics (tensors are detached and summed where they are: no host copy)."""
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def record_episodes(self, info: dict[str, Any]) -> None:
        """Keep the returns and lengths of the episodes that ended in an env step (``RecordEpisodeStatistics``'s
        ``info["episode"]``)."""
        mask = info.get("_episode")
        if mask is not None and mask.any():
            self.finished_returns.append(info["episode"]["r"][mask])
            self.finished_lengths.append(info["episode"]["l"][mask])
            for listener in self.episode_listeners:
                listener(self.finished_returns[-1])

    def steps_since_point(self, env_steps: int) -> int | None:
        return None if self.last_point is None else env_steps - self.last_point[1]

    def restart_clock(self, env_steps: int) -> None:
        """Measure the throughput from now (training starts or resumes)."""
        self.last_point = (time.perf_counter(), env_steps)

    def point(self, env_steps: int, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> tuple[
            dict[str, Any], tuple[int, float, float], float | None]:
        """Close a training point: each diagnostic's mean over the rounds that gave it, the count, return sum and
        length sum of the episodes finished since the last point (over all ranks with ``reduce``, a sum across DDP
        ranks), and the env steps per second since the last point (``None`` for the first)."""
        means = {key: value / self.counts[key] for key, value in self.sums.items()}
        self.sums, self.counts = {}, {}
        # Our own sums instead of torchmetrics' MeanMetric: under DDP it syncs inside compute(), a collective each
        # rank would have to call, also a rank without finished episodes, and one per state. This is one all_reduce
        # of three numbers per logged point, and none in a single process.
        returns = np.concatenate(self.finished_returns) if self.finished_returns else np.zeros(0)
        lengths = np.concatenate(self.finished_lengths) if self.finished_lengths else np.zeros(0)
        self.finished_returns.clear()
        self.finished_lengths.clear()
        totals = np.array([len(returns), returns.sum(dtype=np.float64), lengths.sum(dtype=np.float64)])
        if reduce is not None:
            totals = reduce(torch.as_tensor(totals)).cpu().numpy()
        now = time.perf_counter()
        rate = None
        if self.last_point is not None and now > self.last_point[0]:
            rate = (env_steps - self.last_point[1]) / (now - self.last_point[0])
        self.last_point = (now, env_steps)
        return means, (int(totals[0]), float(totals[1]), float(totals[2])), rate

    def state(self) -> dict[str, Any]:
        """What a resumed run needs: the episodes finished but not yet logged."""
        return {"finished_returns": list(self.finished_returns), "finished_lengths": list(self.finished_lengths)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.finished_returns = list(state["finished_returns"])
        self.finished_lengths = list(state["finished_lengths"])
