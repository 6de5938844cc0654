"""Unity ML-Agents builds as a Gymnasium vector env: the agents of one behavior are the sub-envs.

The processes and their gRPC plumbing are in ``rl_lightning.unity.process``, the spec-to-space conversion in
``rl_lightning.unity.specs``, the agent-to-sub-env map in ``rl_lightning.unity.agents``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from rl_lightning.errors import ConfigurationError
from rl_lightning.setting_ranges import Count, FiniteFloat, Port, WorkerId, check_settings
from rl_lightning.unity.agents import AgentSlots
from rl_lightning.unity.parameters import Curriculum, parse_parameters
from rl_lightning.unity.process import (PLAYER, UnityProcess, UnityProcessError, end_processes, exchange_all,
                                        resolve_file_name, start_processes)
from rl_lightning.unity.specs import (action_space_from_spec, action_tuple, allowed_actions, convert_observation,
                                      empty_observations, observation_keys, observation_space_from_spec,
                                      warn_if_blind)
from rl_lightning.unity.stats import UnityStat, UnityStats

__all__ = ["UnityProcessError", "UnityVectorEnv"]


class UnityVectorEnv(gym.vector.VectorEnv):
    """The agents of one behavior, across one or several Unity processes, as Gymnasium sub-envs.

    Same-step autoreset like the library's other vector envs: when an agent's
    episode ends, ``step`` returns the first observation of its next episode and
    puts the last one in ``info["final_obs"]``; Unity's ``interrupted`` (a max
    step) is ``truncated``, any other end ``terminated``. Action masks appear as
    ``info["action_mask"]`` (True = allowed).

    Agents come and go as in a real build (see ``AgentSlots``): the number of
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

    def __init__(self, file_name: str | None = PLAYER, behavior_name: str | None = None, num_processes: Count = 1,
                 worker_id: WorkerId = 0, base_port: Port | None = None, no_graphics: bool = False,
                 timeout_wait: Count = 60, seed: int = 0, additional_args: Sequence[str] | None = None,
                 log_folder: str | None = None, engine_settings: dict[str, Any] | None = None,
                 parameters: dict[str, float | dict[str, Any]] | None = None, uint8_images: bool = True,
                 success_reward: FiniteFloat | None = None, max_agents: Count | None = None,
                 num_areas: Count = 1) -> None:
        # The ranges the annotations declare (rl_lightning.setting_ranges): a model checks them in its env_kwargs
        # already; here for an env built on its own.
        check_settings(UnityVectorEnv, locals())
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
            self.units = start_processes(path, num_processes, worker_id, base_port, self.channels, seed=seed,
                                         additional_args=additional_args, no_graphics=no_graphics,
                                         timeout_wait=timeout_wait, log_folder=log_folder, num_areas=num_areas)
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
        self._obs = empty_observations(self.single_observation_space, self.num_envs)
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
    def _png_observations(self) -> tuple[bool, ...]:
        """Per observation: PNG-compressed by every process (only those can become uint8 without loss)."""
        flags = [unit.png_observations.get(self.behavior_name, ()) for unit in self.units]
        n = len(self.spec_.observation_specs)
        return tuple(all(len(f) == n and f[i] for f in flags) for i in range(n))

    def _write_obs(self, rows: list[int], obs_list: list[np.ndarray]) -> None:
        """Store the observations of the agents at ``rows`` (in the order Unity listed them)."""
        if isinstance(self._obs, dict):
            for key, obs in zip(self._obs_keys, obs_list):
                self._obs[key][rows] = convert_observation(obs, self._obs[key].dtype)
        else:
            self._obs[rows] = convert_observation(obs_list[0], self._obs.dtype)

    def _obs_row(self, obs_list: list[np.ndarray], j: int) -> Any:
        space = self.single_observation_space
        if isinstance(space, gym.spaces.Dict):
            return {key: convert_observation(obs[j], space[key].dtype).copy()
                    for key, obs in zip(self._obs_keys, obs_list)}
        return convert_observation(obs_list[0][j], space.dtype).copy()

    def _collect_first_observations(self) -> None:
        """Map the agents after a reset (every agent starts a new episode, under its id or a new one) and read
        their first observations."""
        self._agents = AgentSlots(self.num_envs)
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
        allowed = allowed_actions(decisions)
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
        """Reset or step every process, all at once (``exchange_all``); if one fails, end them all before raising
        its ``UnityProcessError``."""
        try:
            exchange_all(self.units, self._pool, command)
        except UnityProcessError:
            self.close()
            raise

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._check_open()
        for k, unit in enumerate(self.units):
            if self._deciding[k]:  # one action per agent of the last DecisionSteps, in Unity's order
                unit.set_actions(self.behavior_name, action_tuple(self.single_action_space, actions, self._deciding[k]))
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
        end_processes(getattr(self, "units", []))
        self.units = []
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
            self._pool = None
