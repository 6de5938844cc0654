"""Custom metrics a Unity build reports with ``Academy.Instance.StatsRecorder``: aggregated per key, reduced over ranks.

A Unity game calls ``StatsRecorder.Add(key, value, aggregation)``; each call travels to Python as one message
of the stats side channel (``com.unity.ml-agents/Runtime/StatsRecorder.cs``,
``Runtime/SideChannels/StatsSideChannel.cs``), and ``mlagents_envs``' ``StatsSideChannel``
(``side_channel/stats_side_channel.py``) appends each one to a list per key until ``get_and_reset_stats``.
ML-Agents' trainer drains that channel after every step (``mlagents/trainers/subprocess_env_manager.py``,
``worker``), hands the values to ``AgentManager.record_environment_stats`` (``agent_processor.py``) and
writes one number per key and summary period (``stats.py``, ``StatsReporter``/``StatsSummary``): the mean
(``Average``, and ``Histogram``, whose distribution it also writes), the last value (``MostRecent``, from
worker 0 only) or the sum (``Sum``).

Here the same: ``UnityStats`` drains the channels at every step and keeps, per key, a running total and
count (no list of values, so memory stays flat over any run), and ``UnityStatsReducer`` turns what
every DDP rank gathered since the last training point into one number per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from mlagents_envs.side_channel.stats_side_channel import StatsAggregationMethod, StatsSideChannel

from rl_lightning.lightning_compat import world_size

AVERAGE, MOST_RECENT, SUM, HISTOGRAM = (StatsAggregationMethod.AVERAGE, StatsAggregationMethod.MOST_RECENT,
                                        StatsAggregationMethod.SUM, StatsAggregationMethod.HISTOGRAM)


class UnityStat(NamedTuple):
    """One key's aggregate over a period: ``value`` is ``total / count``, or ``total`` for ``Sum``.

    ``total`` and ``count`` are what adds up over processes and ranks: for ``Average`` and ``Histogram`` the
    sum and number of the values, for ``MostRecent`` the last value and 1 (so that several of them combine
    to the mean of their last values), for ``Sum`` the sum and number of the values.
    """

    total: float
    count: int
    method: StatsAggregationMethod
    low: float
    """The smallest value of the period (``MostRecent``: the last value)."""
    high: float
    """The largest value of the period (``MostRecent``: the last value)."""

    @property
    def value(self) -> float:
        """What is logged: the mean, the most recent value, or the sum."""
        return self.total if self.method == SUM else self.total / self.count


class UnityStats:
    """Per-key aggregates of the stats messages received since the last ``read``, bounded whatever the run's length.

    ``Histogram`` is kept as an average (a running sum and count): ML-Agents writes its mean as the scalar too.
    A key is expected to keep one aggregation method; if it changes, the key starts over with the new one
    (ML-Agents' ``StatsReporter`` likewise applies a key's latest method to all its values).
    """

    def __init__(self) -> None:
        self._totals: dict[str, list[Any]] = {}  # key -> [total, count, method, low, high]

    def __len__(self) -> int:
        return len(self._totals)

    def add(self, key: str, value: float, method: StatsAggregationMethod) -> None:
        """Take one reported value into its key's aggregate."""
        entry = self._totals.get(key)
        if entry is None or entry[2] != method:
            self._totals[key] = [value, 1, method, value, value]
            return
        if method == MOST_RECENT:
            entry[0] = entry[3] = entry[4] = value
            return
        entry[0] += value
        entry[1] += 1
        entry[3], entry[4] = min(entry[3], value), max(entry[4], value)

    def drain(self, channels: Iterable[StatsSideChannel]) -> None:
        """Empty each channel (one per Unity process, in process order) into the aggregates.

        Of the ``MostRecent`` values that arrive together, the first process's is kept: ML-Agents records
        those of worker 0 alone, so that concurrent environments do not overwrite each other's.
        """
        claimed: set[str] = set()  # MostRecent keys an earlier process sent in this drain
        for channel in channels:
            sent: set[str] = set()
            for key, entries in channel.get_and_reset_stats().items():
                for value, method in entries:
                    if method == MOST_RECENT:
                        if key in claimed:
                            continue
                        sent.add(key)
                    self.add(key, float(value), method)
            claimed |= sent

    def read(self) -> dict[str, UnityStat]:
        """The aggregates since the last ``read``, which it clears."""
        totals, self._totals = self._totals, {}
        return {key: UnityStat(*entry) for key, entry in totals.items()}


