"""A Unity-side player: serves Gymnasium envs to ``mlagents_envs.UnityEnvironment`` as a Unity build would.

It speaks ML-Agents communication API 1.5.0 as the gRPC *client* (the Python
trainer is the server): it announces itself, receives the RESET/STEP commands
as replies to its own calls, and answers each with the agents' observations,
rewards and done flags of one behavior. Several copies of one env are several
agents of that behavior (each in its own "area"). With a decision period
above 1 the agents decide as under Unity's ``DecisionRequester``: agent ``i``
asks for a decision only on academy steps where ``(step + i) % period == 0``,
repeats its last action in between, and reports the rewards it earned
meanwhile with its next decision; an episode end is reported at once, and the
new episode's first step asks for a decision.

Agents are numbered as com.unity.ml-agents 2.x numbers them. The proto's agent
``id`` is ``AgentInfo.episodeId`` (``Runtime/Communicator/GrpcExtensions.cs``,
``ToAgentInfoProto``: ``Id = ai.episodeId``), which ``Runtime/Agent.cs`` fills
from ``m_EpisodeId``; that is drawn from ``EpisodeIdCounter.GetEpisodeId()``
(one counter for the whole process) only in ``LazyInitialize()``, when the
agent is first enabled. ``EndEpisode``/``EpisodeInterrupted`` (``NotifyAgentDone``
then ``_AgentReset``) and the academy's reset (``AgentForceReset`` ->
``_AgentReset``) keep it. So an agent keeps its id across episodes: at an
episode end one message lists it done (TerminalSteps) and deciding in its next
episode (DecisionSteps) under the same id. An agent that is destroyed or
disabled and a new one spawned gives a new id (``OnDisable`` clears
``m_Initialized``, so enabling runs ``LazyInitialize`` again).
``--new-agent-id-per-episode`` gives an agent a new id at every episode start
instead, as the early-2020 packages did (0.14's ``Agent.NotifyAgentDone``: "The
Agent is done, so we give it a new episode Id") and as a build that disables
and re-enables its agents at every episode still does; the environment
variable ``RL_LIGHTNING_PLAYER_ID_REGIME`` (``kept`` or ``per-episode``) sets
the default of that flag, so that a test suite can run every player it starts
in either regime. ``--despawn-prob`` / ``--spawn-prob`` destroy and spawn agents
during a run (a destroyed agent sends one last done step, as Unity's
``Agent.OnDisable`` does, and a spawned one appears under a new id);
``--shuffle-agents`` lists the agents of each message in a random order
(Unity does not promise one); ``--step-time`` spends that many seconds of
"game" time per step, as a build's physics and rendering would. A real build
never reports the engine settings and environment parameters it receives;
``--echo-settings-as-stats`` (for debugging and tests) sends them back through
the stats side channel: ``engine/<setting>``, ``received/<parameter>`` (1 per
message) and ``param/<parameter>`` (the value drawn at each episode start).
Launch it through
``UnityEnvironment(file_name=<path of rl-lightning-unity-player>, additional_args=[...])``
or by hand with ``--mlagents-port``.

The protocol is what ``mlagents_envs`` speaks (``rpc_communicator.py``, ``rpc_utils.py``, ``environment.py``)
and Unity's ``com.unity.ml-agents`` runtime answers (``Runtime/Communicator/RpcCommunicator.cs``); the
message types are those generated in ``mlagents_envs.communicator_objects``.
"""

from __future__ import annotations

import os

# gRPC's C core logs "Got goaway" at INFO when the trainer closes its server; only errors are news here.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import io
import json
import struct
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import gymnasium as gym
import numpy as np
from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.observation_pb2 import GOAL_SIGNAL, NONE, PNG
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import UnityRLInitializationOutputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub
from PIL import Image

from rl_lightning.envs.spaces import is_hybrid

COMMUNICATION_VERSION = "1.5.0"
PACKAGE_VERSION = "2.3.0"  # the com.unity.ml-agents release whose protocol this follows
STEP, RESET = 0, 1

