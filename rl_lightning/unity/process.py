"""One Unity process under mlagents' ``UnityEnvironment``, and the processes of an env launched and stepped together.

Everything here is about processes and their gRPC connection, not about observations or agents:
``resolve_file_name`` finds the build (or the project's player), ``start_processes`` launches one
``UnityProcess`` per worker id after checking its port, ``exchange_all`` resets or steps them all at once,
and ``end_processes`` ends them. A ``UnityProcess`` talks to its build through ``_Communicator`` (mlagents'
gRPC server, with thread queues in place of its pickling Pipe), notices a dead process within a second, and
turns every failure into a ``UnityProcessError`` that names the process and what happened to it. Each
process has its own side channels (given by the caller). Capturing a build's start-up output lives in
``rl_lightning.unity.launch``.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from mlagents_envs.communicator import PollCallback
from mlagents_envs.communicator_objects.observation_pb2 import PNG
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import add_UnityToExternalProtoServicer_to_server
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import (
    UnityCommunicatorStoppedException,
    UnityException,
    UnityTimeOutException,
    UnityWorkerInUseException,
)
from mlagents_envs.rpc_communicator import RpcCommunicator, UnityToExternalServicerImplementation
from mlagents_envs.side_channel.side_channel import SideChannel

from rl_lightning.errors import ConfigurationError, EnvironmentFault
from rl_lightning.unity.launch import (TAIL_LINES, capturing_output, exec_failure, free_worker_id, output_tail,
                                       port_is_free)

PLAYER = "rl-lightning-unity-player"
"""``file_name`` that names the project's own player (installed next to the ``rl-lightning`` command)."""


def resolve_file_name(file_name: str | None) -> str | None:
    """The executable to launch: ``None`` (the Editor), the installed player, or a checked path to a build."""
    if file_name is None:
        return None
    if file_name == PLAYER:
        found = shutil.which(PLAYER) or os.path.join(sysconfig.get_path("scripts"), PLAYER)
        if not os.access(found, os.X_OK):
            raise ConfigurationError(f"file_name={PLAYER!r}: the player is not installed (pip install rl_lightning)")
        return found
    path = os.path.abspath(os.path.expanduser(file_name))
    candidates = [path] + [path + ext for ext in (".x86_64", ".x86")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.X_OK):
                raise ConfigurationError(f"file_name={file_name!r}: {candidate} is not executable; make it executable "
                                         f"with chmod +x {shlex.quote(candidate)}")
            return path
    raise ConfigurationError(f"file_name={file_name!r}: no Unity build at {path} (tried {', '.join(candidates)})")


def _check_port_free(port: int) -> None:
    if not port_is_free(port):
        raise UnityWorkerInUseException(port)


def command_line_arguments(args: Sequence[Any] | None) -> list[str]:
    """Arguments as strings. YAML/the CLI may have turned ``"8"`` into 8 and a JSON argument into a dict or
    list: those go back as JSON (``str`` would give Python's repr, which JSON readers refuse)."""
    return [json.dumps(a) if isinstance(a, (dict, list)) else str(a) for a in args or ()]


class UnityProcessError(EnvironmentFault):
    """A Unity process exited, was killed, or stopped answering; the message says which process and what happened.

    By the time it is raised, every process of the env it belonged to has been ended.
    """


class _ThreadEnd:
    """One end of a two-way channel between threads of one process, with the ``multiprocessing`` Pipe API.

    mlagents hands each message between its gRPC thread and the trainer's thread
    through a ``multiprocessing.Pipe``: every observation message is pickled,
    i.e. serialised and parsed once more by the pure-Python protobuf that the
    pinned protobuf 3.20 is on Python 3.11. Queues pass the message objects
    themselves. After ``close`` (either end), waiting on the other raises ``EOFError``.
    """

    _CLOSED = object()

    def __init__(self, inbox: queue.SimpleQueue, outbox: queue.SimpleQueue) -> None:
        self.inbox, self.outbox = inbox, outbox
        self.pending: list[Any] = []

    def send(self, message: Any) -> None:
        self.outbox.put(message)

    def poll(self, timeout: float = 0.0) -> bool:
        if not self.pending:
            try:
                self.pending.append(self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait())
            except queue.Empty:
                return False
        return True

    def recv(self) -> Any:
        message = self.pending.pop() if self.pending else self.inbox.get()
        if message is self._CLOSED:
            self.pending.append(message)  # stays closed
            raise EOFError("the other end of the channel was closed")
        return message

    def close(self) -> None:
        self.outbox.put(self._CLOSED)


