"""What a Unity build sends besides vectors: float and PNG images, graphics, training areas, agent groups."""

import warnings

import numpy as np
import pytest
from test_unity_player import vector_env  # noqa: F401 (fixture)
from toy_envs import FloatImageEnv, GoalImageEnv


@pytest.mark.one_id_regime_in_quick_suite
def test_uncompressed_float_images_arrive_unchanged_as_float32(vector_env):  # noqa: F811
    env = vector_env("--env", "toy_envs:FloatImageEnv", "--float-images", "--agents", "2", worker_id=670)
    space = env.single_observation_space
    assert space.dtype == np.float32 and np.isneginf(space.low).all() and np.isposinf(space.high).all()
    obs, _ = env.reset()
    direct = FloatImageEnv()
    expected, _ = direct.reset()
    assert obs.dtype == np.float32 and (obs == expected).all()  # 1.5, -0.2 and 3.25 included
    obs, *_ = env.step(np.zeros(2, np.int64))
    expected, *_ = direct.step(0)
    assert (obs == expected).all() and obs[0, 7, 9, 2] == 4.25


@pytest.mark.one_id_regime_in_quick_suite
def test_png_images_still_arrive_as_their_uint8_bytes(vector_env):  # noqa: F811
    env = vector_env("--env", "toy_envs:GoalImageEnv", worker_id=672)
    assert env.single_observation_space["image"].dtype == np.uint8
    obs, _ = env.reset()
    expected, _ = GoalImageEnv().reset(seed=0)
    assert obs["image"].dtype == np.uint8 and (obs["image"][0] == expected["image"]).all()


@pytest.mark.one_id_regime_in_quick_suite
def test_no_graphics_warns_about_visual_observations_only(vector_env):  # noqa: F811
    with pytest.warns(UserWarning, match=r"no_graphics=True but behavior 'Agent' has visual observations \['image'\].*"
                                         r"set no_graphics=False"):
        vector_env("--env", "toy_envs:GoalImageEnv", no_graphics=True, worker_id=674)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # mlagents' own, on import paths
        warnings.filterwarnings("error", message="no_graphics", category=UserWarning)
        vector_env("--env", "toy_envs:GoalImageEnv", worker_id=675)  # ML-Agents' default: graphics on
        vector_env("--env", "CartPole-v1", no_graphics=True, worker_id=676)  # no camera: nothing to warn about


@pytest.mark.one_id_regime_in_quick_suite
def test_num_areas_sets_the_players_agents_unless_agents_is_given(vector_env):  # noqa: F811
    assert vector_env("--env", "CartPole-v1", num_areas=3, worker_id=678).num_envs == 3
    assert vector_env("--env", "CartPole-v1", worker_id=679).num_envs == 1  # ML-Agents' default: 1 area
    assert vector_env("--env", "CartPole-v1", "--agents", "2", num_areas=3, worker_id=680).num_envs == 2


def test_group_ids_and_group_rewards_reach_info_for_the_rows_that_decided_or_ended(vector_env):  # noqa: F811
    env = vector_env("--env", "toy_envs:GroupEnv", "--env-kwargs", '{"terminate_at": 2}', "--agents", "3",
                     worker_id=682)
    env.reset()
    *_, info = env.step(np.zeros(3, np.int64))
    assert info["group_id"].tolist() == [1, 2, 1] and info["_group_id"].all()
    assert info["group_reward"].tolist() == [0.5, 0.5, 0.5]
    _, _, terminated, _, info = env.step(np.zeros(3, np.int64))
    # Each agent ended its episode (TerminalSteps) and began the next (DecisionSteps, group reward 0) in one
    # message: the ended episode's group reward is the one reported.
    assert terminated.all() and info["group_reward"].tolist() == [1.0, 1.0, 1.0]
    assert info["group_id"].tolist() == [1, 2, 1]
    *_, info = vector_env("--env", "toy_envs:CounterEnv", worker_id=683).step(np.zeros(1, np.int64))
    assert "group_id" not in info and "group_reward" not in info  # agents in no group