ENGINE_CHANNEL = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
PARAMETERS_CHANNEL = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
STATS_CHANNEL = uuid.UUID("a1d8f7b7-cec8-50f9-b78b-d3e165a78520")
ENGINE_KEYS = {0: "resolution", 1: "quality_level", 2: "time_scale", 3: "target_frame_rate", 4: "capture_frame_rate"}

# The default of --new-agent-id-per-episode, for every player a process starts (tests run each in both regimes).
ID_REGIME_VARIABLE = "RL_LIGHTNING_PLAYER_ID_REGIME"
ID_REGIMES = {"kept": False, "per-episode": True}  # regime -> a new id at every episode start


# ---------------------------------------------------------------------- side channels
class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.take("<i")
        s = self.data[self.pos:self.pos + n].decode("ascii")
        self.pos += n
        return s

    def floats(self) -> list[float]:
        return [self.take("<f") for _ in range(self.take("<i"))]


def split_side_channels(data: bytes) -> list[tuple[uuid.UUID, bytes]]:
    """``[16-byte UUID (bytes_le)][int32 length][payload]`` records."""
    out, pos = [], 0
    while pos < len(data):
        channel = uuid.UUID(bytes_le=data[pos:pos + 16])
        (length,) = struct.unpack_from("<i", data, pos + 16)
        out.append((channel, data[pos + 20:pos + 20 + length]))
        pos += 20 + length
    return out


def stats_message(key: str, value: float, aggregation: int = 0) -> bytes:
    """One record of the stats side channel: what Unity's ``StatsRecorder.Add(key, value, aggregation)`` sends.

    ``aggregation`` is C#'s ``StatAggregationMethod``: 0 Average, 1 MostRecent, 2 Sum, 3 Histogram.
    """
    payload = struct.pack("<i", len(key)) + key.encode("ascii") + struct.pack("<fi", value, aggregation)
    return STATS_CHANNEL.bytes_le + struct.pack("<i", len(payload)) + payload


def env_stats_messages(info: dict[str, Any]) -> list[bytes]:
    """The stats a served env reports in ``info["stats"]`` (``{key: value}`` or ``{key: (value, aggregation)}``),
    as the records a Unity game's ``StatsRecorder`` calls would send."""
    messages = []
    for key, entry in (info.get("stats") or {}).items():
        value, aggregation = entry if isinstance(entry, (tuple, list)) else (entry, 0)
        if aggregation not in (0, 1, 2, 3):
            raise ValueError(f'info["stats"][{key!r}]: aggregation {aggregation!r} is not one of 0 (Average), '
                             "1 (MostRecent), 2 (Sum), 3 (Histogram)")
        messages.append(stats_message(key, float(value), int(aggregation)))
    return messages


class EnvironmentParameters:
    """Environment parameters from the trainer: constants, and samplers drawn afresh at each episode reset."""

    def __init__(self) -> None:
        self.samplers: dict[str, Callable[[], float]] = {}

    def receive(self, payload: bytes) -> str:
        r = _Reader(payload)
        key, kind = r.string(), r.take("<i")
        if kind == 0:
            value = r.take("<f")
            self.samplers[key] = lambda v=value: v
        else:
            seed, sampler = r.take("<i"), r.take("<i")
            rng = np.random.default_rng(seed)
            if sampler == 0:
                low, high = r.take("<ff")
                self.samplers[key] = lambda: float(rng.uniform(low, high))
            elif sampler == 1:
                mean, std = r.take("<ff")
                self.samplers[key] = lambda: float(rng.normal(mean, std))
            else:
                bounds = r.floats()
                ranges = list(zip(bounds[::2], bounds[1::2]))
                widths = np.array([b - a for a, b in ranges])

                def multirange() -> float:
                    i = rng.choice(len(ranges), p=widths / widths.sum())
                    return float(rng.uniform(*ranges[i]))

                self.samplers[key] = multirange
        return key

    def sample(self) -> dict[str, float]:
        return {key: draw() for key, draw in self.samplers.items()}


