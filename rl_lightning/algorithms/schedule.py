"""How a run's env-step budget divides into rounds, training batches and epochs: decided here, and only here.

A **round** is one collect-then-update cycle: every sub-env takes the algorithm's own number of steps
(PPO/A2C ``n_steps``, DQN/DDPG ``train_freq``), then the algorithm updates on what was collected. A training
**batch** (one Lightning ``training_step``) runs ``rounds_per_batch`` rounds, so that Lightning's per-batch work
(hooks, loop bookkeeping, logging) is shared by several small rounds; the updates are those of one round per
batch. An **epoch** is ``steps_per_epoch`` env steps rounded up to whole rounds (its last batch may hold fewer
rounds), and training ends once ``total_steps`` env steps are spent, also rounded up to a whole round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundSchedule:
    """The rounds of a run, counted in env steps of all sub-envs (of all DDP ranks: every rank runs the same
    batches).

    Args:
        total_steps: the training budget.
        steps_per_epoch: the epoch's length before rounding up to whole rounds.
        round_steps: env steps one round adds (its steps per sub-env times the sub-envs).
        rounds_per_batch: rounds per training batch.
    """

    total_steps: int
    steps_per_epoch: int
    round_steps: int
    rounds_per_batch: int

    @property
    def rounds_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.round_steps)

    @property
    def epoch_steps(self) -> int:
        """Env steps of a full epoch."""
        return self.rounds_per_epoch * self.round_steps

    def rounds_left(self, env_steps: int) -> int:
        """Rounds until the budget is spent, from ``env_steps`` on."""
        return math.ceil(max(self.total_steps - env_steps, 0) / self.round_steps)

    def epoch_batches(self, env_steps: int) -> list[int]:
        """The rounds of each batch of the epoch that starts at ``env_steps``: a full epoch, or what is left of the
        budget."""
        rounds = min(self.rounds_per_epoch, self.rounds_left(env_steps))
        full, rest = divmod(rounds, self.rounds_per_batch)
        return [self.rounds_per_batch] * full + ([rest] if rest else [])

    def epochs_left(self, env_steps: int) -> int:
        """Epochs until the budget is spent, from ``env_steps`` on."""
        return math.ceil(self.rounds_left(env_steps) / self.rounds_per_epoch)

    def spent(self, env_steps: int) -> bool:
        return env_steps >= self.total_steps
