"""Starting a Unity build so that its failures can be explained: its last output lines, why it would not run, free ports.

mlagents_envs starts a build with ``env_utils.launch_executable`` (mlagents_envs/env_utils.py), which sends the
process's stdout and stderr to ``/dev/null`` (unless mlagents' logger is at DEBUG) and turns only a
``PermissionError`` into its own exception: a build that exits at start-up leaves nothing to read unless it was
given ``-logFile`` (``log_folder``), and any other ``OSError`` of ``exec`` (ENOEXEC, "exec format error")
escapes as it is. ``launch_executable`` here does the same launch while ``capturing_output()`` is active, with the
output going to a pipe of which a thread keeps the last lines (``process.output_tail``).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import platform
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import IO, Any

from mlagents_envs import env_utils
from mlagents_envs.exception import UnityEnvironmentException

from rl_lightning.errors import ConfigurationError

TAIL_LINES = 20
"""Lines of a build's output (or log) shown when it exits while starting."""

_mlagents_launch_executable = env_utils.launch_executable
_state = threading.local()


class OutputTail:
    """The last ``TAIL_LINES`` lines a process writes to a pipe, read by a daemon thread (so the pipe never fills)."""

    def __init__(self, stream: IO[bytes], lines: int = TAIL_LINES) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._thread = threading.Thread(target=self._read, args=(stream,), name="unity-output", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(lambda: stream.readline(4096), b""):  # bounded reads: a line without end stays small
                line = raw.decode(errors="replace").rstrip()
                if line.strip():
                    self.lines.append(line)

    def last(self, wait: float = 1.0) -> list[str]:
        """The lines kept, after waiting up to ``wait`` seconds for the process's end of output."""
        self._thread.join(wait)
        return list(self.lines)


def launch_executable(file_name: str, args: list[str]) -> subprocess.Popen:
    """mlagents' ``launch_executable``, with the output kept in ``process.output_tail`` inside ``capturing_output``.

    Exec errors (``OSError``) propagate unchanged for ``exec_failure`` to explain.
    """
    if not getattr(_state, "capturing", False):
        return _mlagents_launch_executable(file_name, args)
    launch_string = env_utils.validate_environment_path(file_name)
    if launch_string is None:
        raise UnityEnvironmentException(f"Couldn't launch the {file_name} environment. "
                                        "Provided filename does not match any environments.")
    # start_new_session as mlagents: a Ctrl-C to the trainer does not reach the build, which is closed in order.
    process = subprocess.Popen([launch_string, *args], start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    process.output_tail = OutputTail(process.stdout)  # type: ignore[attr-defined]
    return process


# mlagents_envs.environment calls env_utils.launch_executable through the module: outside capturing_output() (any
# UnityEnvironment not started by a UnityProcess) the replacement calls mlagents' own.
env_utils.launch_executable = launch_executable


@contextlib.contextmanager
def capturing_output() -> Iterator[None]:
    """Within it, builds this thread launches through mlagents keep their last output lines."""
    _state.capturing = True
    try:
        yield
    finally:
        _state.capturing = False


def output_tail(process: Any) -> list[str]:
    """The last output lines of a process started by ``launch_executable`` (empty for others)."""
    tail = getattr(process, "output_tail", None)
    return tail.last() if tail is not None else []


def exec_failure(file_name: str, error: OSError) -> ConfigurationError:
    """Why ``exec`` refused ``file_name``, and what to do about it."""
    where = f"file_name={file_name!r}"
    machine = f"{platform.system()} on {platform.machine()}"
    if error.errno == errno.ENOEXEC:
        return ConfigurationError(
            f"{where} is not a program this machine ({machine}) can run (exec format error): a text file without "
            "a '#!' first line, or a build for another operating system or processor; give the path of the "
            f"Unity build's executable made for {machine}")
    if error.errno in (errno.EACCES, errno.EPERM):
        return ConfigurationError(
            f"{where} could not be executed (permission denied): make it executable with chmod +x {file_name}, "
            "on a file system that allows programs (not mounted noexec)")
    if error.errno == errno.ENOENT and os.path.isfile(file_name):
        return ConfigurationError(
            f"{where} could not be executed: the interpreter named on its '#!' first line, or a library the "
            f"program needs, does not exist ({error.strerror})")
    return ConfigurationError(f"{where} could not be executed: {error.strerror or error}")


def port_is_free(port: int) -> bool:
    """Whether a gRPC server could listen on ``port``, checked as mlagents' ``RpcCommunicator.check_port`` does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT after a closed env is free
        try:
            s.bind(("localhost", port))
        except OSError:
            return False
    return True


def free_worker_id(base_port: int, start: int, count: int, tries: int = 1000) -> int | None:
    """The first ``worker_id`` >= ``start`` whose ``count`` ports (``base_port + worker_id`` on) are all free now."""
    worker_id = start
    while worker_id < start + tries and base_port + worker_id + count <= 65536:
        busy = next((k for k in range(count) if not port_is_free(base_port + worker_id + k)), None)
        if busy is None:
            return worker_id
        worker_id += busy + 1
    return None
