"""Envs whose observations do not fit their declared space, and env_kwargs an env does not take: named errors.

A user's own env class is checked once at setup with Gymnasium's env checker (``check_env: false`` skips it);
the vector envs name the env when NumPy cannot stack its observations.
"""

import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import lightning as L
import numpy as np
import pytest

from rl_lightning import PPO, ConfigurationError, make_vector_env
from rl_lightning.envs.checks import check_custom_env
from rl_lightning.envs.factory import check_env_source
from rl_lightning.errors import EnvironmentFault

ROOT = Path(__file__).resolve().parents[1]


def fit(model: PPO, tmp_path: Path) -> None:
    L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=tmp_path).fit(model)


def tiny_ppo(env: str, **kwargs) -> PPO:
    return PPO(env=env, num_envs=2, n_steps=8, batch_size=16, n_epochs=1, total_steps=32, steps_per_epoch=32,
               eval_episodes=0, **kwargs)


# ---------------------------------------------------------------------- Gymnasium's env checker at setup
def test_a_custom_env_with_observations_of_the_wrong_shape_is_refused_at_setup_naming_env_and_space(tmp_path):
    model = tiny_ppo("toy_envs:WrongShapeEnv")
    with pytest.raises(ConfigurationError) as error:
        fit(model, tmp_path)
    message = str(error.value)
    assert message.startswith("env='toy_envs:WrongShapeEnv': its reset() returned an observation of shape (3,) and "
                              "dtype float32 where the space wants shape (1,) (observation space: Box(0.0, inf, (1,), "
                              "float32))"), message
    assert "Gymnasium's env checker" in message and "check_env: false" in message
    assert model.envs is None and model.env_steps == 0  # refused before any training env was built


def test_a_custom_env_with_observations_of_the_wrong_dtype_is_refused_naming_both_dtypes(tmp_path):
    # Async sub-envs would store these floats in [0, 1] in uint8 shared memory, as zeros, without any error.
    model = tiny_ppo("toy_envs:WrongDtypeEnv", vectorization="async")
    with pytest.raises(ConfigurationError, match=r"^env='toy_envs:WrongDtypeEnv': its reset\(\) returned an "
                                                 r"observation of shape \(4, 4, 1\) and dtype float64 where the space "
                                                 r"wants dtype uint8 \(observation space: Box\(0, 255, \(4, 4, 1\), "
                                                 r"uint8\)\)"):
        fit(model, tmp_path)
    assert model.envs is None


def test_check_env_false_skips_the_checker_and_the_vector_env_still_names_the_fault(tmp_path):
    model = tiny_ppo("toy_envs:WrongShapeEnv", check_env=False)
    with pytest.raises(ConfigurationError) as error:
        fit(model, tmp_path)
    message = str(error.value)
    # Not the checker's message (which names it): the sync vector env's, where NumPy's "wrong shape" was raised.
    assert "env checker" not in message
    assert message.startswith("env='toy_envs:WrongShapeEnv': its reset() returned an observation of shape (3,) and "
                              "dtype float32 where the space wants shape (1,) (observation space: Box(0.0, inf, (1,), "
                              "float32)) in sub-env 0"), message
    assert "wrong shape" in str(error.value.__cause__)  # NumPy's own error, kept as the cause


def test_the_checker_runs_on_an_instance_of_its_own(tmp_path):
    # The same run with and without the check: same weights, same env steps and returns.
    results = []
    for check in (True, False):
        model = PPO(env="toy_envs:CounterEnv", env_kwargs={"terminate_at": 5}, num_envs=2, n_steps=8, batch_size=16,
                    n_epochs=1, total_steps=32, steps_per_epoch=32, eval_episodes=0, check_env=check)
        fit(model, tmp_path)
        results.append(([p.detach().clone() for p in model.parameters()], model.env_steps))
    assert results[0][1] == results[1][1] == 32
    assert all((a == b).all() for a, b in zip(results[0][0], results[1][0]))


def test_checker_findings_other_than_observations_are_one_warning_naming_the_env():
    # Gymnasium's checker steps with unmasked random actions, which MaskedEnv refuses: not a reason to stop.
    with pytest.warns(UserWarning, match=r"^env='toy_envs:MaskedEnv': Gymnasium's env checker .* reports: "
                                         r"AssertionError: masked action \d taken"):
        check_env_source("toy_envs:MaskedEnv")


def test_registered_ids_and_unity_are_not_checked(monkeypatch):
    import rl_lightning.envs.factory as factory

    checked = []
    monkeypatch.setattr(factory, "check_custom_env", lambda env, make: checked.append(env))
    for env in ("CartPole-v1", "rl_lightning/Drone-v0", "unity", "toy_envs:CounterEnv"):
        check_env_source(env)
    # gym.make runs Gymnasium's passive checker on registered ids itself; Unity would need its build running.
    assert checked == ["toy_envs:CounterEnv"]


def test_the_checker_costs_about_a_millisecond_on_a_small_env():
    from toy_envs import CounterEnv

    check_custom_env(CounterEnv, CounterEnv)  # imports
    start = time.perf_counter()
    for _ in range(20):
        check_custom_env(CounterEnv, CounterEnv)
    per_check = (time.perf_counter() - start) / 20
    print(f"check_env on CounterEnv: {per_check * 1e3:.2f} ms")
    assert per_check < 0.05


