"""Unity ML-Agents builds as a Gymnasium vector env: the agents of one behavior are the sub-envs."""

from __future__ import annotations

import bisect
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
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from mlagents_envs.base_env import ActionTuple, BehaviorSpec
from mlagents_envs.communicator import PollCallback
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import (
    UnityCommunicatorStoppedException,
    UnityException,
    UnityTimeOutException,
    UnityWorkerInUseException,
)
from mlagents_envs.communicator_objects.observation_pb2 import PNG
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import add_UnityToExternalProtoServicer_to_server
from mlagents_envs.rpc_communicator import RpcCommunicator, UnityToExternalServicerImplementation
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from rl_lightning.envs.spaces import HYBRID_KEYS, hybrid_action_space, is_hybrid
from rl_lightning.errors import ConfigurationError, EnvironmentFault
from rl_lightning.unity.launch import (TAIL_LINES, capturing_output, exec_failure, free_worker_id, output_tail,
                                       port_is_free)
from rl_lightning.unity.parameters import Curriculum, parse_parameters
from rl_lightning.unity.stats import UnityStat, UnityStats

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


def observation_keys(spec: BehaviorSpec) -> list[str]:
    """Dict keys of the behavior's observations, in Unity's order: their names, or ``obs_<i>``."""
    return [obs_spec.name or f"obs_{i}" for i, obs_spec in enumerate(spec.observation_specs)]


def observation_space_from_spec(spec: BehaviorSpec, uint8_images: bool = True,
                                png: Sequence[bool] | None = None) -> gym.Space:
    """One observation -> Box; several -> Dict keyed by ``observation_keys``. Images stay HWC.

    ``png`` says, per observation, whether Unity sends it PNG-compressed (``UnityProcess.png_observations``;
    ``None``: none is). mlagents decodes a PNG image to its bytes / 255, float32 in [0, 1]; with
    ``uint8_images`` such images are kept as their uint8 bytes instead (exact, and a quarter of the memory in
    a replay buffer). Uncompressed images (``float_data``) are whatever floats the sensor wrote, not
    necessarily in [0, 1] (Unity's ``CountingGridSensor`` sends counts, uncompressed:
    com.unity.ml-agents/Runtime/Sensors/CountingGridSensor.cs): they stay float32, unbounded and unclipped.
    """
    boxes = {}
    png = tuple(png) if png is not None else (False,) * len(spec.observation_specs)
    for key, obs_spec, compressed in zip(observation_keys(spec), spec.observation_specs, png):
        shape = tuple(obs_spec.shape)
        if len(shape) == 3 and compressed and uint8_images:
            boxes[key] = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
            continue
        low, high = (0.0, 1.0) if len(shape) == 3 and compressed else (-np.inf, np.inf)
        boxes[key] = gym.spaces.Box(low, high, shape=shape, dtype=np.float32)
    if len(boxes) == 1:
        return next(iter(boxes.values()))
    return gym.spaces.Dict(boxes)


def action_space_from_spec(spec: BehaviorSpec) -> gym.Space:
    """One discrete branch -> Discrete; several -> MultiDiscrete; continuous -> Box(-1, 1); both -> the hybrid Dict.

    A hybrid spec (continuous actions and discrete branches together, ``ActionSpec`` in mlagents_envs/base_env.py)
    becomes ``hybrid_action_space``: ``Dict({"continuous": Box(-1, 1, (n,)), "discrete": MultiDiscrete(branches)})``.
    """
    action = spec.action_spec
    if action.continuous_size and action.discrete_size:
        return hybrid_action_space(action.continuous_size, action.discrete_branches)
    if action.continuous_size:
        return gym.spaces.Box(-1.0, 1.0, shape=(action.continuous_size,), dtype=np.float32)
    if len(action.discrete_branches) == 1:
        return gym.spaces.Discrete(action.discrete_branches[0])
    return gym.spaces.MultiDiscrete(list(action.discrete_branches))


