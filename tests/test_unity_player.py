"""The Unity-side player, driven by the real mlagents_envs.UnityEnvironment over real gRPC."""

import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.exception import UnityEnvironmentException
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

PLAYER = str(Path(sysconfig.get_path("scripts")) / "rl-lightning-unity-player")
TESTS = str(Path(__file__).resolve().parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def unity(monkeypatch):
    """Open UnityEnvironments on the player (the toy envs importable by it); close them all afterwards."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    opened = []

    def open_env(*args, side_channels=None):
        env = UnityEnvironment(file_name=PLAYER, base_port=free_port(), worker_id=0, timeout_wait=30,
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


@pytest.mark.parametrize("ending", ["terminate_at", "truncate_at"])
def test_an_ending_agent_is_in_terminal_and_decision_steps_at_once(unity, ending):
    env = unity("--env", "toy_envs:CounterEnv", "--env-kwargs", f'{{"{ending}": 3}}', "--agents", "2")
    env.reset()
    spec = env.behavior_specs["Agent"]
    for _ in range(3):
        env.set_actions("Agent", spec.action_spec.empty_action(2))
        env.step()
    decisions, terminals = env.get_steps("Agent")
    assert sorted(terminals.agent_id) == [0, 1] and sorted(decisions.agent_id) == [0, 1]
    assert terminals.obs[0][:, 0].tolist() == [3.0, 3.0]   # the final observation
    assert decisions.obs[0][:, 0].tolist() == [0.0, 0.0]   # the next episode's first one
    assert terminals.reward.tolist() == [1.0, 1.0]
    assert terminals.interrupted.tolist() == [ending == "truncate_at"] * 2


def test_engine_settings_and_parameters_reach_the_player(unity):
    params, engine, stats = EnvironmentParametersChannel(), EngineConfigurationChannel(), StatsSideChannel()
    params.set_float_parameter("ballSpeed", 4.0)
    params.set_uniform_sampler_parameters("boardRadius", 6.0, 8.0, 77)
    engine.set_configuration_parameters(time_scale=12.0)
    env = unity("--env", "CartPole-v1", "--agents", "4", side_channels=[params, engine, stats])
    env.reset()
    received = stats.get_and_reset_stats()
    assert received["engine/time_scale"][0][0] == 12.0
    assert "received/ballSpeed" in received and "received/boardRadius" in received
    assert [v for v, _ in received["param/ballSpeed"]] == [4.0] * 4
    radii = [v for v, _ in received["param/boardRadius"]]
    assert len(radii) == 4 and all(6.0 <= r <= 8.0 for r in radii) and len(set(radii)) == 4  # drawn per reset


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_closing_ends_the_player_process_by_itself(unity):
    env = unity("--env", "CartPole-v1")
    env.reset()
    process = env._process
    env.close()
    assert process.returncode == 0  # it quit on the close message; it was not killed after timeout_wait


def test_player_quits_when_the_trainer_dies(tmp_path):
    script = (
        "import os, sys\n"
        "from mlagents_envs.environment import UnityEnvironment\n"
        f"env = UnityEnvironment(file_name={PLAYER!r}, base_port={free_port()}, worker_id=0, timeout_wait=30)\n"
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
