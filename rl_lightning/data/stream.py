"""The IterableDataset through which Lightning's training loop drives environment collection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch.utils.data import IterableDataset


class Collector(Protocol):
    """What the stream needs of the module it feeds (``RLModule``): the epoch's length and one collection."""

    def batches_this_epoch(self) -> int: ...

    def collect(self) -> Any: ...


class ExperienceStream(IterableDataset):
    """One epoch of training batches, each collected from the environments on demand.

    Iterating calls ``module.collect()`` once per batch: it steps the envs with
    the live policy and returns the data of the batch's first round for the next
    ``training_step``, which collects the batch's further rounds itself, each
    after the previous round's updates (see ``RLModule.collects_per_batch``). The
    length is exact (the epoch's batches, fewer in the last epoch of the
    budget), so Lightning does not pre-fetch: a batch is collected only after
    the previous update has been applied, which keeps on-policy data on-policy.
    Use it with ``DataLoader(stream, batch_size=None, num_workers=0)`` so the
    generator runs in the trainer process, next to the policy.

    Under DDP every rank iterates its own stream over its own envs (Lightning
    puts no ``DistributedSampler`` on an IterableDataset), and the streams are
    equally long because the module counts env steps over all ranks.
    """

    def __init__(self, module: Collector) -> None:
        super().__init__()
        self.module = module

    def __len__(self) -> int:
        return self.module.batches_this_epoch()

    def __iter__(self) -> Iterator[Any]:
        for _ in range(len(self)):
            yield self.module.collect()


class EvaluationRequests(IterableDataset):
    """A single item per validation/test run: the module plays its evaluation episodes in one step."""

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[int]:
        yield 0
