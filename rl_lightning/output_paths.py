"""Where a run writes: its output folders checked before anything is written, and failed writes named by cause.

Unchecked, an output folder that is a file or read-only fails deep inside a run (``NotADirectoryError`` from the
logger, ``OSError`` from the first checkpoint), and a full disk fails ``torch.save`` with ``RuntimeError: [enforce
fail at inline_container.cc] ... unexpected pos``: torch's zip writer (``caffe2/serialize/inline_container.cc``,
``PyTorchStreamWriter::writeRecord``) only checks the stream position after a record, so the ``errno`` is lost.
Here ``check_output_folders`` checks a run's folders before ``fit`` writes anything, ``check_output_file`` an
export's file, and ``write_failure`` tells the causes of a failed write apart: no space left (``shutil.disk_usage``),
the process's file size limit (``ulimit -f``), a read-only file system, permissions.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from rl_lightning.errors import ConfigurationError, OutputWriteError, RLLightningError

FULL_DISK_BYTES = 1 << 20
"""Free space below which a failed write is put down to a full disk (the failed file still holds what it wrote)."""
SIZE_LIMIT_SLACK = 1 << 16
"""How close to the file size limit a failed file must be for the write to be put down to that limit."""


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (``exists()`` is also False for a path under a file)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (made if missing), or ``None``. Nothing is created."""
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        return "is a file, not a folder" if existing == folder else f"lies under {str(existing)!r}, which is a file"
    # access() answers for this process's user, and says EROFS on a read-only mount even to root.
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "on a read-only file system" if _read_only_file_system(existing) else "not writable by this user"
        return f"is {why}" if existing == folder else f"would be made in {str(existing)!r}, which is {why}"
    return None


def check_output_folder(folder: str | os.PathLike, setting: str) -> None:
    """``ConfigurationError`` naming ``setting`` and the path when a run cannot write into ``folder``."""
    text = os.fspath(folder)
    if "://" in text:  # remote storage (fsspec URLs, which the loggers accept): its own writer reports
        return
    problem = _folder_problem(Path(text).expanduser().absolute())
    if problem is not None:
        raise ConfigurationError(f"{setting} {text!r} {problem}; give a folder this process can write into")


def check_output_file(path: str | os.PathLike, setting: str) -> None:
    """``ConfigurationError`` naming ``setting`` when ``path`` cannot be written as a file (a folder, or a folder
    that cannot be written into)."""
    text = os.fspath(path)
    target = Path(text).expanduser().absolute()
    if target.is_dir():
        raise ConfigurationError(f"{setting} {text!r} is a folder; give the path of the file to write, e.g. "
                                 f"{str(Path(text) / 'policy.onnx')!r}")
    problem = _folder_problem(target.parent)
    if problem is not None:
        raise ConfigurationError(f"{setting} {text!r} cannot be written: its folder {str(target.parent)!r} {problem}")


def check_output_folders(trainer: Any) -> None:
    """Before ``fit`` writes anything: the folders its loggers (``save_dir``) and checkpoint callbacks (``dirpath``;
    without one, Lightning's ``ModelCheckpoint.__resolve_ckpt_dir`` puts them in the logger's folder, else in
    ``default_root_dir``) write into."""
    root = getattr(trainer, "default_root_dir", None)
    loggers = list(getattr(trainer, "loggers", []) or [])
    for logger in loggers:
        save_dir = getattr(logger, "save_dir", None)
        if save_dir:
            from_root = root is not None and os.fspath(save_dir) == os.fspath(root)
            check_output_folder(save_dir, "trainer.default_root_dir" if from_root else "trainer.logger save_dir")
    for callback in getattr(trainer, "checkpoint_callbacks", []) or []:
        if getattr(callback, "dirpath", None) is not None:
            check_output_folder(callback.dirpath, f"{type(callback).__name__} dirpath")
        elif not loggers and root is not None:
            check_output_folder(root, "trainer.default_root_dir")


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def write_failure(err: BaseException, path: str | os.PathLike, what: str,
                  partial: str | os.PathLike | None = None) -> OutputWriteError | None:
    """The error to raise for ``err``, which writing ``what`` (``"checkpoint"``) to ``path`` raised; ``None`` when
    ``err`` is not a failed write (re-raise it then). ``partial``: the file being written, before it is removed (it
    still takes the space it took, and shows whether the file size limit was reached). Call it before that file is
    removed."""
    if isinstance(err, RLLightningError) or not isinstance(err, (OSError, RuntimeError)):
        return None
    path = Path(path)
    code = next((e.errno for e in _chain(err) if isinstance(e, OSError) and e.errno), None)
    folder = _existing_ancestor(path.absolute().parent)
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    limit = _file_size_limit()
    try:
        written = Path(partial).stat().st_size if partial is not None else None
    except OSError:
        written = None
    if code == errno.EDQUOT:
        cause, fix = f"the disk quota of {str(folder)!r} is exceeded", "free some space or write elsewhere"
    elif code == errno.ENOSPC or (free is not None and free < FULL_DISK_BYTES):
        cause = f"no space left on the disk of {str(folder)!r} ({free if free is not None else '?'} bytes free)"
        fix = "free some space or write to another disk"
    elif code == errno.EFBIG or (limit is not None and written is not None and written + SIZE_LIMIT_SLACK >= limit):
        cause = f"the file reached this process's file size limit ({limit} bytes, ulimit -f)"
        fix = "raise the limit (ulimit -f unlimited)"
    elif code == errno.EROFS:
        cause, fix = "the file system is read-only", "write to another folder"
    elif code in (errno.EACCES, errno.EPERM):
        cause, fix = "permission denied", "write to a folder this user may write into"
    elif isinstance(err, OSError):
        cause, fix = err.strerror or str(err) or type(err).__name__, "write to another folder"
    else:
        return None  # a RuntimeError with room on the disk and no size limit reached: not a failed write
    kept = f"; the previous {what} there is unchanged" if path.exists() else ""
    return OutputWriteError(f"could not write {what} {str(path)!r}: {cause}; {fix}{kept}")
