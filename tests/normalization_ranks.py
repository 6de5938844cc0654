"""One DDP rank of the normalization merge test: light imports, since each spawned rank imports this module."""

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rl_lightning.algorithms.normalization import Normalization
from gymnasium.spaces import Box


def rank_data(rank: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per batch, per env step: (observations of 3 sub-envs, rewards); different on each rank."""
    rng = np.random.default_rng(100 + rank)
    return [[(rng.normal(rank * 2.0, 1.0 + rank, size=(3, 2)), rng.normal(1.0 - rank, 2.0, size=3))
             for _ in range(4)] for _ in range(2)]


def run_rank(rank: int, port: int, results: Any) -> None:
    """Rank ``rank`` of 2 (gloo): two batches of steps, merged after each; put ``(rank, stats, all_gathers)``."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    calls = []

    def all_gather(tensor: torch.Tensor) -> torch.Tensor:  # as LightningModule.all_gather: stacked over the ranks
        calls.append(tensor.shape)
        gathered = [torch.empty_like(tensor) for _ in range(2)]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    norm = Normalization(Box(-np.inf, np.inf, (2,)), True, True, gamma=0.9, clip_obs=10.0, clip_reward=10.0,
                         epsilon=1e-8)
    norm.envs_reset(np.zeros((3, 2)), 3)
    norm.unseen_obs = None  # only the steps below are counted
    for batch in rank_data(rank):
        norm.begin_round(np.zeros((3, 2)))
        for obs, reward in batch:
            norm.observe(obs)
            norm.observe_rewards(reward, np.zeros(3, dtype=bool))
        norm.end_round()
        norm.merge_ranks(all_gather)
    # NumPy arrays, pickled by value: a tensor would travel as a shared-memory handle that the parent can only open
    # while this process still runs.
    results.put((rank, {k: v.numpy().copy() for k, v in norm.state_dict().items()}, len(calls)))
    dist.destroy_process_group()
