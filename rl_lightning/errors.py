"""Errors the library raises for bad input and for faults of the environments it runs.

The ``rl-lightning`` command prints these as one line on stderr, without a traceback
(``RL_LIGHTNING_TRACEBACK=1`` shows it), and exits with ``ConfigurationError.exit_code``
(2, bad input) or ``EnvironmentFault.exit_code`` (1, the run failed).
"""


class RLLightningError(Exception):
    """An error whose message is complete for the user: what went wrong, where, and how to fix it."""

    exit_code = 1


class ConfigurationError(RLLightningError, ValueError):
    """A setting is invalid; the message names the setting and how to fix it. Raised before training starts."""

    exit_code = 2


class OutputWriteError(RLLightningError, OSError):
    """A file the run writes (a checkpoint, an exported policy) could not be written: the disk is full, the folder
    read-only, the file size limit reached; the message names the file and the cause. Any previous file of that name
    is left as it was. Also an ``OSError``, which callers catching write errors already handle."""

    exit_code = 1


class EnvironmentFault(RLLightningError, RuntimeError):
    """An environment misbehaved during a run (non-finite numbers, a process that died or hung, wrong shapes);
    the message names the env and what it did."""

    exit_code = 1
