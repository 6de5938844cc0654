"""A callback for the DDP tests: each rank writes down what it trained, for the test process to compare.

The tests run ``rl-lightning fit`` in a subprocess (Lightning's DDP launcher re-runs the command for the
other ranks), so the ranks' state can only come back through files: ``<folder>/rank<r>.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


class RankProbe(L.Callback):
    """Records, per rank: the episodes it finished itself, what a resumed fit restored, and the final state.

    Args:
        folder: where ``rank<r>.pt`` is written when training ends.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.local_returns: dict[int, list[float]] = {}  # env_steps after a batch -> this rank's finished returns
        self.batches = 0
        self.resumed: dict[str, Any] = {}
        self.initial_parameters: dict[str, torch.Tensor] = {}  # the trainable parameters as training starts
        self._pending: list[float] = []

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        record = pl_module.record_episodes

        def counting(info: dict[str, Any]) -> None:  # the rank's own episodes, before any reduction
            mask = info.get("_episode")
            if mask is not None and mask.any():
                self._pending += [float(r) for r in info["episode"]["r"][mask]]
            record(info)

        pl_module.record_episodes = counting

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        # The module restores its run state in its own on_train_start, after the callbacks': what it will restore.
        state = pl_module._resume_state
        self.initial_parameters = {name: p.detach().cpu().clone() for name, p in pl_module.named_parameters()
                                   if p.requires_grad}
        self.resumed = {"env_steps": pl_module.env_steps, "episodes": pl_module.episodes,
                        "obs": None if state is None else np.asarray(state["obs"]).copy()}
        buffer = getattr(pl_module, "buffer", None)
        if buffer is not None:
            self.resumed["buffer"] = buffer.state_dict()
        units = getattr(pl_module.envs.unwrapped, "units", None)  # Unity: the ports its player processes listen on
        if units is not None:
            self.resumed["unity_ports"] = [int(u.process.args[u.process.args.index("--mlagents-port") + 1])
                                           for u in units]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1
        if self._pending:
            self.local_returns[pl_module.env_steps] = self._pending
            self._pending = []

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = getattr(pl_module, "buffer", None)
        torch.save({
            "state_dict": {k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
            "env_steps": pl_module.env_steps,
            "episodes": pl_module.episodes,
            "num_envs": pl_module.num_envs,
            "rounds_per_batch": pl_module.rounds_per_batch,
            "batches": self.batches,
            "local_returns": self.local_returns,
            "resumed": self.resumed,
            "initial_parameters": self.initial_parameters,
            "buffer": None if buffer is None else buffer.state_dict(),
            "last_eval_return": None if pl_module.last_evaluation is None else pl_module.last_evaluation.return_mean,
        }, self.folder / f"rank{trainer.global_rank}.pt")
