"""Building vector envs from ids, import paths and classes; autoreset and episode statistics."""

import gymnasium as gym
import numpy as np
import pytest
from toy_envs import CounterEnv

from rl_lightning import ConfigurationError, make_vector_env


def test_vector_env_from_registered_id_passes_make_kwargs():
    envs = make_vector_env("CartPole-v1", num_envs=3, seed=0, env_kwargs={"max_episode_steps": 7})
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 4)
    for _ in range(7):
        obs, _, term, trunc, info = envs.step(np.zeros(3, dtype=np.int64))
    # Pushing left for 7 steps does not topple the pole: all three hit the 7-step limit together.
    assert trunc.all() and not term.any()
    assert (info["episode"]["l"] == 7).all()
    envs.close()


def test_vector_env_from_import_path_and_class_are_the_same_env():
    for source in ("toy_envs:CounterEnv", "toy_envs.CounterEnv", CounterEnv):
        envs = make_vector_env(source, num_envs=2, env_kwargs={"terminate_at": 2})
        envs.reset(seed=1)
        envs.step(np.zeros(2, dtype=np.int64))
        obs, rew, term, trunc, info = envs.step(np.zeros(2, dtype=np.int64))
        assert term.all() and not trunc.any()
        # Same-step autoreset: the new episode's first observation, the last one kept in final_obs.
        assert (obs == 0).all()
        assert info["_final_obs"].all() and float(info["final_obs"][0][0]) == 2.0
        assert (info["episode"]["r"] == 2.0).all()
        envs.close()


def test_wrappers_given_as_import_path_and_dict_are_applied_in_order():
    envs = make_vector_env("CartPole-v1", num_envs=1, wrappers=[
        "gymnasium.wrappers.FlattenObservation",
        {"class_path": "gymnasium.wrappers.TimeLimit", "init_args": {"max_episode_steps": 3}},
    ])
    envs.reset(seed=0)
    trunc = [envs.step(np.zeros(1, dtype=np.int64))[3][0] for _ in range(3)]
    assert trunc == [False, False, True]
    envs.close()


def test_async_vector_env_steps_in_subprocesses():
    envs = make_vector_env("CartPole-v1", num_envs=2, vectorization="async", seed=0)
    obs, _ = envs.reset(seed=0)
    assert isinstance(envs.unwrapped, gym.vector.AsyncVectorEnv)
    assert envs.step(np.zeros(2, dtype=np.int64))[0].shape == (2, 4)
    envs.close()


def test_unknown_env_id_suggests_close_registered_ids():
    with pytest.raises(ConfigurationError, match=r"env='CartPol-v1' is not a registered .* did you mean 'CartPole-v1'"):
        make_vector_env("CartPol-v1")


def test_unimportable_env_path_names_the_setting():
    with pytest.raises(ConfigurationError, match=r"env='no_such_module:Env' could not be imported"):
        make_vector_env("no_such_module:Env")


def test_unimportable_wrapper_is_reported_before_building():
    with pytest.raises(ConfigurationError, match=r"wrappers entry 'gymnasium.wrappers.NoSuchWrapper'"):
        make_vector_env("CartPole-v1", wrappers=["gymnasium.wrappers.NoSuchWrapper"])


def test_importing_the_library_does_not_import_mlagents_envs():
    # Gymnasium users should not pay for mlagents_envs and its protobuf modules: Unity code is imported on use.
    import subprocess
    import sys

    code = "import sys, rl_lightning; from rl_lightning import PPO, DQN; print('mlagents_envs' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