# ---------------------------------------------------------------------- the vector envs' stacking
def test_an_env_whose_observations_change_shape_mid_run_is_a_fault_naming_env_step_and_sub_env():
    envs = make_vector_env("toy_envs:ShapeChangesMidRunEnv", num_envs=2)
    envs.reset(seed=0)
    envs.step(np.zeros(2, dtype=np.int64))
    envs.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(EnvironmentFault, match=r"^env='toy_envs:ShapeChangesMidRunEnv': its step\(\) returned an "
                                               r"observation of shape \(2,\) and dtype float32 where the space wants "
                                               r"shape \(1,\) .* in sub-env 0"):
        envs.step(np.zeros(2, dtype=np.int64))
    envs.close()


def test_async_sub_envs_with_the_wrong_shape_are_named_too():
    envs = make_vector_env("toy_envs:WrongShapeEnv", num_envs=2, vectorization="async")
    with pytest.raises(ConfigurationError, match=r"^env='toy_envs:WrongShapeEnv': its reset\(\) returned an "
                                                 r"observation that does not fit its observation space Box\(0.0, inf, "
                                                 r"\(1,\), float32\) \(could not broadcast input array from shape "
                                                 r"\(3,\) into shape \(1,\)\)"):
        envs.reset(seed=0)
    envs.close(terminate=True)


def test_a_registered_id_made_bad_by_a_wrapper_names_the_env_and_the_space():
    envs = make_vector_env("CartPole-v1", num_envs=2, wrappers=["toy_envs:DropLastObservationWrapper"])
    with pytest.raises(ConfigurationError, match=r"^env='CartPole-v1': its reset\(\) returned an observation of "
                                                 r"shape \(3,\) and dtype float32 where the space wants shape \(4,\)"):
        envs.reset(seed=0)
    envs.close()


def test_errors_of_the_env_itself_are_env_faults_naming_it_and_caused_by_the_original():
    envs = make_vector_env("toy_envs:FailingResetEnv", num_envs=1)
    with pytest.raises(EnvironmentFault, match=r"^env='toy_envs:FailingResetEnv': sub-env 0 raised RuntimeError: "
                                               r"FailingResetEnv cannot reset \(in its reset\(\), before their first "
                                               r"step\)") as raised:
        envs.reset(seed=0)
    cause = raised.value.__cause__
    assert isinstance(cause, RuntimeError) and str(cause) == "FailingResetEnv cannot reset"
    envs.close()


# ---------------------------------------------------------------------- env_kwargs
def test_an_env_kwargs_key_the_registered_env_does_not_take_is_named_with_the_accepted_keys():
    with pytest.raises(ConfigurationError, match=r"^env_kwargs key 'sutton_barto_rewrd' is not accepted by "
                                                 r"env='CartPole-v1' \(gym.make, then "
                                                 r"gymnasium.envs.classic_control.cartpole:CartPoleEnv\); did you mean "
                                                 r"'sutton_barto_reward'\? it accepts: disable_env_checker, "
                                                 r"max_episode_steps, render_mode, sutton_barto_reward$"):
        PPO(env="CartPole-v1", env_kwargs={"sutton_barto_rewrd": True})


def test_an_env_kwargs_key_an_env_class_does_not_take_is_named_before_anything_is_built():
    with pytest.raises(ConfigurationError, match=r"^eval_env_kwargs key 'terminate' is not accepted by "
                                                 r"env='toy_envs:CounterEnv'; did you mean 'terminate_at'\? it "
                                                 r"accepts: n_actions, terminate_at, truncate_at$"):
        PPO(env="toy_envs:CounterEnv", env_kwargs={"terminate_at": 3}, eval_env_kwargs={"terminate": 3})
    with pytest.raises(ConfigurationError, match=r"^env_kwargs key 'bogus' is not accepted by env='unity'; it "
                                                 r"accepts: additional_args, base_port, .*worker_id$"):
        make_vector_env("unity", env_kwargs={"bogus": 1})


def test_env_kwargs_of_gym_make_and_of_creators_with_kwargs_are_accepted():
    envs = make_vector_env("CartPole-v1", env_kwargs={"max_episode_steps": 3, "sutton_barto_reward": True})
    envs.reset(seed=0)
    assert [envs.step(np.zeros(1, dtype=np.int64))[3][0] for _ in range(3)] == [False, False, True]
    envs.close()
    make_vector_env(lambda **kwargs: gym.make("CartPole-v1"), env_kwargs={"anything": 1}).close()


def test_a_bogus_env_kwargs_key_on_the_command_line_names_the_key_and_the_env(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rl_lightning", "fit", "--config", str(ROOT / "configs/ppo_cartpole.yaml"),
                           "--model.init_args.env_kwargs", '{"bogus": 1}'],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("*"))
    assert "env_kwargs key 'bogus' is not accepted by env='CartPole-v1'" in proc.stderr, proc.stderr[-2000:]
    assert "gymnasium/envs/registration.py" not in proc.stderr  # stopped before gym.make was called


def test_a_registered_env_whose_package_is_missing_is_a_configuration_error():
    import gymnasium as gym

    from rl_lightning import PPO, ConfigurationError

    gym.register("rl_lightning_test/NeedsMissingPackage-v0", entry_point="toy_envs:NeedsMissingPackageEnv")
    model = PPO(env="rl_lightning_test/NeedsMissingPackage-v0", n_steps=8, batch_size=8, total_steps=64)
    with pytest.raises(ConfigurationError, match=r"env='rl_lightning_test/NeedsMissingPackage-v0' needs a package "
                                                 r"that is not installed: SomeSim is not installed, run `pip install"):
        model.setup("fit")