class _Agents:
    """Which Unity agent holds which sub-env (slot), re-mapped at every message.

    Unity's agent ``id`` is an *episode* id (com.unity.ml-agents ``Runtime/Agent.cs``: ``m_EpisodeId`` comes from
    ``EpisodeIdCounter.GetEpisodeId()`` when the agent is initialised and again at every ``_AgentReset``, and
    ``AgentInfo.episodeId`` is what ``Runtime/Communicator/GrpcExtensions.cs`` sends as the proto's ``id``). So an
    agent that ends an episode is in TerminalSteps under its old id and in DecisionSteps under a new one; a
    disabled or destroyed agent sends one last done step (``OnDisable`` -> ``NotifyAgentDone(Disabled)``: done, not
    max-step) and is gone; a spawned agent appears under an id never seen. Slots are keyed by
    ``(process, id)``: a terminal frees its slot, an unknown id takes a free slot, preferring one its own
    process freed in the same message (so an agent that ends and restarts keeps its sub-env).
    """

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self.slot: dict[tuple[int, int], int] = {}
        self.free: list[int] = list(range(num_slots))  # kept sorted: the lowest free slot is taken first

    def release(self, key: tuple[int, int]) -> int | None:
        i = self.slot.pop(key, None)
        if i is not None:
            bisect.insort(self.free, i)
        return i

    def place(self, key: tuple[int, int], preferred: list[int]) -> int | None:
        """The slot of ``key``; a new agent takes the first free slot of ``preferred``, else the lowest free one
        (``None`` when no slot is free)."""
        i = self.slot.get(key)
        if i is not None:
            return i
        for j in preferred:
            if j in self.free:
                break
        else:
            if not self.free:
                return None
            j = self.free[0]
        self.free.remove(j)
        self.slot[key] = j
        return j

    def occupied(self) -> np.ndarray:
        held = np.zeros(self.num_slots, bool)
        held[list(self.slot.values())] = True
        return held


def warn_if_blind(spec: BehaviorSpec, behavior_name: str, no_graphics: bool) -> None:
    """Warn that a behavior's visual observations will be blank when its build runs with ``no_graphics``.

    ``-nographics`` starts Unity without a graphics device, so cameras render nothing; ML-Agents says to use it
    only without visual observations (``--no-graphics`` help in ml-agents/mlagents/trainers/cli_utils.py).
    Sensors that are rank 3 without a camera (grid sensors) are not told apart: the warning names the fix.
    """
    images = [key for key, obs_spec in zip(observation_keys(spec), spec.observation_specs)
              if len(obs_spec.shape) == 3]
    if no_graphics and images:
        warnings.warn(f"no_graphics=True but behavior {behavior_name!r} has visual observations {images}: a Unity "
                      "build started with -nographics renders no camera, so camera images arrive blank; set "
                      "no_graphics=False (ML-Agents' default) unless these come from a sensor that needs no "
                      "rendering (e.g. a grid sensor)", UserWarning, stacklevel=3)