# ---------------------------------------------------------------------- observations and specs
def _add_observations(container: Any, obs: Any, space: gym.Space, name: str = "", float_images: bool = False) -> None:
    """Append ``obs`` to a repeated ``ObservationProto`` field, built in place (pure-Python protobuf copies are slow).

    Images go as PNG, or with ``float_images`` uncompressed as their float values (``float_data``, any range),
    as a Unity sensor whose ``CompressionSpec`` is ``None`` sends them (e.g. ``CountingGridSensor``).
    """
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            _add_observations(container, obs[key], sub, key, float_images)
        return
    arr = np.asarray(obs)
    proto = container.add()
    proto.shape.extend(arr.shape)
    if name:
        proto.name = name
        if "goal" in name.lower():
            proto.observation_type = GOAL_SIGNAL
    if arr.ndim == 3 and not float_images:
        # Images travel as PNG (HWC, RGB); float images are taken to be in [0, 1].
        pixels = arr if arr.dtype == np.uint8 else np.clip(arr * 255.0, 0, 255).astype(np.uint8)
        if pixels.shape[2] == 1:
            pixels = np.repeat(pixels, 3, axis=2)
        buf = io.BytesIO()
        Image.fromarray(pixels[..., :3]).save(buf, format="PNG", compress_level=1)
        proto.compression_type = PNG
        proto.compressed_data = buf.getvalue()
    else:
        proto.compression_type = NONE
        proto.float_data.data.extend(arr.astype(np.float32).reshape(-1).tolist())


def action_spec_proto(space: gym.Space) -> ActionSpecProto:
    """The ML-Agents action spec of a Gymnasium action space; the hybrid Dict (``hybrid_action_space``) fills both."""
    if is_hybrid(space):
        branches = [int(n) for n in space["discrete"].nvec]
        return ActionSpecProto(num_continuous_actions=int(space["continuous"].shape[0]),
                               num_discrete_actions=len(branches), discrete_branch_sizes=branches)
    if isinstance(space, gym.spaces.Discrete):
        return ActionSpecProto(num_discrete_actions=1, discrete_branch_sizes=[int(space.n)])
    if isinstance(space, gym.spaces.MultiDiscrete):
        return ActionSpecProto(num_discrete_actions=len(space.nvec), discrete_branch_sizes=[int(n) for n in space.nvec])
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return ActionSpecProto(num_continuous_actions=int(space.shape[0]))
    raise ValueError(f"the player cannot serve action space {space}")


