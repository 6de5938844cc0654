"""How a run asked to stop by SIGTERM (``timeout``, SLURM, Kubernetes) ends: soon, with ``last.ckpt``, and exit code 143.

Lightning 2.6 handles SIGTERM during ``fit``/``validate``/``test`` by setting a flag
(``Trainer.received_sigterm``, ``trainer/connectors/signal_connector.py``) that its loops check
between batches and epochs (``loops/training_epoch_loop.py`` ``advance``, ``loops/fit_loop.py``
``on_advance_end``), raising ``SIGTERMException``: a ``SystemExit`` without a code, so the
process exits 0 as if training had finished. Two things are added here:

- Collection checks the same flag between env steps (``termination_requested``) and abandons the
  rollout in progress (``Terminated``), so a long rollout stops within one env step rather than at
  the end of the batch.
- The exception that ends the run carries exit code 143 (128 + SIGTERM, what a shell reports for a
  process ended by SIGTERM), whichever of the checks raised it (``exit_code_for``).

``last.ckpt`` is written on the way out by ``rl_lightning.callbacks.LastCheckpoint``, and the envs are
closed (Unity processes ended) by the module's run support callback, as after Ctrl-C.
"""

from __future__ import annotations

import signal
from typing import Any

from lightning.pytorch.utilities.exceptions import SIGTERMException

from rl_lightning.lightning_compat import attached_trainer

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
"""143: the exit status of a run stopped by SIGTERM, as a shell reports a process ended by that signal."""


class Terminated(SIGTERMException):
    """SIGTERM stopped the run; a ``SIGTERMException`` (Lightning's) that exits with status 143."""

    def __init__(self) -> None:
        super().__init__(TERMINATED_EXIT_CODE)


def termination_requested(module: Any) -> bool:
    """Whether SIGTERM arrived during the Trainer call ``module`` runs in: cheap enough to ask every env step."""
    trainer = attached_trainer(module)
    return trainer is not None and trainer.received_sigterm


def exit_code_for(exception: BaseException) -> None:
    """Give a ``SIGTERMException`` raised by Lightning's own checks (no code: exit 0) the exit status 143."""
    if isinstance(exception, SIGTERMException) and exception.code in (None, 0):
        exception.code = TERMINATED_EXIT_CODE  # SystemExit's status is read from .code when the interpreter exits