class UnityVectorEnv(gym.vector.VectorEnv):
    """The agents of one behavior, across one or several Unity processes, as Gymnasium sub-envs.

    Same-step autoreset like the library's other vector envs: when an agent's
    episode ends, ``step`` returns the first observation of its next episode and
    puts the last one in ``info["final_obs"]``; Unity's ``interrupted`` (a max
    step) is ``truncated``, any other end ``terminated``. Action masks appear as
    ``info["action_mask"]`` (True = allowed).

    Agents come and go as in a real build (see ``_Agents``): the number of
    sub-envs is fixed (the agents at the first reset, or ``max_agents``), each
    agent holds one while it lives, an agent that restarts keeps its sub-env,
    and a sub-env without an agent is *inactive*: ``info["active"]`` is False for
    it, its row keeps its last observation, gets reward 0 and its action is not
    sent. Actions go to agents by id, whatever order Unity lists them in.

    ``info["decision"]`` (bool, one per sub-env) says which rows hold an
    observation on which their agent asked for a decision: only their next
    actions reach Unity. With a Unity ``DecisionRequester`` whose period is above
    1, an agent between decisions is in neither DecisionSteps nor TerminalSteps:
    its row keeps its last observation and gets reward 0 (Unity adds what it
    earns until its next decision to that decision's reward). The algorithms
    store one transition per decision: from the observation an agent decided on
    to its next decision or episode end, with every reward in between; rows
    that are not deciding are not stored. An episode end is always reported at once.

    Episode statistics (``info["episode"]`` with ``r`` and ``l``, mask ``info["_episode"]``, as Gymnasium's
    ``RecordEpisodeStatistics`` gives them) are kept here, per agent: the length counts the agent's decisions,
    and an inactive sub-env adds nothing to the next agent's episode.

    Agents in an ML-Agents group (``SimpleMultiAgentGroup``) have their ``group_id`` and ``group_reward``
    in ``info["group_id"]`` and ``info["group_reward"]`` (with ``_group_id``/``_group_reward`` masks: the
    rows that decided or ended in that step). Unity sends no other per-agent info; builds that mark
    success with the reward of an episode's last step (``SetReward(1); EndEpisode()``) can have it reported
    the Gymnasium way with ``success_reward``: an agent whose episode terminates
    with a last reward >= ``success_reward`` gets ``info["final_info"]["is_success"]``
    True (False for any other end); evaluation then reports a success rate.

    With several processes, every step is sent to all of them at once and their answers are awaited together
    (as ``mlagents-learn`` steps its env workers in parallel), so N builds give about N times the steps per second
    of one. Each process has its own side channels (mlagents sends a channel's queued messages with the next
    exchange of the one ``UnityEnvironment`` it belongs to, then empties the queue: ``side_channel_manager.py``),
    so engine settings and environment parameters reach every process.

    Args:
        file_name: path of a Unity build, ``"rl-lightning-unity-player"`` for the project's player, or ``None``
            to wait for the Editor's Play button.
        behavior_name: the behavior whose agents are the sub-envs; ``None`` if the build has only one.
        num_processes: Unity processes to run (worker ids ``worker_id`` ... ``worker_id + num_processes - 1``).
        worker_id: port offset of the first process.
        base_port: base port (ML-Agents' default when ``None``).
        no_graphics: run without rendering (``-nographics -batchmode``). Off by default, as in ML-Agents: a build
            so started renders no camera, so only builds without visual observations should use it (a behavior
            with rank-3 observations under ``no_graphics=True`` gets a warning).
        timeout_wait: seconds to wait for Unity at start and at each step. A process that exits or does not
            answer in time raises ``UnityProcessError`` (naming the process and what happened) after every
            process of this env has been ended.
        seed: Unity's random seed (process ``k`` gets ``seed + k``).
        additional_args: extra command-line arguments for each process.
        log_folder: folder for the players' log files.
        engine_settings: ``EngineConfigurationChannel.set_configuration_parameters`` keywords
            (``time_scale``, ``quality_level``, ``target_frame_rate``, ``width``, ``height``).
        parameters: environment parameters: a number is a constant; ``{"sampler": "uniform", "min", "max"}``,
            ``{"sampler": "gaussian", "mean", "std"}`` or ``{"sampler": "multirange", "intervals": [[a, b], ...]}``,
            each with an optional ``"seed"``, is drawn afresh by Unity at each episode reset. Process ``k`` gets
            sampler seed ``seed + k``, so the processes draw different values (``mlagents-learn`` applies the same
            settings, seed included, in every worker: ml-agents/mlagents/trainers/subprocess_env_manager.py,
            ``EnvironmentCommand.ENVIRONMENT_PARAMETERS``). ML-Agents'
            ``environment_parameters`` work as they are, curricula (``{"curriculum": [lessons]}``) included: see
            ``rl_lightning.unity.parameters``; the lessons move on with ``advance_curriculum``.
        uint8_images: deliver PNG-compressed image observations as uint8 in [0, 255] (``False``: float32 in [0, 1]).
            Uncompressed images always arrive as the float32 values the build sent (not necessarily in [0, 1]).
        num_areas: training areas each process should create (``UnityEnvironment``'s ``num_areas``, sent at the
            handshake; builds with a ``TrainingAreaReplicator`` replicate their area this many times).
        success_reward: a terminating last reward at or above this counts as success (``None``: not reported).
        max_agents: the number of sub-envs, for builds that spawn agents during a run: at least the most agents
            of the behavior alive at once, over all processes. ``None``: the agents present at the first reset.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
    records_episode_statistics = True
    """``make_vector_env`` adds no ``RecordEpisodeStatistics``: it would count inactive sub-envs' steps."""

    def __init__(self, file_name: str | None = PLAYER, behavior_name: str | None = None, num_processes: int = 1,
                 worker_id: int = 0, base_port: int | None = None, no_graphics: bool = False, timeout_wait: int = 60,
                 seed: int = 0, additional_args: Sequence[str] | None = None, log_folder: str | None = None,
                 engine_settings: dict[str, Any] | None = None,
                 parameters: dict[str, float | dict[str, Any]] | None = None, uint8_images: bool = True,
                 success_reward: float | None = None, max_agents: int | None = None, num_areas: int = 1) -> None:
        if num_processes < 1:
            raise ConfigurationError(f"num_processes={num_processes} must be >= 1")
        if max_agents is not None and (not isinstance(max_agents, int) or max_agents < 1):
            raise ConfigurationError(f"max_agents={max_agents!r} must be a positive integer, or null for the agents "
                                     "present at the first reset")
        if not isinstance(num_areas, int) or num_areas < 1:
            raise ConfigurationError(f"num_areas={num_areas!r} must be a positive integer")
        if file_name is None and (num_processes != 1 or worker_id != 0):
            raise ConfigurationError("file_name=None waits for the Unity Editor: it needs num_processes=1, worker_id=0")
        path = resolve_file_name(file_name)
        # One set of channels per process: a channel object queues its messages for one UnityEnvironment only.
        self.channels = [(EngineConfigurationChannel(), EnvironmentParametersChannel(), StatsSideChannel())
                         for _ in range(num_processes)]
        self.curriculum: Curriculum | None = None  # set by configure when a parameter has lessons
        self._parameter_seed = seed  # ML-Agents' samplers without a seed get the run's seed (plus an offset)
        self._restart_requested = False
        self._stats = UnityStats()
        self.configure(engine_settings, parameters)
        self.units: list[UnityProcess] = []
        self._pool: ThreadPoolExecutor | None = None
        try:
            for k in range(num_processes):
                port = (base_port if base_port is not None else (
                    UnityEnvironment.BASE_ENVIRONMENT_PORT if path else UnityEnvironment.DEFAULT_EDITOR_PORT)) + worker_id + k
                try:
                    # Checked here first: a UnityEnvironment that fails on its port leaves an atexit hook that errors.
                    _check_port_free(port)
                    self.units.append(UnityProcess(
                        index=k, num_processes=num_processes, file_name=path, worker_id=worker_id + k,
                        base_port=base_port, seed=seed + k, no_graphics=no_graphics, timeout_wait=timeout_wait,
                        additional_args=command_line_arguments(additional_args), log_folder=log_folder,
                        side_channels=list(self.channels[k]), num_areas=num_areas))
                except UnityWorkerInUseException:
                    first_port = port - worker_id - k
                    free = free_worker_id(first_port, worker_id + num_processes, num_processes)
                    hint = f"worker_id={free} has {'its port' if num_processes == 1 else 'the ports'} free now" \
                        if free is not None else "no free ports were found above it"
                    raise ConfigurationError(
                        f"worker_id={worker_id + k}: its port is already in use by another Unity environment (port {port}); "
                        f"give each concurrent run its own worker_id ({hint})") from None
            if num_processes > 1:
                self._pool = ThreadPoolExecutor(max_workers=num_processes, thread_name_prefix="unity-step")
            self._exchange_all("reset")
            self.behavior_name = self._choose_behavior(behavior_name)
            if self.curriculum is not None:
                self.curriculum.check_behavior(self.behavior_name)
            self.spec_ = self.units[0].behavior_specs[self.behavior_name]
            present = sum(len(unit.get_steps(self.behavior_name)[0]) for unit in self.units)
            if max_agents is not None and present > max_agents:
                raise ConfigurationError(f"max_agents={max_agents}: the build started with {present} agents of "
                                         f"behavior {self.behavior_name!r}; set max_agents to at least {present}")
        except BaseException:
            self.close()
            raise
        self.num_envs = max_agents or present
        self.max_agents = max_agents
        self.success_reward = success_reward
        warn_if_blind(self.spec_, self.behavior_name, no_graphics)
        self.single_observation_space = observation_space_from_spec(
            self.spec_, uint8_images, self._png_observations())
        # Unity sends observations in its own order; the Dict space sorts its keys. Match them by name.
        self._obs_keys = observation_keys(self.spec_)
        self.single_action_space = action_space_from_spec(self.spec_)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._obs = self._empty_obs()
        self._masks: np.ndarray | None = None
        self._decision = np.zeros(self.num_envs, bool)
        self._deciding: list[list[int]] = [[] for _ in self.units]  # per process: rows in its last DecisionSteps order
        self._episode_return = np.zeros(self.num_envs, np.float64)
        self._episode_length = np.zeros(self.num_envs, np.int64)
        self._episode_start = np.zeros(self.num_envs, np.float64)
        self._collect_first_observations()

    # ------------------------------------------------------------------ configuration
    def configure(self, engine_settings: dict[str, Any] | None = None,
                  parameters: dict[str, float | dict[str, Any]] | None = None) -> None:
        """Queue engine settings and environment parameters for every process; Unity applies them with the next
        step or reset.

        ``parameters`` in either schema (``rl_lightning.unity.parameters``); parameters with lessons start at their
        first lesson, and replace the env's ``curriculum``.
        """
        parsed = parse_parameters(parameters, run_seed=self._parameter_seed)  # checked before anything is sent
        for k, (engine, params, _) in enumerate(self.channels):  # every process, each through its own channels
            if engine_settings:
                engine.set_configuration_parameters(**engine_settings)
            for key, value in parsed.values.items():
                value.send(params, key, seed_offset=k)
        if parsed.curricula:
            self.curriculum = Curriculum(parsed.curricula)

    def advance_curriculum(self, episode_returns: Sequence[float], progress: float) -> dict[str, Any]:
        """Move the curriculum on (``Curriculum.update``) and queue the values of the lessons that changed; they
        reach Unity with the next step. A finished lesson with ``require_reset`` also restarts every agent at the
        next step (as ML-Agents resets the env): their episodes are cut short as truncations. Returns the
        parameters whose value changed, with their new values."""
        if self.curriculum is None:
            return {}
        changed = self.curriculum.update(episode_returns, progress)
        if changed:
            self.configure(parameters=changed)
            self._restart_requested |= self.curriculum.reset_required
        return changed

    def load_curriculum_state(self, state: dict[str, Any], restart: bool = True) -> None:
        """Continue a curriculum from ``Curriculum.state_dict()`` (a resumed run, or the evaluation env following
        training): its lessons' values are queued, and with ``restart`` every agent restarts at the next step so
        that all episodes from then on play them (without: from the next reset on)."""
        if self.curriculum is None:
            raise ConfigurationError("the checkpoint has a curriculum but this env's parameters have none")
        self.curriculum.load_state_dict(state)
        self.configure(parameters=self.curriculum.current_values())
        self._restart_requested = restart

    def _end_episodes_for_restart(self, truncated: np.ndarray, final_obs: dict[int, Any]) -> bool:
        """If a lesson change asked for a restart: the agents whose episode did not end in this step end it as a
        truncation (their last observation in ``final_obs``); ``step`` then restarts every agent and returns the
        first observations of the new episodes. Returns whether it will."""
        if not self._restart_requested:
            return False
        self._restart_requested = False
        for i in np.flatnonzero(self._agents.occupied()):
            if i not in final_obs:
                final_obs[i] = self._obs_row_now(i)
                truncated[i] = True
        return True

    def _obs_row_now(self, i: int) -> Any:
        if isinstance(self._obs, dict):
            return {key: value[i].copy() for key, value in self._obs.items()}
        return self._obs[i].copy()

    def _choose_behavior(self, name: str | None) -> str:
        names = list(self.units[0].behavior_specs)
        if name is None:
            if len(names) != 1:
                raise ConfigurationError(f"the build has behaviors {names}; choose one with behavior_name")
            return names[0]
        if name not in names:
            raise ConfigurationError(f"behavior_name={name!r} does not exist; the build has {names}")
        return name

    def _stats_channels(self) -> list[StatsSideChannel]:
        """Every process's stats channel, in process order."""
        return [stats for _, _, stats in self.channels]

    def read_stats(self) -> dict[str, UnityStat]:
        """What the Unity side reported with ``StatsRecorder`` since the last call, aggregated per key.

        Each key's value is its mean, most recent value or sum, as the build asked (see ``rl_lightning.unity.stats``).
        """
        self._stats.drain(self._stats_channels())
        return self._stats.read()

    # ------------------------------------------------------------------ observations
    def _empty_obs(self) -> Any:
        space = self.single_observation_space
        if isinstance(space, gym.spaces.Dict):
            return {k: np.zeros((self.num_envs, *s.shape), s.dtype) for k, s in space.spaces.items()}
        return np.zeros((self.num_envs, *space.shape), space.dtype)

    def _png_observations(self) -> tuple[bool, ...]:
        """Per observation: PNG-compressed by every process (only those can become uint8 without loss)."""
        flags = [unit.png_observations.get(self.behavior_name, ()) for unit in self.units]
        n = len(self.spec_.observation_specs)
        return tuple(all(len(f) == n and f[i] for f in flags) for i in range(n))

    @staticmethod
    def _convert(obs: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if dtype == np.uint8:  # a PNG image (its bytes / 255) back to its bytes
            # Only PNG images get a uint8 space, and they lie in [0, 1]; the clip makes a wrap impossible anyway.
            return np.rint(np.clip(obs, 0.0, 1.0) * 255.0).astype(np.uint8)
        return obs

    def _write_obs(self, rows: list[int], obs_list: list[np.ndarray]) -> None:
        """Store the observations of the agents at ``rows`` (in the order Unity listed them)."""
        if isinstance(self._obs, dict):
            for key, obs in zip(self._obs_keys, obs_list):
                self._obs[key][rows] = self._convert(obs, self._obs[key].dtype)
        else:
            self._obs[rows] = self._convert(obs_list[0], self._obs.dtype)

    def _obs_row(self, obs_list: list[np.ndarray], j: int) -> Any:
        space = self.single_observation_space
        if isinstance(space, gym.spaces.Dict):
            return {key: self._convert(obs[j], space[key].dtype).copy() for key, obs in zip(self._obs_keys, obs_list)}
        return self._convert(obs_list[0][j], space.dtype).copy()

    def _allowed(self, decisions: Any) -> np.ndarray | None:
        if decisions.action_mask is None:
            return None
        return ~np.concatenate(decisions.action_mask, axis=1)  # Unity's True means forbidden

    def _collect_first_observations(self) -> None:
        """Map the agents after a reset (every agent starts a new episode under a new id) and read their first
        observations."""
        self._agents = _Agents(self.num_envs)
        self._decision[:] = False
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._episode_start[:] = time.perf_counter()
        for k, unit in enumerate(self.units):
            decisions, _ = unit.get_steps(self.behavior_name)
            rows = self._place(k, decisions.agent_id, [])
            self._write_obs(rows, decisions.obs)
            self._update_masks(rows, decisions)
            self._decision[rows] = True
            self._deciding[k] = rows

    def _place(self, k: int, agent_ids: np.ndarray, preferred: list[int]) -> list[int]:
        """The rows of process ``k``'s deciding agents; new agents take free rows (``preferred`` first)."""
        rows = []
        for agent in agent_ids:
            i = self._agents.place((k, int(agent)), preferred)
            if i is None:
                alive = len(self._agents.slot) + 1
                self.close()
                raise ConfigurationError(
                    f"behavior {self.behavior_name!r} now has more agents ({alive} or more) than this env's "
                    f"{self.num_envs} sub-envs (the agents present at the first reset, or max_agents); set max_agents "
                    f"to the most agents the build can have alive at once, over all its processes")
            rows.append(i)
        return rows

    def _update_masks(self, rows: list[int], decisions: Any) -> None:
        allowed = self._allowed(decisions)
        if allowed is not None:
            if self._masks is None:
                self._masks = np.ones((self.num_envs, allowed.shape[1]), dtype=bool)
            self._masks[rows] = allowed

    def _info(self) -> dict[str, Any]:
        info = {"decision": self._decision.copy(), "active": self._agents.occupied()}
        if self._masks is not None:
            info["action_mask"] = self._masks.copy()
        return info

    def _check_open(self) -> None:
        if not self.units:
            raise RuntimeError("this UnityVectorEnv is closed (its processes have ended)")

    # ------------------------------------------------------------------ the vector env API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Restart every agent. Unity seeds at launch, so ``seed`` has no effect after it.

        ``options`` may hold ``engine_settings`` and ``parameters`` (as in the constructor), sent to every process
        with the reset.
        """
        if options:
            self.configure(options.get("engine_settings"), options.get("parameters"))
        self._check_open()
        self._exchange_all("reset")
        self._stats.drain(self._stats_channels())  # at every exchange: mlagents' channel keeps every message
        self._masks = None
        self._collect_first_observations()
        return self._copy_obs(), self._info()

    def _copy_obs(self) -> Any:
        if isinstance(self._obs, dict):
            return {k: v.copy() for k, v in self._obs.items()}
        return self._obs.copy()

    def _exchange_all(self, command: str) -> None:
        """Reset or step every process, all at once; if one fails, end them all before raising its
        ``UnityProcessError``.

        The processes compute their steps in parallel while this thread waits (the waits release the GIL), as
        ``mlagents-learn`` does with one worker process per environment (``subprocess_env_manager.py``).
        """
        try:
            if self._pool is None:
                for unit in self.units:
                    unit.exchange(command)
                return
            futures = [self._pool.submit(unit.exchange, command) for unit in self.units]
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as e:  # noqa: BLE001 (each process's failure is collected, the first raised)
                    errors.append(e)
            if errors:
                raise errors[0]
        except UnityProcessError:
            self.close()
            raise

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._check_open()
        for k, unit in enumerate(self.units):
            if self._deciding[k]:  # one action per agent of the last DecisionSteps, in Unity's order
                unit.set_actions(self.behavior_name, self._action_tuple(actions, self._deciding[k]))
        self._exchange_all("step")
        rewards = np.zeros(self.num_envs, np.float32)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        final_obs: dict[int, Any] = {}
        self._episode_length[self._decision] += 1  # the rows whose action was just applied
        self._decision[:] = False
        for k, unit in enumerate(self.units):
            decisions, terminals = unit.get_steps(self.behavior_name)
            freed: list[int] = []
            ended: list[int] = []  # the TerminalSteps entries of the agents that had a sub-env (rows in freed)
            for j, agent in enumerate(terminals.agent_id):
                i = self._agents.release((k, int(agent)))
                if i is None:
                    continue  # an agent that ended before it ever decided: it had no sub-env
                rewards[i] = terminals.reward[j]
                truncated[i] = bool(terminals.interrupted[j])
                terminated[i] = not truncated[i]
                final_obs[i] = self._obs_row(terminals.obs, j)
                freed.append(i)
                ended.append(j)
            self._group_info(np.asarray(terminals.group_id)[ended], np.asarray(terminals.group_reward)[ended], freed)
            known = [(k, int(a)) in self._agents.slot for a in decisions.agent_id]
            rows = self._place(k, decisions.agent_id, freed)
            self._group_info(decisions.group_id, decisions.group_reward, rows)
            for j, i in enumerate(rows):
                if known[j]:  # a new agent's first decision reward opens its episode: not part of the last one's
                    rewards[i] += decisions.reward[j]
            self._write_obs(rows, decisions.obs)
            self._update_masks(rows, decisions)
            self._decision[rows] = True
            self._deciding[k] = rows
        self._stats.drain(self._stats_channels())  # at every exchange: mlagents' channel keeps every message
        restart = self._end_episodes_for_restart(truncated, final_obs)
        self._episode_return += rewards
        info = self._info() | self._take_group_info()
        if final_obs:
            ended = np.zeros(self.num_envs, bool)
            ended[list(final_obs)] = True
            finals = np.empty(self.num_envs, dtype=object)
            for i, obs in final_obs.items():
                finals[i] = obs
            info.update({"final_obs": finals, "_final_obs": ended})
            now = time.perf_counter()
            info["episode"] = {"r": np.where(ended, self._episode_return, 0.0),
                               "l": np.where(ended, self._episode_length, 0),
                               "t": np.where(ended, np.round(now - self._episode_start, 6), 0.0)}
            info["_episode"] = ended
            self._episode_return[ended] = 0.0
            self._episode_length[ended] = 0
            self._episode_start[ended] = now
            if self.success_reward is not None:
                # An ended agent's reward this step is its last step's alone (the next episode's opening reward
                # is not added to it).
                success = terminated & (rewards >= self.success_reward)
                info["final_info"] = {"is_success": success, "_is_success": ended.copy()}
                info["_final_info"] = ended.copy()
        if restart:
            self._exchange_all("reset")
            self._masks = None
            self._collect_first_observations()
            info.update(self._info())
        return self._copy_obs(), rewards, terminated, truncated, info

    def _action_tuple(self, actions: Any, rows: list[int]) -> ActionTuple:
        """The actions of the sub-envs ``rows`` (a batch of the action space) as mlagents' ``ActionTuple``.

        Hybrid actions (a dict of ``"continuous"`` and ``"discrete"`` arrays) fill both of its parts.
        """
        n = len(rows)
        if is_hybrid(self.single_action_space):
            missing = [key for key in HYBRID_KEYS if key not in actions]
            if missing:
                raise ValueError(f"hybrid actions need the keys {list(HYBRID_KEYS)}; missing {missing}")
            return ActionTuple(continuous=np.asarray(actions["continuous"], np.float32)[rows].reshape(n, -1),
                               discrete=np.asarray(actions["discrete"])[rows].astype(np.int32).reshape(n, -1))
        actions = np.asarray(actions)[rows]
        if isinstance(self.single_action_space, gym.spaces.Box):
            return ActionTuple(continuous=actions.astype(np.float32).reshape(n, -1))
        return ActionTuple(discrete=actions.astype(np.int32).reshape(n, -1))

    def _group_info(self, group_ids: Any, group_rewards: Any, rows: list[int]) -> None:
        """Note the ML-Agents group of the agents at ``rows`` (of the DecisionSteps or TerminalSteps of one process).

        ``group_id`` (0: in no group) and ``group_reward`` (the reward a ``SimpleMultiAgentGroup`` gives all its
        members) come with every AgentInfoProto (mlagents_envs/rpc_utils.py ``steps_from_proto``). The first
        call for a row in a step wins: call TerminalSteps first, so that an agent that ended its episode reports
        that episode's group reward (as its reward does). ``_info`` hands them out.
        """
        if not len(rows):
            return
        pending = vars(self).setdefault("_groups", {})  # row -> (group id, group reward), made on first use
        for i, group, reward in zip(rows, np.asarray(group_ids), np.asarray(group_rewards)):
            pending.setdefault(i, (int(group), float(reward)))

    def _take_group_info(self) -> dict[str, np.ndarray]:
        """``info["group_id"]``/``["group_reward"]`` for the rows noted by ``_group_info`` since the last call.

        Arrays over all sub-envs with Gymnasium's ``_group_id``/``_group_reward`` masks (True: the row decided or
        ended this step); absent when none of these agents is in a group (every ``group_id`` 0 and no group reward).
        """
        pending = vars(self).pop("_groups", None)
        if not pending or not any(group or reward for group, reward in pending.values()):
            return {}
        ids = np.zeros(self.num_envs, np.int64)
        rewards = np.zeros(self.num_envs, np.float32)
        given = np.zeros(self.num_envs, bool)
        for i, (group, reward) in pending.items():
            ids[i], rewards[i], given[i] = group, reward, True
        return {"group_id": ids, "_group_id": given, "group_reward": rewards, "_group_reward": given.copy()}

    def close(self, **kwargs: Any) -> None:
        """End every process: each gets ``timeout_wait`` seconds to quit, then it is killed."""
        for unit in getattr(self, "units", []):
            try:
                unit.close()
            except Exception:  # noqa: BLE001 (a unit that failed to start is already closed)
                pass
        self.units = []
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
            self._pool = None