# ---------------------------------------------------------------------- the player
class Player:
    """Plays ``num_agents`` copies of an env as the agents of one behavior, deciding every ``decision_period`` steps.

    ``num_agents=None`` plays as many copies as the trainer's ``num_areas`` asks for (sent at the handshake), as a
    build with a ``TrainingAreaReplicator`` does: it takes ``Academy.Instance.NumAreas`` whenever a trainer is
    connected (com.unity.ml-agents/Runtime/Areas/TrainingAreaReplicator.cs). ``float_images`` sends images
    uncompressed (``float_data``) instead of as PNG. An env's ``info["group_id"]``/``info["group_reward"]``, when
    given, become the agent's ML-Agents group id and group reward.

    An agent draws its id from one counter for the process when it first exists (at the first reset, or when it
    is spawned) and keeps it across episodes, as com.unity.ml-agents 2.x (see the module docstring);
    ``new_id_per_episode`` draws a new one at every episode start instead. ``echo_settings_as_stats`` reports the
    engine settings and environment parameters received back as stats (a debugging aid: a real build does not).
    """

    def __init__(self, make_env: Callable[[], gym.Env], num_agents: int | None = 1, behavior_name: str = "Agent",
                 seed: int = 0, decision_period: int = 1, new_id_per_episode: bool = False,
                 despawn_prob: float = 0.0, spawn_prob: float = 0.0, shuffle_agents: bool = False,
                 step_time: float = 0.0, start_agents: int | None = None, report_step_times: bool = False,
                 float_images: bool = False, echo_settings_as_stats: bool = False) -> None:
        if decision_period < 1:
            raise ValueError(f"decision_period={decision_period} must be >= 1")
        if not (0.0 <= despawn_prob <= 1.0 and 0.0 <= spawn_prob <= 1.0):
            raise ValueError(f"despawn_prob={despawn_prob} and spawn_prob={spawn_prob} must lie in [0, 1]")
        self.make_env, self.follow_num_areas, self.float_images = make_env, num_agents is None, float_images
        num_agents = num_agents or 1
        self.envs = [make_env() for _ in range(num_agents)]
        self.behavior_name = behavior_name
        self.seed = seed
        self.decision_period = decision_period
        self.academy_steps = 0
        self.deciding: list[int] = []  # agents sent in the last DecisionSteps, in order: the next actions are theirs
        self.last_actions: list[Any] = [None] * num_agents  # repeated until the agent's next decision
        self.accrued = [0.0] * num_agents  # reward since the agent's last decision or episode end
        self.space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.parameters = EnvironmentParameters()
        self.engine: dict[str, Any] = {}
        self.pending_stats: list[bytes] = []
        self.episodes = [0] * num_agents
        self.current: list[tuple[Any, dict[str, Any]]] = []
        self.sent_brain = False
        self.new_id_per_episode = new_id_per_episode
        self.echo_settings_as_stats = echo_settings_as_stats
        self.ids = [-1] * num_agents  # each agent's current id; -1 until the agent first exists
        self.next_id = 0  # Unity's EpisodeIdCounter: one counter for every agent of the process
        self.alive = [i < (num_agents if start_agents is None else start_agents) for i in range(num_agents)]
        self.report_step_times = report_step_times
        self.despawn_prob, self.spawn_prob = despawn_prob, spawn_prob
        self.shuffle_agents = shuffle_agents
        self.step_time = step_time
        self.rng = np.random.default_rng(seed)

    # -- episodes
    def _reset_agent(self, i: int, spawned: bool = False) -> tuple[Any, dict[str, Any]]:
        """Start agent ``i``'s next episode; ``spawned``: the agent is new (enabled again after being destroyed)."""
        if spawned or self.new_id_per_episode or self.ids[i] < 0:
            # Agent.LazyInitialize draws the id when an agent is enabled; old packages drew one at every episode.
            self.ids[i] = self.next_id
            self.next_id += 1
        params = self.parameters.sample()
        if self.echo_settings_as_stats:
            self.pending_stats += [stats_message(f"param/{key}", value) for key, value in params.items()]
        options = {"parameters": params} if params else None
        seed = self.seed * 10_007 + i * 1_009 + self.episodes[i]
        self.episodes[i] += 1
        obs, info = self.envs[i].reset(seed=seed, options=options)
        self.pending_stats += env_stats_messages(info)
        return obs, info

    def _info(self, out: Any, i: int, obs: Any, info: dict[str, Any], reward: float = 0.0, done: bool = False,
              interrupted: bool = False, agent_id: int | None = None) -> None:
        """Append agent ``i``'s AgentInfoProto (under ``agent_id``, default its current id) to the repeated field ``out``."""
        proto = out.add(id=self.ids[i] if agent_id is None else agent_id, reward=float(reward), done=done,
                        max_step_reached=interrupted)
        _add_observations(proto.observations, obs, self.space, float_images=self.float_images)
        if "group_id" in info:
            proto.group_id = int(info["group_id"])
        if "group_reward" in info:
            proto.group_reward = float(info["group_reward"])
        mask = info.get("action_mask")
        if mask is not None:
            proto.action_mask.extend([not bool(m) for m in np.asarray(mask).reshape(-1)])  # Unity: True = forbidden

    def _set_num_agents(self, n: int) -> None:
        """Play ``n`` copies (before the first reset): the trainer's ``num_areas``."""
        self.envs += [self.make_env() for _ in range(n - len(self.envs))]
        self.last_actions, self.accrued, self.episodes = [None] * n, [0.0] * n, [0] * n
        self.ids, self.alive = [-1] * n, [True] * n

    def _reset_all(self, out: Any) -> None:
        # An academy reset restarts every agent that exists (under its id: Agent._AgentReset keeps it); destroyed
        # ones stay destroyed, unless none is left: then agent 0 is spawned again.
        revived = None
        if not any(self.alive):
            self.alive[0], revived = True, 0
        self.current = [self._reset_agent(i, spawned=i == revived) if self.alive[i] else (None, {})
                        for i in range(len(self.envs))]
        self.accrued = [0.0] * len(self.envs)
        self.deciding = self._order([i for i in range(len(self.envs)) if self.alive[i]])
        self.academy_steps = 0  # Unity's Academy restarts its step count at a reset
        for i in self.deciding:
            self._info(out, i, *self.current[i])

    def _order(self, agents: list[int]) -> list[int]:
        if self.shuffle_agents:
            self.rng.shuffle(agents)
        return agents

    def _step_all(self, actions: Sequence[Any], out: Any) -> None:
        if len(actions) != len(self.deciding):
            raise ValueError(f"got {len(actions)} actions for the {len(self.deciding)} agents that asked for one")
        for i, proto in zip(self.deciding, actions):
            self.last_actions[i] = self._action(proto)
        self.academy_steps += 1
        started = time.time()
        if self.step_time > 0:
            time.sleep(self.step_time)
        if self.report_step_times:  # when this process computed its step, for tests of concurrent stepping
            # Seconds within the current 1000 s of the clock: the channel carries float32.
            self.pending_stats += [stats_message("player/step_start", started % 1000),
                                   stats_message("player/step_end", time.time() % 1000)]
        deciding, entries = [], []  # entries: (agent, obs, info, reward, done, interrupted), listed at the end
        for i, env in enumerate(self.envs):
            if not self.alive[i]:
                if self.rng.random() < self.spawn_prob:  # spawned: a new agent under a new id, deciding at once
                    self.alive[i] = True
                    self.current[i] = self._reset_agent(i, spawned=True)
                    self.accrued[i] = 0.0
                    deciding.append(i)
                    entries.append((i, self.ids[i], *self.current[i], 0.0, False, False))
                continue
            obs, reward, terminated, truncated, info = env.step(self.last_actions[i])
            self.pending_stats += env_stats_messages(info)
            self.current[i] = (obs, info)
            self.accrued[i] += float(reward)
            if (not (terminated or truncated) and sum(self.alive) > 1
                    and self.rng.random() < self.despawn_prob):
                # Destroyed: Unity's OnDisable sends one last step, done and not interrupted, and the agent is gone.
                entries.append((i, self.ids[i], obs, info, self.accrued[i], True, False))
                self.alive[i] = False
                continue
            if terminated or truncated:  # reported at once, whatever the decision period
                entries.append((i, self.ids[i], obs, info, self.accrued[i], True, truncated and not terminated))
                self.accrued[i] = 0.0
                # Its next episode's first step asks for a decision, under the same id (2.x) or a new one.
                self.current[i] = self._reset_agent(i)
            elif (self.academy_steps + i) % self.decision_period:
                continue  # no decision requested: in neither list, and it repeats its action
            entries.append((i, self.ids[i], *self.current[i], self.accrued[i], False, False))
            self.accrued[i] = 0.0
            deciding.append(i)
        if self.shuffle_agents:
            order = self.rng.permutation(len(entries))
            entries = [entries[j] for j in order]
        for i, agent_id, obs, info, reward, done, interrupted in entries:
            # A terminal step goes out under the id of the episode that ended, a decision under the current one
            # (the same one unless ids are renewed at every episode).
            self._info(out, i, obs, info, reward, done, interrupted, agent_id=agent_id)
        # The actions of the next STEP come in the order the deciding agents were listed.
        self.deciding = [i for i, _, _, _, _, done, _ in entries if not done]

    def _action(self, proto: Any) -> Any:
        if is_hybrid(self.action_space):
            return {"continuous": np.asarray(proto.continuous_actions, dtype=np.float32),
                    "discrete": np.asarray(proto.discrete_actions, dtype=np.int64)}
        if isinstance(self.action_space, gym.spaces.Discrete):
            return int(proto.discrete_actions[0])
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            return np.asarray(proto.discrete_actions, dtype=np.int64)
        return np.asarray(proto.continuous_actions, dtype=np.float32)

    # -- side channels
    def _receive_side_channels(self, data: bytes) -> None:
        for channel, payload in split_side_channels(data):
            if channel == PARAMETERS_CHANNEL:
                key = self.parameters.receive(payload)
                if self.echo_settings_as_stats:
                    self.pending_stats.append(stats_message(f"received/{key}", 1.0))
            elif channel == ENGINE_CHANNEL:
                r = _Reader(payload)
                kind = r.take("<i")
                name = ENGINE_KEYS.get(kind, str(kind))
                value = r.take("<ii") if kind == 0 else (r.take("<f") if kind == 2 else r.take("<i"))
                self.engine[name] = value
                if self.echo_settings_as_stats:
                    for j, v in enumerate(value if isinstance(value, tuple) else (value,)):
                        self.pending_stats.append(stats_message(f"engine/{name}" + (f"/{j}" if kind == 0 else ""),
                                                                float(v)))

    # -- messages
    def _new_output(self) -> tuple[UnityMessageProto, Any]:
        """A reply message and its behavior's (empty) repeated AgentInfoProto field, to be filled in place."""
        message = UnityMessageProto(header=HeaderProto(status=200))
        output = message.unity_output
        if not self.sent_brain:
            output.rl_initialization_output.brain_parameters.append(BrainParametersProto(
                brain_name=self.behavior_name, is_training=True, action_spec=action_spec_proto(self.action_space)))
            self.sent_brain = True
        return message, output.rl_output.agentInfos[self.behavior_name].value

    def _attach_stats(self, message: UnityMessageProto) -> None:
        message.unity_output.rl_output.side_channel = b"".join(self.pending_stats)
        self.pending_stats.clear()

    def run(self, port: int) -> int:
        """Serve until the trainer closes (status 400) or goes away; return the exit code."""
        channel = grpc.insecure_channel(f"localhost:{port}")
        stub = UnityToExternalProtoStub(channel)
        hello = UnityMessageProto(header=HeaderProto(status=200), unity_output=UnityOutputProto(
            rl_initialization_output=UnityRLInitializationOutputProto(
                name="rl_lightning player", communication_version=COMMUNICATION_VERSION,
                package_version=PACKAGE_VERSION, capabilities=UnityRLCapabilitiesProto(
                    baseRLCapabilities=True, concatenatedPngObservations=True, compressedChannelMapping=True,
                    hybridActions=True, trainingAnalytics=True, variableLengthObservation=True,
                    multiAgentGroups=True))))
        try:
            reply = stub.Exchange(hello, wait_for_ready=True, timeout=60)
            if reply.header.status != 200:
                return 0
            self.seed = reply.unity_input.rl_initialization_input.seed
            self.rng = np.random.default_rng(self.seed)  # spawning, destroying and shuffling follow Unity's seed
            if self.follow_num_areas:
                self._set_num_agents(max(1, reply.unity_input.rl_initialization_input.num_areas))
            reply = stub.Exchange(UnityMessageProto(header=HeaderProto(status=200)))
            while reply.header.status == 200:
                rl_input = reply.unity_input.rl_input
                self._receive_side_channels(rl_input.side_channel)
                message, agent_infos = self._new_output()
                if rl_input.command == RESET or not self.current:
                    self._reset_all(agent_infos)
                elif rl_input.command == STEP:
                    self._step_all(rl_input.agent_actions[self.behavior_name].value, agent_infos)
                else:  # QUIT
                    return 0
                self._attach_stats(message)
                reply = stub.Exchange(message)
        except grpc.RpcError:
            # The trainer stopped its server (close) or died: either way, quit.
            return 0
        finally:
            for env in self.envs:
                env.close()
            channel.close()
        return 0