class _Servicer(UnityToExternalServicerImplementation):
    """mlagents' servicer with the thread channel in place of its Pipe."""

    def __init__(self) -> None:  # noqa: D107 (the parent's __init__ would open a Pipe)
        to_trainer, to_unity = queue.SimpleQueue(), queue.SimpleQueue()
        self.parent_conn = _ThreadEnd(to_trainer, to_unity)
        self.child_conn = _ThreadEnd(to_unity, to_trainer)

    def Exchange(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        self.child_conn.send(request)
        try:
            return self.child_conn.recv()
        except EOFError:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the trainer closed the environment")

    Initialize = Exchange


class _Communicator(RpcCommunicator):
    """mlagents' gRPC server, checking on the Unity process every second (at most) while it waits for an answer.

    mlagents checks in slices of ``timeout_wait // 10`` whole seconds: a busy loop for ``timeout_wait`` < 10,
    a dead process noticed up to 6 s late at the default 60. Messages pass between the gRPC thread and the
    trainer's through queues (``_ThreadEnd``), not a pickling Pipe.
    """

    def create_server(self) -> None:
        self.check_port(self.port)
        try:
            self.server = grpc.server(thread_pool=ThreadPoolExecutor(max_workers=2),
                                      options=(("grpc.so_reuseport", 1),))
            self.unity_to_external = _Servicer()
            add_UnityToExternalProtoServicer_to_server(self.unity_to_external, self.server)
            self.server.add_insecure_port(f"[::]:{self.port}")  # all addresses: Unity may run in a container
            self.server.start()
            self.is_open = True
        except Exception:  # noqa: BLE001 (mlagents reports any failure to serve as the port being in use)
            raise UnityWorkerInUseException(self.worker_id) from None

    def poll_for_timeout(self, poll_callback: PollCallback | None = None) -> None:
        deadline = time.monotonic() + self.timeout_wait
        interval = min(1.0, self.timeout_wait / 10)
        while not self.unity_to_external.parent_conn.poll(max(0.0, min(interval, deadline - time.monotonic()))):
            if poll_callback is not None:
                poll_callback()  # raises once the process has exited
            if time.monotonic() >= deadline:
                raise UnityTimeOutException(f"no answer within timeout_wait={self.timeout_wait} seconds")


def _end_process(process: subprocess.Popen, timeout: float) -> None:
    """Give ``process`` ``timeout`` seconds to quit, then kill it and what it started; reap it either way."""
    try:
        process.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        # Launched with start_new_session: its process group is its own, and holds any children it started.
        os.killpg(process.pid, signal.SIGKILL)  # also ends a stopped (SIGSTOP) process
    except ProcessLookupError:
        pass
    process.wait()


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal"
        return f"was killed by signal {name} ({-returncode})"
    return f"exited with return code {returncode}"


def _last_lines(path: str, n: int = 1) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096 * n))
            lines = [line.rstrip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    return lines[-n:]


class UnityProcess(UnityEnvironment):
    """One Unity process of a ``UnityVectorEnv``: mlagents' ``UnityEnvironment`` that names itself when it fails.

    Unlike mlagents' own, it notices a dead process within a second (any ``timeout_wait``), its failures
    are ``UnityProcessError`` (also at start-up, where mlagents leaves its gRPC server open), and closing
    it kills a process that does not quit within ``timeout_wait`` together with its children, and reaps it.

    Args:
        index: its place among the env's processes.
        num_processes: how many processes the env has.
        **kwargs: ``UnityEnvironment``'s arguments.
    """

    def __init__(self, index: int, num_processes: int, **kwargs: Any) -> None:
        self.index, self.num_processes = index, num_processes
        self.process: subprocess.Popen | None = None  # kept after closing, for error messages
        self.png_observations: dict[str, tuple[bool, ...]] = {}  # filled by _update_behavior_specs
        try:
            with capturing_output():  # the build's last output lines, for a start-up failure's message
                super().__init__(**kwargs)
        except UnityWorkerInUseException:
            raise
        except UnityException as e:
            raise self.fault(e, "while starting") from e
        except OSError as e:  # exec refused the file; mlagents leaves its gRPC server open
            self._close(0)
            raise exec_failure(kwargs.get("file_name"), e) from None
        self.process = self._process

    def _update_behavior_specs(self, output: UnityOutputProto) -> None:
        """mlagents' spec update, also noting which observations of a new behavior arrive PNG-compressed.

        The spec does not say (``behavior_spec_from_proto`` reads shapes only), and ``rpc_utils`` decodes
        PNG and ``float_data`` images alike to float32: only the ``ObservationProto.compression_type`` of the
        first agent info tells them apart. A sensor's compression is part of its ``CompressionSpec``
        (com.unity.ml-agents/Runtime/Sensors/CompressionSpec.cs), fixed when the sensor is made.
        """
        super()._update_behavior_specs(output)
        for brain in output.rl_initialization_output.brain_parameters:
            infos = output.rl_output.agentInfos[brain.brain_name].value
            if infos and brain.brain_name not in self.png_observations:
                self.png_observations[brain.brain_name] = tuple(
                    o.compression_type == PNG for o in infos[0].observations)

    @staticmethod
    def _get_communicator(worker_id: int, base_port: int, timeout_wait: int) -> RpcCommunicator:
        return _Communicator(worker_id, base_port, timeout_wait)

    def _close(self, timeout: float | None = None) -> None:
        # mlagents kills a process that does not quit in time, but leaves it unreaped and its children alive.
        self.process = getattr(self, "_process", None) or self.process
        self._process = None
        super()._close(timeout)
        if self.process is not None:
            _end_process(self.process, self._timeout_wait if timeout is None else timeout)

    def exchange(self, command: str) -> None:
        """``reset`` or ``step``; a process that died or does not answer raises ``UnityProcessError`` (and is ended)."""
        try:
            self.reset() if command == "reset" else self.step()
        except UnityException as e:
            raise self.fault(e, f"at {command}") from e
        except RuntimeError as e:
            # mlagents_envs refuses a step whose observations or rewards hold NaN or inf (rpc_utils.py,
            # _raise_on_nan_and_inf: "The observations provided had NaN values.") with a bare RuntimeError.
            if "provided had" not in str(e):
                raise
            raise EnvironmentFault(f"{self.describe()} sent non-finite numbers at {command}: {e} Fix the build so "
                                   "that observations and rewards are finite") from e

    def fault(self, error: UnityException, during: str) -> UnityProcessError:
        """End the process and say which it was and what happened to it."""
        process = self.process or getattr(self, "_process", None)
        if isinstance(error, UnityTimeOutException):  # checked first: it was alive until the deadline
            what = f"did not answer within timeout_wait={self._timeout_wait} seconds"
        elif process is not None and process.poll() is not None:
            what = _exit_description(process.returncode)
        elif isinstance(error, UnityCommunicatorStoppedException):
            what = "ended the connection"
        else:
            what = f"failed ({error})"
        self._close(0)
        message = f"{self.describe()} {what} {during}"
        log_file = self.log_file()
        source, lines = "log", _last_lines(log_file, TAIL_LINES) if log_file else []
        if not lines and during == "while starting":
            source, lines = "output", output_tail(process)  # stdout and stderr, which mlagents would discard
        if lines:
            message += f"; the last line of its {source}: {lines[-1].strip()}"
        if during == "while starting" and lines:  # a build that exits at start-up: the lines that say why
            message += f"\nThe last {len(lines)} lines of its {source}:\n" + "\n".join(f"    {line}" for line in lines)
        return UnityProcessError(message)

    def log_file(self) -> str | None:
        """The player's log file: the ``-logFile`` argument (set by mlagents with ``log_folder``), if any."""
        args = self._executable_args()
        for flag, value in itertools.pairwise(args):
            if flag.lower() == "-logfile":
                return value
        return None

    def describe(self) -> str:
        """``Unity process 0 of 2 (worker_id 3, port 5008, pid 123; command: ...; log: ...)``."""
        process = self.process or getattr(self, "_process", None)
        ids = f"worker_id {self._worker_id}, port {self._port}"
        if process is None:
            details = [ids + ", the Editor or a player started by hand"]
        else:
            details = [f"{ids}, pid {process.pid}", f"command: {shlex.join(str(a) for a in process.args)}"]
        log_file = self.log_file()
        if log_file:
            details.append(f"log: {log_file}")
        return f"Unity process {self.index} of {self.num_processes} ({'; '.join(details)})"


def start_processes(file_name: str | None, num_processes: int, worker_id: int, base_port: int | None,
                    channels: Sequence[Sequence[SideChannel]], seed: int, additional_args: Sequence[Any] | None,
                    **kwargs: Any) -> list[UnityProcess]:
    """Launch ``num_processes`` Unity processes on worker ids ``worker_id`` on; if one fails, end those started.

    Process ``k`` gets worker id ``worker_id + k``, seed ``seed + k`` and the side channels ``channels[k]``.
    A port in use is a ``ConfigurationError`` that names a ``worker_id`` whose ports are free now.

    Args:
        file_name: the executable (``resolve_file_name``), or ``None`` for the Editor.
        **kwargs: the other ``UnityEnvironment`` arguments, the same for every process.
    """
    # ML-Agents' base ports: one for builds, another for the Editor (mlagents_envs/environment.py).
    first_port = base_port if base_port is not None else (
        UnityEnvironment.BASE_ENVIRONMENT_PORT if file_name else UnityEnvironment.DEFAULT_EDITOR_PORT)
    last_port = first_port + worker_id + num_processes - 1
    if last_port > 65535:
        raise ConfigurationError(f"worker_id={worker_id} puts process {num_processes - 1} on port {last_port} (base port "
                                 f"{first_port} + worker_id + process index), past 65535, the last TCP port; lower "
                                 "worker_id (or base_port)")
    units: list[UnityProcess] = []
    try:
        for k in range(num_processes):
            port = first_port + worker_id + k
            try:
                # Checked here first: a UnityEnvironment that fails on its port leaves an atexit hook that errors.
                _check_port_free(port)
                units.append(UnityProcess(
                    index=k, num_processes=num_processes, file_name=file_name, worker_id=worker_id + k,
                    base_port=base_port, seed=seed + k, additional_args=command_line_arguments(additional_args),
                    side_channels=list(channels[k]), **kwargs))
            except UnityWorkerInUseException:
                free = free_worker_id(first_port, worker_id + num_processes, num_processes)
                hint = f"worker_id={free} has {'its port' if num_processes == 1 else 'the ports'} free now" \
                    if free is not None else "no free ports were found above it"
                raise ConfigurationError(
                    f"worker_id={worker_id + k}: its port is already in use by another Unity environment "
                    f"(port {port}); give each concurrent run its own worker_id ({hint})") from None
    except BaseException:
        end_processes(units)
        raise
    return units


def exchange_all(units: Sequence[UnityProcess], pool: ThreadPoolExecutor | None, command: str) -> None:
    """Reset or step every process, all at once (on ``pool``; one after the other without one); the first
    failure is raised once every process has answered or failed.

    The processes compute their steps in parallel while this thread waits (the waits release the GIL), as
    ``mlagents-learn`` does with one worker process per environment (``subprocess_env_manager.py``).
    """
    if pool is None:
        for unit in units:
            unit.exchange(command)
        return
    futures = [pool.submit(unit.exchange, command) for unit in units]
    errors = []
    for future in futures:
        try:
            future.result()
        except BaseException as e:  # noqa: BLE001 (each process's failure is collected, the first raised)
            errors.append(e)
    if errors:
        raise errors[0]


def end_processes(units: Sequence[UnityProcess]) -> None:
    """End every process: each gets ``timeout_wait`` seconds to quit, then it is killed."""
    for unit in units:
        try:
            unit.close()
        except Exception:  # noqa: BLE001 (a unit that failed to start is already closed)
            pass
