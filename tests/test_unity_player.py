"""The Unity-side player, driven by the real mlagents_envs.UnityEnvironment over real gRPC."""

import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import UnityEnvironmentException
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

from rl_lightning.envs.factory import make_vector_env
from rl_lightning.games import gridworld

PLAYER = str(Path(sysconfig.get_path("scripts")) / "rl-lightning-unity-player")
TESTS = str(Path(__file__).resolve().parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def unity(monkeypatch, agent_id_regime):
    """Open UnityEnvironments on the player (the toy envs importable by it), in each agent-id regime (conftest.py);
    close them all afterwards."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    opened = []

    def open_env(*args, side_channels=None):
        env = UnityEnvironment(file_name=PLAYER, base_port=free_port(), worker_id=0, timeout_wait=10,
                               additional_args=list(args), side_channels=side_channels)
        opened.append(env)
        return env

    yield open_env
    for env in opened:
        try:
            env.close()
        except UnityEnvironmentException:  # the test closed it already
            pass


def test_player_is_an_installed_executable():
    assert os.access(PLAYER, os.X_OK), PLAYER


@pytest.mark.one_id_regime_in_quick_suite
def test_specs_map_discrete_and_continuous_actions(unity):
    env = unity("--env", "CartPole-v1", "--agents", "3")
    env.reset()
    spec = env.behavior_specs["Agent"]
    assert spec.action_spec.discrete_branches == (2,) and spec.action_spec.continuous_size == 0
    assert [o.shape for o in spec.observation_specs] == [(4,)]
    decisions, terminals = env.get_steps("Agent")
    assert list(decisions.agent_id) == [0, 1, 2] and len(terminals) == 0

    env2 = unity("--env", "Pendulum-v1", "--behavior-name", "Pendulum")
    env2.reset()
    spec2 = env2.behavior_specs["Pendulum"]
    assert spec2.action_spec.continuous_size == 1 and spec2.action_spec.discrete_branches == ()


def play_until_both_agents_end(env, steps: int = 3):
    spec = env.behavior_specs["Agent"]
    for _ in range(steps):
        env.set_actions("Agent", spec.action_spec.empty_action(2))
        env.step()
    return env.get_steps("Agent")


# Ids drawn from the process's one counter (Agent.cs, EpisodeIdCounter): 2.x keeps an agent's id across episodes
# and academy resets (drawn in LazyInitialize only); early packages drew a new one at every episode.
NEXT_EPISODE_IDS = {"kept": [0, 1], "per-episode": [2, 3]}
AFTER_RESET_IDS = {"kept": [0, 1], "per-episode": [4, 5]}


@pytest.mark.parametrize("ending", ["terminate_at", "truncate_at"])
def test_an_ending_agent_is_done_and_deciding_in_one_message_under_its_kept_or_renewed_id(unity, ending,
                                                                                          agent_id_regime):
    env = unity("--env", "toy_envs:CounterEnv", "--env-kwargs", f'{{"{ending}": 3}}', "--agents", "2")
    env.reset()
    decisions, terminals = play_until_both_agents_end(env)
    assert sorted(terminals.agent_id) == [0, 1] and sorted(decisions.agent_id) == NEXT_EPISODE_IDS[agent_id_regime]
    assert terminals.obs[0][:, 0].tolist() == [3.0, 3.0]   # the final observation
    assert decisions.obs[0][:, 0].tolist() == [0.0, 0.0]   # the next episode's first one
    assert terminals.reward.tolist() == [1.0, 1.0]
    assert terminals.interrupted.tolist() == [ending == "truncate_at"] * 2
    env.reset()  # the academy's reset: Agent._AgentReset, which keeps the id
    assert sorted(env.get_steps("Agent")[0].agent_id) == AFTER_RESET_IDS[agent_id_regime]


def test_the_command_line_flag_overrides_the_regime_variable(unity, agent_id_regime):
    # The variable (set by the fixture) only changes the default: the flag asks for the other regime.
    other = "kept" if agent_id_regime == "per-episode" else "per-episode"
    flag = "--new-agent-id-per-episode" if other == "per-episode" else "--no-new-agent-id-per-episode"
    env = unity("--env", "toy_envs:CounterEnv", "--env-kwargs", '{"terminate_at": 3}', "--agents", "2", flag)
    env.reset()
    decisions, terminals = play_until_both_agents_end(env)
    assert sorted(terminals.agent_id) == [0, 1] and sorted(decisions.agent_id) == NEXT_EPISODE_IDS[other]


def test_a_destroyed_agent_leaves_with_its_id_and_a_spawned_one_takes_a_new_id(unity):
    # Probabilities 1: at step 1 agent 0 is destroyed (one must stay); at step 2 it is spawned, agent 1 destroyed.
    env = unity("--env", "toy_envs:CounterEnv", "--agents", "2", "--despawn-prob", "1", "--spawn-prob", "1")
    env.reset()
    empty = env.behavior_specs["Agent"].action_spec.empty_action
    env.set_actions("Agent", empty(2))
    env.step()
    decisions, terminals = env.get_steps("Agent")
    assert list(terminals.agent_id) == [0] and not terminals.interrupted[0] and list(decisions.agent_id) == [1]
    env.set_actions("Agent", empty(1))
    env.step()
    decisions, terminals = env.get_steps("Agent")
    # Enabling an agent runs Agent.LazyInitialize, which draws the next id, in both regimes.
    assert list(decisions.agent_id) == [2] and decisions.obs[0][:, 0].tolist() == [0.0]
    assert list(terminals.agent_id) == [1]


def settings_channels():
    params, engine, stats = EnvironmentParametersChannel(), EngineConfigurationChannel(), StatsSideChannel()
    params.set_float_parameter("ballSpeed", 4.0)
    params.set_uniform_sampler_parameters("boardRadius", 6.0, 8.0, 77)
    engine.set_configuration_parameters(time_scale=12.0)
    return params, engine, stats


@pytest.mark.one_id_regime_in_quick_suite
def test_engine_settings_and_parameters_reach_the_player(unity):
    params, engine, stats = settings_channels()
    env = unity("--env", "CartPole-v1", "--agents", "4", "--echo-settings-as-stats",
                side_channels=[params, engine, stats])
    env.reset()
    received = stats.get_and_reset_stats()
    assert received["engine/time_scale"][0][0] == 12.0
    assert "received/ballSpeed" in received and "received/boardRadius" in received
    assert [v for v, _ in received["param/ballSpeed"]] == [4.0] * 4
    radii = [v for v, _ in received["param/boardRadius"]]
    assert len(radii) == 4 and all(6.0 <= r <= 8.0 for r in radii) and len(set(radii)) == 4  # drawn per reset


@pytest.mark.one_id_regime_in_quick_suite
def test_the_player_sends_no_settings_back_as_stats_unless_asked(unity):
    # A real build never reports them; they would show up in the user's TensorBoard as unity/engine/... etc.
    params, engine, stats = settings_channels()
    env = unity("--env", "toy_envs:StatsEnv", "--agents", "2", side_channels=[params, engine, stats])
    env.reset()
    env.set_actions("Agent", env.behavior_specs["Agent"].action_spec.empty_action(2))
    env.step()
    keys = set(stats.get_and_reset_stats())
    assert keys and all(key.startswith("toy/") for key in keys)  # the game's own stats, and nothing else


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.one_id_regime_in_quick_suite
def test_closing_ends_the_player_process_by_itself(unity):
    env = unity("--env", "CartPole-v1")
    env.reset()
    process = env._process
    env.close()
    assert process.returncode == 0  # it quit on the close message; it was not killed after timeout_wait


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.one_id_regime_in_quick_suite
def test_player_quits_when_the_trainer_dies(tmp_path):
    script = (
        "import os, sys\n"
        "from mlagents_envs.environment import UnityEnvironment\n"
        f"env = UnityEnvironment(file_name={PLAYER!r}, base_port={free_port()}, worker_id=0, timeout_wait=10)\n"
        "env.reset()\n"
        "print(env._process.pid, flush=True)\n"
        "os._exit(1)  # no close: the trainer vanishes\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


# ---------------------------------------------------------------------- UnityVectorEnv over the player
from rl_lightning import ConfigurationError  # noqa: E402
from rl_lightning.unity.vector_env import UnityVectorEnv  # noqa: E402


@pytest.fixture
def vector_env(monkeypatch, agent_id_regime):
    """Open UnityVectorEnvs on the player, in each agent-id regime (conftest.py); close them all afterwards."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    opened = []

    def open_env(*args, **kwargs):
        kwargs.setdefault("base_port", free_port() - kwargs.get("worker_id", 0))
        env = UnityVectorEnv(file_name=PLAYER, additional_args=list(args), timeout_wait=10, **kwargs)
        opened.append(env)
        return env

    yield open_env
    for env in opened:
        env.close()


@pytest.mark.one_id_regime_in_quick_suite
def test_vector_env_spans_several_processes_with_several_agents(vector_env):
    env = vector_env("--env", "CartPole-v1", "--agents", "3", num_processes=2, base_port=free_port())
    assert env.num_envs == 6 and env.single_action_space == gymnasium.spaces.Discrete(2)
    obs, _ = env.reset()
    assert obs.shape == (6, 4)
    processes = [unit._process for unit in env.units]
    for _ in range(50):
        obs, rewards, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (6, 4) and rewards.shape == (6,)
    env.close()
    assert all(p.returncode == 0 for p in processes)


@pytest.mark.parametrize("ending", ["terminate_at", "truncate_at"])
def test_vector_env_autoresets_with_final_obs_and_maps_interrupted_to_truncated(vector_env, ending):
    env = vector_env("--env", "toy_envs:CounterEnv", "--env-kwargs", f'{{"{ending}": 2}}', "--agents", "2")
    env.reset()
    env.step(np.zeros(2, dtype=np.int64))
    obs, rewards, terminated, truncated, info = env.step(np.zeros(2, dtype=np.int64))
    assert obs[:, 0].tolist() == [0.0, 0.0]  # the next episodes' first observations
    assert [float(o[0]) for o in info["final_obs"]] == [2.0, 2.0] and info["_final_obs"].all()
    assert rewards.tolist() == [1.0, 1.0]
    assert truncated.tolist() == [ending == "truncate_at"] * 2
    assert terminated.tolist() == [ending == "terminate_at"] * 2


@pytest.mark.one_id_regime_in_quick_suite
def test_vector_env_passes_action_masks_and_settings(vector_env):
    env = vector_env("--env", "toy_envs:MaskedEnv", "--agents", "2", "--echo-settings-as-stats",
                     engine_settings={"time_scale": 12.0},
                     parameters={"ballSpeed": 4.0, "boardRadius": {"sampler": "uniform", "min": 6, "max": 8, "seed": 77}})
    obs, info = env.reset()
    assert info["action_mask"].tolist() == [[False, False, True, False]] * 2
    stats = env.read_stats()
    radius = stats["param/boardRadius"]
    assert stats["engine/time_scale"].value == 12.0 and 6 <= radius.low <= radius.high <= 8
    env.step(np.array([2, 2]))
    # Settings can change between training and testing.
    env.configure(engine_settings={"time_scale": 1.0})
    env.reset()
    assert env.read_stats()["engine/time_scale"].value == 1.0


@pytest.mark.one_id_regime_in_quick_suite
def test_vector_env_reports_bad_settings_clearly(vector_env, tmp_path):
    with pytest.raises(ConfigurationError, match=r"file_name='.*no_such_build': no Unity build at"):
        UnityVectorEnv(file_name=str(tmp_path / "no_such_build"))
    not_exec = tmp_path / "build.x86_64"
    not_exec.write_text("")
    with pytest.raises(ConfigurationError, match=r"is not executable"):
        UnityVectorEnv(file_name=str(not_exec))
    with pytest.raises(ConfigurationError, match=r"behavior_name='Nope' does not exist; the build has \['Agent'\]"):
        vector_env("--env", "CartPole-v1", behavior_name="Nope")
    first = vector_env("--env", "CartPole-v1")
    port = first.units[0]._port
    with pytest.raises(ConfigurationError, match=r"worker_id=0: its port is already in use .* worker_id"):
        vector_env("--env", "CartPole-v1", base_port=port)


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.one_id_regime_in_quick_suite
def test_ppo_trains_through_the_unity_protocol_from_the_cli(monkeypatch, tmp_path):
    from rl_lightning.cli import RLLightningCLI

    port = free_port()
    cli = RLLightningCLI(args=[
        "fit", "--config", str(Path(TESTS).parent / "configs/ppo_unity_cartpole.yaml"),
        f"--model.init_args.env_kwargs.base_port={port}", "--model.init_args.env_kwargs.worker_id=0",
        f"--model.init_args.eval_env_kwargs.base_port={free_port()}", "--model.init_args.eval_env_kwargs.worker_id=0",
        "--model.init_args.total_steps=1024", "--model.init_args.steps_per_epoch=512",
        "--model.init_args.eval_episodes=2", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false"])
    model = cli.model
    assert model.env_steps == 1024 and model.last_evaluation is not None
    assert model.envs is None  # closed at the end of fit

    # test from the checkpoint: only the evaluation process runs, and the training-time
    # rollout-size check (which needs the training agents' count) must not stand in the way.
    ckpt = next(tmp_path.rglob("*.ckpt"))
    cli = RLLightningCLI(args=[
        "test", "--config", str(Path(TESTS).parent / "configs/ppo_unity_cartpole.yaml"),
        f"--model.init_args.eval_env_kwargs.base_port={free_port()}", "--model.init_args.eval_env_kwargs.worker_id=0",
        "--model.init_args.eval_episodes=2", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", f"--ckpt_path={ckpt}"])
    assert len(cli.model.last_evaluation.returns) == 2


@pytest.mark.usefixtures("agent_id_regime")
def test_dqn_trains_on_masked_unity_agents_across_episode_ends(monkeypatch, tmp_path):
    import lightning as L

    from rl_lightning import DQN

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    # MaskedEnv asserts on a masked action; its episodes truncate every 4 steps.
    model = DQN(env="unity", env_kwargs={"file_name": PLAYER, "base_port": free_port(), "timeout_wait": 10,
                                         "additional_args": ["--env", "toy_envs:MaskedEnv", "--agents", "2"]},
                learning_starts=16, batch_size=8, train_freq=4, total_steps=64, steps_per_epoch=64, eval_episodes=0)
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    assert model.env_steps == 64 and model.buffer.size == 64
    # Unity's interrupted (max step) is a truncation: bootstrapped, never terminal, and the stored next
    # observation of the episode's last step is its final one (counter 4), not the next episode's first (0).
    storage = model.buffer.storage
    assert not storage["terminated"][:64].any()
    assert torch.equal(storage["next_obs"][:64] - storage["obs"][:64], torch.ones(64, 1))
    assert (storage["next_obs"][:64] == 4).sum() == 64 // 4


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.one_id_regime_in_quick_suite
@pytest.mark.parametrize("algorithm", ["PPO", "A2C"])
def test_on_policy_algorithms_honour_unity_action_masks_in_training_and_evaluation(algorithm, monkeypatch,
                                                                                   tmp_path):
    import lightning as L

    import rl_lightning

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    # MaskedEnv asserts on a masked action: the player would die and fit would raise.
    args = ["--env", "toy_envs:MaskedEnv", "--agents", "2"]
    model = getattr(rl_lightning, algorithm)(
        env="unity", env_kwargs={"file_name": PLAYER, "base_port": free_port(), "timeout_wait": 10,
                                 "additional_args": args},
        eval_env_kwargs={"base_port": free_port()}, n_steps=8, total_steps=64, steps_per_epoch=32,
        eval_episodes=4, eval_deterministic=False, **({"batch_size": 16} if algorithm == "PPO" else {}))
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    assert model.env_steps == 64 and len(model.last_evaluation.returns) == 4


@pytest.mark.one_id_regime_in_quick_suite
def test_gridworld_through_the_protocol_keeps_image_goal_and_masks(vector_env):
    env = vector_env("--env", "rl_lightning/GridWorld-v0", "--agents", "2")
    space = env.single_observation_space
    assert isinstance(space, gymnasium.spaces.Dict) and space["CameraSensor"].shape == (64, 84, 3)
    assert space["GoalSensor"].shape == (2,) and env.single_action_space == gymnasium.spaces.Discrete(5)
    kinds = {s.name: s.observation_type.name for s in env.spec_.observation_specs}
    assert kinds == {"CameraSensor": "DEFAULT", "GoalSensor": "GOAL_SIGNAL"}
    obs, info = env.reset()
    # PNG bytes come back exactly: uint8, and only the game's own colours.
    assert space["CameraSensor"].dtype == np.uint8 and obs["CameraSensor"].dtype == np.uint8
    colours = {tuple(c) for c in obs["CameraSensor"].reshape(-1, 3)}
    assert colours == {gridworld.BACKGROUND, gridworld.FLOOR, gridworld.AGENT, gridworld.PLUS, gridworld.EX}
    assert obs["GoalSensor"].sum(axis=1).tolist() == [1.0, 1.0]
    assert info["action_mask"].shape == (2, 5) and info["action_mask"][:, 0].all()  # "stay" is always allowed


@pytest.mark.one_id_regime_in_quick_suite
def test_vector_env_gives_float_images_when_asked(vector_env):
    env = vector_env("--env", "rl_lightning/GridWorld-v0", uint8_images=False)
    obs, _ = env.reset()
    assert env.single_observation_space["CameraSensor"].dtype == np.float32
    assert obs["CameraSensor"].dtype == np.float32 and 0.0 <= obs["CameraSensor"].min() and obs["CameraSensor"].max() <= 1.0
    assert np.allclose(obs["CameraSensor"] * 255, np.rint(obs["CameraSensor"] * 255), atol=1e-3)


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.one_id_regime_in_quick_suite
def test_seed_s1_wrappers_serve_unity_agents(monkeypatch):
    # Seed S1 through the protocol: 6-channel goal image, 4 network actions sent as action + 1, success reported.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    env = make_vector_env("unity", env_kwargs=dict(
        file_name=PLAYER, additional_args=["--env", "rl_lightning/GridWorld-v0", "--agents", "3"],
        base_port=free_port(), timeout_wait=10, success_reward=0.5),
        wrappers=["rl_lightning.envs.transforms:GoalConditionedImage",
                  {"class_path": "rl_lightning.envs.transforms:ActionOffset", "init_args": {"offset": 1}}])
    try:
        assert env.single_observation_space == gymnasium.spaces.Box(0, 255, (64, 84, 6), np.uint8)
        assert env.single_action_space == gymnasium.spaces.Discrete(4)
        obs, info = env.reset()
        assert obs.shape == (3, 64, 84, 6) and obs.dtype == np.uint8
        # One half of the channels is the image, the other black, as the goal signal says.
        assert all((obs[i, ..., :3].any() != obs[i, ..., 3:].any()) for i in range(3))
        assert info["action_mask"].shape == (3, 4)
        rng = np.random.default_rng(0)
        outcomes = []
        for _ in range(400):
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in info["action_mask"]])
            obs, rewards, terminated, truncated, info = env.step(actions)
            for i in np.flatnonzero(terminated | truncated):
                assert info["final_obs"][i].shape == (64, 84, 6)
                outcomes.append((bool(info["final_info"]["is_success"][i]), rewards[i]))
        assert outcomes and {s for s, _ in outcomes} == {True, False}
        assert all(s == (r > 0.5) for s, r in outcomes)  # success = the goal's +1 as last reward
    finally:
        env.close()


@pytest.mark.one_id_regime_in_quick_suite
def test_dodge_through_the_protocol_with_the_seed_parameters(vector_env):
    env = vector_env("--env", "rl_lightning/Dodge-v0", "--agents", "4", "--echo-settings-as-stats", parameters={
        "ballSpeed": 4.0, "ballRandom": 0.2, "agentSpeed": 3.0,
        "boardRadius": {"sampler": "uniform", "min": 6, "max": 8, "seed": 77},
        "ballNums": {"sampler": "uniform", "min": 10, "max": 15, "seed": 77}})
    assert env.num_envs == 4 and env.single_observation_space.shape == (122,)
    stats = env.read_stats()  # the 4 agents' first episodes, drawn at the reset done when the env was built
    radius, balls = stats["param/boardRadius"], stats["param/ballNums"]
    assert radius.count == 4 and 6 <= radius.low <= radius.high <= 8
    assert balls.count == 4 and 10 <= balls.low <= balls.high <= 15
    ended = 0
    for _ in range(60):
        _, rewards, terminated, truncated, info = env.step(env.action_space.sample())
        ended += int(terminated.sum())
        assert (np.isclose(rewards, 0.01) | np.isclose(rewards, -1.0)).all()
    assert ended > 0  # random agents get hit, and come back in new episodes


@pytest.mark.one_id_regime_in_quick_suite
def test_vector_env_matches_unity_observations_to_dict_keys_by_name(vector_env):
    # The player sends "image" before "goal"; the Dict space sorts its keys (goal, image).
    env = vector_env("--env", "toy_envs:GoalFirstUnsortedEnv", "--agents", "2")
    assert [s.name for s in env.spec_.observation_specs] == ["image", "goal"]
    obs, _ = env.reset()
    assert obs["goal"].shape == (2, 2) and obs["goal"].sum(axis=1).tolist() == [1.0, 1.0]
    assert obs["image"].shape == (2, 36, 40, 3)
    _, _, _, truncated, info = env.step(np.zeros(2, dtype=np.int64))
    for _ in range(4):
        _, _, _, truncated, info = env.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and info["final_obs"][0]["goal"].shape == (2,)


def test_command_line_arguments_from_yaml_go_to_the_player_as_strings_and_json():
    from rl_lightning.unity.process import command_line_arguments

    # YAML reads `8` as a number and a JSON argument as a mapping; the player gets text it can parse.
    assert command_line_arguments(["--agents", 8, "--env-kwargs", {"terminate_at": 20}, "--x", [1, 2]]) == [
        "--agents", "8", "--env-kwargs", '{"terminate_at": 20}', "--x", "[1, 2]"]


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.one_id_regime_in_quick_suite
def test_unity_action_spaces_are_seeded_so_random_play_repeats(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    draws = []
    for _ in range(2):
        env = make_vector_env("unity", seed=5, env_kwargs=dict(
            file_name=PLAYER, additional_args=["--env", "CartPole-v1", "--agents", "3"], base_port=free_port(),
            timeout_wait=10))
        try:
            draws.append([env.action_space.sample().tolist() for _ in range(20)] +
                         [env.single_action_space.sample() for _ in range(20)])
        finally:
            env.close()
    assert draws[0] == draws[1]


@pytest.mark.parametrize("bad", ["{'max_steps': 5}", "[5]"])
def test_player_refuses_env_kwargs_that_are_not_a_json_object(bad, capsys):
    from rl_lightning.unity.player import main

    with pytest.raises(SystemExit) as exit_:
        main(["--mlagents-port", "1", "--env-kwargs", bad])
    assert exit_.value.code == 2
    assert "--env-kwargs must be a JSON object" in capsys.readouterr().err


def test_player_refuses_an_unknown_id_regime_naming_the_variable(monkeypatch, capsys):
    from rl_lightning.unity.player import ID_REGIME_VARIABLE, main

    monkeypatch.setenv(ID_REGIME_VARIABLE, "per-step")
    with pytest.raises(SystemExit) as exit_:
        main(["--mlagents-port", "1"])
    assert exit_.value.code == 2
    assert "RL_LIGHTNING_PLAYER_ID_REGIME='per-step' is not one of 'kept', 'per-episode'" in capsys.readouterr().err