def _env_factory(spec: str, kwargs: dict[str, Any]) -> Callable[[], gym.Env]:
    from rl_lightning.envs.factory import resolve_env

    factory = resolve_env(spec, setting="--env")
    return lambda: factory(**kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rl-lightning-unity-player``; Unity's own flags (``-batchmode`` ...) are accepted and ignored."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlagents-port", type=int, required=True, help="the trainer's port (set by UnityEnvironment)")
    parser.add_argument("--env", default="CartPole-v1", help="Gymnasium id or 'package.module:EnvClass' to serve")
    parser.add_argument("--env-kwargs", default="{}", help="JSON keyword arguments for the env")
    parser.add_argument("--agents", type=int, default=None,
                        help="copies of the env, served as agents of one behavior (default: the trainer's num_areas)")
    parser.add_argument("--behavior-name", default="Agent")
    parser.add_argument("--decision-period", type=int, default=1,
                        help="steps between an agent's decisions (Unity's DecisionRequester); agents are staggered")
    parser.add_argument("--new-agent-id-per-episode", action=argparse.BooleanOptionalAction, default=None,
                        help="give an agent a new id at every episode start, as ML-Agents packages of early 2020 did "
                             "(default: each agent keeps one id across episodes, as com.unity.ml-agents 2.x, and a "
                             f"spawned agent takes a new one; {ID_REGIME_VARIABLE}=per-episode changes the default)")
    parser.add_argument("--despawn-prob", type=float, default=0.0,
                        help="chance per step that an agent is destroyed (one stays alive)")
    parser.add_argument("--spawn-prob", type=float, default=0.0,
                        help="chance per step that a destroyed agent is spawned again (up to --agents)")
    parser.add_argument("--start-agents", type=int, default=None,
                        help="agents alive at the start (default --agents); the others can spawn later")
    parser.add_argument("--report-step-times", action="store_true",
                        help="send each step's start and end time (seconds since the epoch) as stats")
    parser.add_argument("--shuffle-agents", action="store_true", help="list the agents of each message in random order")
    parser.add_argument("--step-time", type=float, default=0.0,
                        help="seconds each step takes, as a build's game loop would")
    parser.add_argument("--float-images", action="store_true",
                        help="send images uncompressed as floats (float_data) instead of as PNG")
    parser.add_argument("--echo-settings-as-stats", action="store_true",
                        help="for debugging: send the engine settings and environment parameters received back as "
                             "stats (engine/*, received/*, and param/* drawn at each episode start); a real build "
                             "sends none of them")
    parser.add_argument("-logFile", "-logfile", dest="log_file",
                        help="write output and errors here (set by UnityEnvironment's log_folder)")
    args, _unity_flags = parser.parse_known_args(argv)
    if args.log_file and args.log_file != "-":  # Unity's "-logFile -" means standard output
        # At the file descriptors, so that a crash's traceback lands there too (UnityEnvironment usually discards both).
        os.makedirs(os.path.dirname(os.path.abspath(args.log_file)), exist_ok=True)
        with open(args.log_file, "a") as log:
            os.dup2(log.fileno(), sys.stdout.fileno())
            os.dup2(log.fileno(), sys.stderr.fileno())
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"--env-kwargs must be a JSON object such as '{{\"max_steps\": 50}}', got {args.env_kwargs!r} ({e})")
    if not isinstance(env_kwargs, dict):
        parser.error(f"--env-kwargs must be a JSON object of keyword arguments, got {args.env_kwargs!r}")
    new_id_per_episode = args.new_agent_id_per_episode
    if new_id_per_episode is None:
        regime = os.environ.get(ID_REGIME_VARIABLE, "kept")
        if regime not in ID_REGIMES:
            parser.error(f"{ID_REGIME_VARIABLE}={regime!r} is not one of {', '.join(map(repr, ID_REGIMES))}: "
                         f"unset it (ids kept across episodes) or set it to 'per-episode'")
        new_id_per_episode = ID_REGIMES[regime]
    player = Player(_env_factory(args.env, env_kwargs), args.agents, args.behavior_name,
                    decision_period=args.decision_period, new_id_per_episode=new_id_per_episode,
                    despawn_prob=args.despawn_prob, spawn_prob=args.spawn_prob, shuffle_agents=args.shuffle_agents,
                    step_time=args.step_time, start_agents=args.start_agents,
                    report_step_times=args.report_step_times, float_images=args.float_images,
                    echo_settings_as_stats=args.echo_settings_as_stats)
    return player.run(args.mlagents_port)


if __name__ == "__main__":
    sys.exit(main())
