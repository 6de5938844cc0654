"""The IterableDatasets Lightning's loops iterate: the rounds of each training batch, and one evaluation request."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import IterableDataset


def private_generator() -> torch.Generator:
    """For the DataLoaders of these datasets: each iterator they create draws a seed, which would otherwise come
    from torch's global generator. Lightning creates them a different number of times in a resumed run than in an
    uninterrupted one, and the policy's and the buffer's draws must not depend on that."""
    return torch.Generator().manual_seed(0)


class RoundStream(IterableDataset):
    """One epoch of training batches for Lightning's training loop, as round counts.

    Each item is the number of rounds (collect, then update: see ``rl_lightning.algorithms.schedule``) that the
    next ``training_step`` runs; the module collects each round's data with its live policy right before that
    round's updates, so on-policy data stays on-policy whatever Lightning fetches ahead. ``plan`` gives the
    epoch's batches from the run's progress when the epoch starts (fewer in the last epoch of the budget); the
    length is exact, so Lightning's progress bar and epoch-end logic see the real number of batches. Use it with
    ``DataLoader(stream, batch_size=None, num_workers=0)``.

    Under DDP every rank iterates its own stream (Lightning puts no ``DistributedSampler`` on an IterableDataset),
    and the streams are equally long because the schedule counts env steps over all ranks.
    """

    def __init__(self, plan: Callable[[], list[int]]) -> None:
        super().__init__()
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[int]:
        yield from self.plan()


class EvaluationRequests(IterableDataset):
    """A single item per validation/test run: the module plays its evaluation episodes in one step."""

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[int]:
        yield 0