class UnityStatsReducer:
    """Combines the ranks' ``UnityStat``s of a training point into one value per key, with one collective.

    Each rank sends ``(total, count)`` for every key of an agreed list; summed over the ranks, a key's value is
    ``total / count`` (``Average``/``Histogram``: the mean of all values; ``MostRecent``: the mean of the ranks'
    last values) or ``total`` (``Sum``). The list of keys grows when a rank sees a new key: it says so in the
    same all-reduce (a flag), and only then are the keys gathered (``all_gather_object``) and the reduction
    repeated. In a single process there is no collective at all.

    Args:
        all_reduce: sums a float64 vector over the ranks and returns the sum (not called in a single process).
        all_gather: gathers one picklable object per rank into a list (not called in a single process).
        world_size: the number of ranks.
    """

    def __init__(self, all_reduce: Callable[[list[float]], list[float]],
                 all_gather: Callable[[Any], list[Any]], world_size: int = 1) -> None:
        self.all_reduce, self.all_gather, self.world_size = all_reduce, all_gather, world_size
        self.keys: dict[str, StatsAggregationMethod] = {}  # the agreed layout, the same on every rank

    def reduce(self, local: dict[str, UnityStat]) -> dict[str, float]:
        """Every key reported on some rank since the last point, with its combined value.

        A ``Sum`` key seen at an earlier point and not since is 0: the sum over a period without values. (Other
        keys are left out; Lightning's logger then repeats their last value of the epoch.)
        """
        if self.world_size == 1:
            out = {key: 0.0 for key, method in self.keys.items() if method == SUM}
            out.update((key, stat.value) for key, stat in local.items())
            self.keys.update((key, stat.method) for key, stat in local.items())
            return out
        new = any(self.keys.get(key) != stat.method for key, stat in local.items())
        summed = self.all_reduce(self._vector(local, new))
        if summed[0] > 0:  # some rank has a key (or method) the layout lacks: agree on the union, then reduce again
            for keys in self.all_gather({key: stat.method for key, stat in local.items()}):
                self.keys.update(keys)
            summed = self.all_reduce(self._vector(local, False))
        out = {}
        for i, (key, method) in enumerate(self.keys.items()):
            total, count = summed[1 + 2 * i], summed[2 + 2 * i]
            if method == SUM:
                out[key] = total
            elif count > 0:
                out[key] = total / count
        return out

    def _vector(self, local: dict[str, UnityStat], new: bool) -> list[float]:
        vector = [1.0 if new else 0.0]
        for key in self.keys:
            stat = local.get(key)
            vector += [stat.total, float(stat.count)] if stat is not None else [0.0, 0.0]
        return vector


def training_point_stats(module: Any) -> dict[str, float]:
    """``unity/<key>`` of an ``RLModule``'s Unity training env for one training point, combined over the DDP ranks.

    Every rank calls it at every point (as any collective needs). For envs other than Unity it returns ``{}``
    and costs no collective.
    """
    from rl_lightning.unity.parameters import find_unity_env

    unity = find_unity_env(module.envs)
    if unity is None:
        return {}
    if module._unity_stats_reducer is None:
        import torch

        def all_reduce(vector: list[float]) -> list[float]:
            return module.reduce_across_ranks(torch.tensor(vector, dtype=torch.float64, device=module.device)).tolist()

        def all_gather(obj: Any) -> list[Any]:
            gathered: list[Any] = [None] * world_size(module)
            torch.distributed.all_gather_object(gathered, obj)
            return gathered

        module._unity_stats_reducer = UnityStatsReducer(all_reduce, all_gather, world_size(module))
    return {f"unity/{key}": value for key, value in module._unity_stats_reducer.reduce(unity.read_stats()).items()}
