"""One run, one folder: a new run's ``version_N`` is claimed atomically, and a folder a live run writes to is locked.

Lightning's ``TensorBoardLogger`` and ``CSVLogger`` pick a new run's version as one more than the highest
``version_N`` folder they find (``_get_next_version`` in ``lightning/fabric/loggers/tensorboard.py`` and
``csv_logs.py``), and create it later, when something is first written: two runs started together into one
``save_dir`` both took ``version_0`` and overwrote each other's checkpoints and ``config.yaml``. Here the folder
is made with ``os.mkdir`` (which fails when another process made it first) before anything is written to it,
trying the next number until one is ours.

A ``fit`` holds ``.run.lock`` in its run folder (process id and host) while it runs; another ``fit`` into the
same folder (two ``--ckpt_path last`` resumes of one run at once, an explicit ``version``) is refused naming the
folder and the process. A lock left by a process that no longer exists (killed with SIGKILL, a machine that
restarted) is taken over; one from another host cannot be checked and is reported with the way to remove it.
"""

from __future__ import annotations

import atexit
import os
import socket
from pathlib import Path
from typing import Any

from rl_lightning.errors import ConfigurationError

LOCK_NAME = ".run.lock"
_held: set[Path] = set()


class RunFolderInUse(ConfigurationError):
    """Another live process trains into the run folder this one would write to."""


def _versioned_loggers(trainer: Any) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return [logger for logger in getattr(trainer, "loggers", []) if isinstance(logger, (TensorBoardLogger,
                                                                                       CSVLogger))]


def claim_run_folder(logger: Any) -> tuple[Path, bool]:
    """The run folder of a ``TensorBoardLogger`` or ``CSVLogger``, made now; whether this call created it.

    A logger without a version gets the first free ``version_N`` (made atomically, see the module's docstring); one
    with a version (a resumed run, an explicit one) keeps it, its folder made if missing.
    """
    from rl_lightning.lightning_compat import logger_version_given, next_logger_version, set_logger_version

    if logger_version_given(logger):
        folder = Path(logger.log_dir)
        created = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return folder, created
    root = Path(logger.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = next_logger_version(logger)
    while True:
        try:
            (root / f"version_{version}").mkdir()
        except FileExistsError:  # another run took it between the listing and now
            version += 1
            continue
        set_logger_version(logger, version)
        return Path(logger.log_dir), True


def claim_and_lock(trainer: Any) -> None:
    """For ``fit`` on rank 0: claim the run folder of each of the trainer's TensorBoard/CSV loggers and lock it,
    once the folders the run writes into are known to be writable (``check_output_folders``)."""
    from rl_lightning.output_paths import check_output_folders

    if getattr(trainer, "global_rank", 0) != 0:
        return
    check_output_folders(trainer)
    for logger in _versioned_loggers(trainer):
        folder, _ = claim_run_folder(logger)
        lock_run_folder(folder)


def lock_run_folder(folder: Path) -> None:
    """Hold ``folder``'s lock for this process; ``RunFolderInUse`` when a live process holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        return
    lock = folder / LOCK_NAME
    mine = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _live_owner(lock)
            if owner is not None:
                pid, host = owner
                where = "" if host == socket.gethostname() else f" on host {host}"
                raise RunFolderInUse(
                    f"run folder {str(folder)!r} is in use by process {pid}{where}, which is training into it; wait "
                    "for that run to end, or start a new run (without --ckpt_path, or with another logger version)"
                    + (f"; if that process is gone, delete {lock}" if where else "")) from None
            lock.unlink(missing_ok=True)  # its process is gone: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        _held.add(folder)
        return
    raise RunFolderInUse(f"run folder {str(folder)!r}: could not take its lock {lock}, which other processes keep "
                         "taking; is another run starting into it?")


def _live_owner(lock: Path) -> tuple[int, str] | None:
    """The process id and host in ``lock`` if that process may be alive (another host's always may)."""
    try:
        pid_text, host = lock.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None  # unreadable or half-written: a lock of a process killed while writing it
    if host != socket.gethostname():
        return pid, host
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid, host


def release_run_folders() -> None:
    """Remove the locks this process holds (at the end of ``fit``, and at exit)."""
    for folder in list(_held):
        lock = folder / LOCK_NAME
        try:
            if lock.read_text().split()[0] == str(os.getpid()):
                lock.unlink()
        except (OSError, IndexError):
            pass
        _held.discard(folder)


atexit.register(release_run_folders)
