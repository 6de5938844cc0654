"""One DDP rank of the Unity stats reduction test: light imports, since each spawned rank imports this module."""

from typing import Any

import torch
import torch.distributed as dist

from rl_lightning.unity.stats import AVERAGE, MOST_RECENT, SUM, UnityStat, UnityStatsReducer


def run_rank(rank: int, port: int, results: Any) -> None:
    """Rank ``rank`` of 2 (gloo): reduce three points' stats, put ``(rank, [(values, all_reduces, gathers)])``."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    calls = {"reduce": 0, "gather": 0}

    def all_reduce(vector):
        calls["reduce"] += 1
        tensor = torch.tensor(vector, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def all_gather(obj):
        calls["gather"] += 1
        gathered = [None, None]
        dist.all_gather_object(gathered, obj)
        return gathered

    reducer = UnityStatsReducer(all_reduce, all_gather, world_size=2)
    points = [  # per point: this rank's stats; the ranks' key sets differ
        [{"avg": UnityStat(6.0, 3, AVERAGE, 1, 3), "last": UnityStat(5.0, 1, MOST_RECENT, 5, 5)},
         {"avg": UnityStat(4.0, 1, AVERAGE, 4, 4), "last": UnityStat(7.0, 1, MOST_RECENT, 7, 7),
          "sum": UnityStat(9.0, 3, SUM, 2, 4)}],
        [{"avg": UnityStat(1.0, 1, AVERAGE, 1, 1)}, {"sum": UnityStat(2.0, 2, SUM, 1, 1)}],
        [{}, {"new": UnityStat(3.0, 1, MOST_RECENT, 3, 3)}],
    ]
    out = []
    for point in points:
        before = dict(calls)
        values = reducer.reduce(point[rank])
        out.append((values, calls["reduce"] - before["reduce"], calls["gather"] - before["gather"]))
    results.put((rank, out))
    dist.destroy_process_group()
