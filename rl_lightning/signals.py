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
closed (Unity processes ended) by the module's run support callback.

Ctrl-C (SIGINT) stops a ``fit`` the same way: Lightning alone turns it into a ``KeyboardInterrupt`` raised
wherever the process is, in the middle of an update included, and a checkpoint written then held half an
update. During ``fit`` the first Ctrl-C only asks to stop (``StopSignals``); the run stops at the same
consistent point as for SIGTERM, with status 130 (128 + SIGINT). A second Ctrl-C stops at once, without a new
checkpoint (``last.ckpt`` stays that of the last epoch end).

Stopping is bounded: after SIGTERM or the first Ctrl-C, a run that has not ended within ``stop_timeout()``
seconds (``RL_LIGHTNING_STOP_TIMEOUT``, default 60; an env step that never returns, a very long update) is
ended by a watchdog thread with status 143 (130 for Ctrl-C) and a message, without a new checkpoint: the last
one written stays intact, as checkpoints are only ever replaced whole (``AtomicCheckpointIO``). The final
checkpoint's own save is not cut short. The watchdog needs the interpreter lock at some point: code in a C
extension that holds it forever cannot be stopped from inside the process (SIGKILL can; checkpoints survive it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from lightning.pytorch.utilities.exceptions import SIGTERMException

from rl_lightning.lightning_compat import attached_trainer

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
"""143: the exit status of a run stopped by SIGTERM, as a shell reports a process ended by that signal."""
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT
"""130: the exit status of a run stopped by Ctrl-C, as a shell reports a process ended by SIGINT."""
STOP_TIMEOUT_VARIABLE = "RL_LIGHTNING_STOP_TIMEOUT"
DEFAULT_STOP_TIMEOUT = 60.0


class Terminated(SIGTERMException):
    """SIGTERM stopped the run; a ``SIGTERMException`` (Lightning's) that exits with status 143."""

    def __init__(self) -> None:
        super().__init__(TERMINATED_EXIT_CODE)


class Interrupted(SIGTERMException):
    """Ctrl-C stopped the run at a consistent point; handled as SIGTERM is, exits with status 130."""

    def __init__(self) -> None:
        super().__init__(INTERRUPTED_EXIT_CODE)


def stop_timeout() -> float:
    """Seconds a run may take to stop after SIGTERM or Ctrl-C: ``RL_LIGHTNING_STOP_TIMEOUT``, default 60."""
    value = os.environ.get(STOP_TIMEOUT_VARIABLE, "")
    try:
        seconds = float(value) if value else DEFAULT_STOP_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        from rl_lightning.errors import ConfigurationError

        raise ConfigurationError(f"{STOP_TIMEOUT_VARIABLE}={value!r} must be a positive number of seconds")
    return seconds


class StopSignals:
    """The process's Ctrl-C handler during ``fit``, and the watchdog that bounds the time a requested stop takes.

    ``install`` (when ``fit``'s training starts) replaces the SIGINT handler and wraps the SIGTERM one, in the main
    thread only (Python runs signal handlers there). Lightning registered its SIGTERM handler before
    (``_SignalConnector.register_signal_handlers`` in ``lightning/pytorch/trainer/connectors/signal_connector.py``,
    called by ``Trainer._run`` after the setup hooks): ours calls it. ``uninstall`` puts the previous handlers
    back; Lightning's own teardown then restores those from before the run, SIGINT's included.
    """

    def __init__(self) -> None:
        self.interrupted = False  # the first Ctrl-C arrived
        self.exit_code: int | None = None
        self._previous: dict[int, Any] = {}
        self._installed: dict[int, Any] = {}
        self._timeout = DEFAULT_STOP_TIMEOUT
        self._deadline: threading.Thread | None = None
        self._saving = threading.Event()  # the final checkpoint is being written: the watchdog waits
        self._done = threading.Event()

    def install(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self._timeout = stop_timeout()  # a bad RL_LIGHTNING_STOP_TIMEOUT is reported now, not inside a handler
        self.interrupted, self.exit_code = False, None
        self._done.clear()
        self._previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                          signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._on_sigint)
        previous_sigterm = self._previous[signal.SIGTERM]

        def on_sigterm(signum: int, frame: Any) -> None:
            self._start_watchdog(TERMINATED_EXIT_CODE, "SIGTERM")
            if callable(previous_sigterm):
                previous_sigterm(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._installed = {signal.SIGINT: self._on_sigint, signal.SIGTERM: on_sigterm}

    def uninstall(self) -> None:
        self._done.set()
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            # Only where ours is still in place: at the end of fit Lightning has already put back the handlers from
            # before its run (its own SIGTERM one, ours wrapped, would otherwise stay and make SIGTERM a flag
            # nobody reads, in this process and every process it forks).
            if signal.getsignal(signum) is self._installed.get(signum):
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous, self._installed = {}, {}

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt  # the second Ctrl-C: at once
        self.interrupted = True
        print("Ctrl-C: stopping at the next consistent point and saving last.ckpt (Ctrl-C again stops at once, "
              "without saving)", file=sys.stderr, flush=True)
        self._start_watchdog(INTERRUPTED_EXIT_CODE, "Ctrl-C")

    def _start_watchdog(self, exit_code: int, cause: str) -> None:
        if self._deadline is not None and self._deadline.is_alive():
            return
        timeout = self._timeout
        self.exit_code = exit_code

        def watch() -> None:
            if self._done.wait(timeout):
                return
            while self._saving.is_set() and not self._done.wait(0.1):
                pass  # the final checkpoint is being written: let it finish
            if self._done.is_set():
                return
            print(f"rl-lightning: {cause}: the run did not reach a point where it can stop within {timeout:g} s (an "
                  "env step or an update that does not return); exiting without a new checkpoint, the last one "
                  f"written is intact ({STOP_TIMEOUT_VARIABLE} sets this limit)", file=sys.stderr, flush=True)
            _end_children()
            os._exit(exit_code)

        self._deadline = threading.Thread(target=watch, name="rl-lightning-stop-watchdog", daemon=True)
        self._deadline.start()

    @contextmanager
    def saving(self) -> Iterator[None]:
        """The watchdog does not end the process while this block (the stop's checkpoint) runs."""
        self._saving.set()
        try:
            yield
        finally:
            self._saving.clear()


def _end_children() -> None:
    """Terminate the processes this one started through multiprocessing (async env workers); os._exit skips the
    atexit handler that would. Unity players end when their connection closes."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()


stop_signals = StopSignals()
"""The process's one instance: signals are per process."""


def termination_requested(module: Any) -> bool:
    """Whether SIGTERM or Ctrl-C arrived during the Trainer call ``module`` runs in: cheap enough to ask every env
    step."""
    if stop_signals.interrupted:
        return True
    trainer = attached_trainer(module)
    return trainer is not None and trainer.received_sigterm


def stop_exception() -> SIGTERMException:
    """What the collection raises when ``termination_requested``: ``Interrupted`` after Ctrl-C, else
    ``Terminated``."""
    return Interrupted() if stop_signals.interrupted else Terminated()


def exit_code_for(exception: BaseException) -> None:
    """Give a ``SIGTERMException`` raised by Lightning's own checks (no code: exit 0) the exit status 143."""
    if isinstance(exception, SIGTERMException) and exception.code in (None, 0):
        exception.code = TERMINATED_EXIT_CODE  # SystemExit's status is read from .code when the interpreter exits
