"""Guards: non-finite numbers from envs, losses and weights stop a run before they reach the weights or a
checkpoint; budgets and rollout sizes that cannot work are refused before training."""

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from rl_lightning import A2C, DDPG, DQN, PPO, ConfigurationError
from rl_lightning.checkpointing import AtomicCheckpointIO
from rl_lightning.data.rollout import RolloutBuffer
from rl_lightning.errors import EnvironmentFault, RLLightningError
from rl_lightning.evaluation import evaluate_episodes
from rl_lightning.guards import NonFiniteCheckpoint, NonFiniteLoss

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
NAN_ENV = "toy_envs:NonFiniteEnv"


def trainer(tmp_path, **kwargs):
    return L.Trainer(max_epochs=-1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                     logger=False, default_root_dir=tmp_path, **kwargs)


def all_weights_finite(model):
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


ON_POLICY = dict(n_steps=8, batch_size=16, n_epochs=1, hidden_sizes=[8])
OFF_POLICY = dict(learning_starts=16, batch_size=8, train_freq=4, buffer_size=200, hidden_sizes=[8])
ALGORITHMS = {
    "PPO": (PPO, ON_POLICY),
    "A2C": (A2C, dict(n_steps=8, hidden_sizes=[8])),
    "DQN": (DQN, OFF_POLICY),
    "DDPG": (DDPG, OFF_POLICY),
}


# (field injected, dict observation, the field the message names)
CASES = {
    "nan-observation": ("obs", False, float("nan"), "observation (nan)"),
    "inf-reward": ("reward", False, float("inf"), "reward (inf)"),
    "nan-in-a-dict-key": ("obs", True, float("nan"), "observation['velocity'] (nan)"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_non_finite_env_output_stops_the_run_naming_env_sub_env_step_and_field(tmp_path, algorithm, case):
    if algorithm in ("A2C", "DDPG") and case == "nan-in-a-dict-key":
        pytest.skip("covered by PPO and DQN")
    cls, kwargs = ALGORITHMS[algorithm]
    field, dict_obs, value, named = CASES[case]
    at_step = 23  # sub-env 1's 23rd step: after learning_starts (updates ran), inside the third rollout
    env_kwargs = dict(at_step=at_step, field=field, value=value, inject_seed=1, dict_obs=dict_obs,
                      continuous=algorithm == "DDPG")
    model = cls(env=NAN_ENV, env_kwargs=env_kwargs, num_envs=2, seed=0, total_steps=400, steps_per_epoch=400,
                eval_episodes=0, **kwargs)
    with pytest.raises(EnvironmentFault) as err:
        trainer(tmp_path, enable_checkpointing=False).fit(model)
    message = str(err.value)
    # The step that returned it was taken when env_steps = (at_step - 1) steps of each of the 2 sub-envs.
    assert f"env '{NAN_ENV}' returned a non-finite {named}" in message, message
    assert f"from sub-env 1 in the env step taken at env_steps={(at_step - 1) * 2}" in message, message
    assert all_weights_finite(model)


def test_a_non_finite_first_observation_is_named_as_the_reset(tmp_path):
    model = PPO(env=NAN_ENV, env_kwargs=dict(at_step=0, inject_seed=0), num_envs=2, total_steps=64, eval_episodes=0,
                **ON_POLICY)
    with pytest.raises(EnvironmentFault, match=r"observation \(nan\) from sub-env 0 at its reset"):
        trainer(tmp_path, enable_checkpointing=False).fit(model)


def test_a_non_finite_loss_stops_before_the_optimizer_step(tmp_path):
    # A real cause: rewards of 1e38 are finite, but their discounted sums overflow float32 to inf, and so does the
    # value loss. The first update already meets it.
    model = PPO(env="CartPole-v1", num_envs=2, reward_scale=1e38, total_steps=256, eval_episodes=0, seed=0,
                **ON_POLICY)
    initial = None

    class Snapshot(L.Callback):
        def on_train_start(self, trainer, pl_module):
            nonlocal initial
            initial = {k: v.clone() for k, v in pl_module.state_dict().items()}

    with pytest.raises(NonFiniteLoss, match=r"became NaN or infinite at env step 16; training stopped before the "
                                            r"optimizer step"):
        trainer(tmp_path, enable_checkpointing=False, callbacks=[Snapshot()]).fit(model)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in initial.items())  # not one optimizer step was taken
    assert isinstance(NonFiniteLoss("x"), RLLightningError)


def test_checkpoint_io_refuses_non_finite_weights_and_keeps_the_previous_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"policy.w": torch.ones(3), "steps": torch.tensor(4)}}, path)
    before = path.read_bytes()
    bad = {"state_dict": {"policy.w": torch.tensor([1.0, float("nan"), 2.0]), "policy.b": torch.zeros(2),
                          "critic.w": torch.tensor([float("-inf")])}}
    with pytest.raises(NonFiniteCheckpoint, match=r"last\.ckpt.*policy\.w, critic\.w hold NaN or inf"):
        io.save_checkpoint(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left either


def test_a_checkpoint_saved_on_the_fault_holds_finite_weights(tmp_path):
    # ModelCheckpoint(save_on_exception=True) saves on the exception path: the weights it writes are finite, as
    # the fault stopped training before an update used the bad number.
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_exception=True)
    model = DQN(env=NAN_ENV, env_kwargs=dict(at_step=40, inject_seed=0), num_envs=1, total_steps=400,
                steps_per_epoch=16, eval_episodes=0, **OFF_POLICY)
    with pytest.raises(EnvironmentFault):
        trainer(tmp_path, callbacks=[ckpt]).fit(model)
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert files
    for file in files:
        state = torch.load(file, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), file


def test_a_non_finite_transition_of_envs_whose_rows_do_not_all_decide_names_its_sub_env_and_step():
    # Unity's agents between decisions: DecisionTransitions stores a transition per decision, not per row and step,
    # so the row in the buffer is mapped back through the collector's trace of (rows before the step, sub-envs).
    from rl_lightning.data.replay import DecisionTransitions

    model = DQN(env="CartPole-v1", num_envs=3, learning_starts=32, batch_size=32)
    model.setup("fit")
    buf, decisions = model.buffer, DecisionTransitions()
    start, trace = buf.added, []
    obs, actions, no = np.zeros((3, 4), np.float32), np.zeros(3, np.int64), np.zeros(3, bool)
    steps = [  # (decision, completes, the next observations)
        (np.ones(3, bool), np.array([True, False, False]), obs),
        (np.array([True, False, False]), np.array([False, False, True]), np.array([[0, 0, 0, 0], [0, 0, 0, 0],
                                                                                  [0, 0, np.inf, 0]], np.float32)),
    ]
    for decision, completes, next_obs in steps:
        before = buf.added
        trace.append((before, decisions.store(buf, decision, obs, actions, np.ones(3, np.float32), next_obs, no,
                                              None, completes)))
    assert [list(t[1]) for t in trace] == [[0], [2]]
    with pytest.raises(EnvironmentFault, match=r"observation \(inf\) from sub-env 2 in the env step taken at "
                                               r"env_steps=103"):
        model.check_stored_finite(start, 100, trace)
    model.close_envs()


def unity_nan_env(worker_id, *extra):
    from test_unity_player import PLAYER, free_port

    return {"file_name": PLAYER, "base_port": free_port() - worker_id, "worker_id": worker_id, "timeout_wait": 10,
            "additional_args": ["--env", NAN_ENV, "--env-kwargs", '{"at_step": 9, "inject_seed": null}',
                                "--agents", "2", *extra]}


@pytest.mark.usefixtures("agent_id_regime")  # the player in both agent-id regimes (conftest.py)
@pytest.mark.one_id_regime_in_quick_suite
@pytest.mark.parametrize("cls, kwargs, worker_id", [(PPO, ON_POLICY, 601), (DQN, OFF_POLICY, 602)])
def test_a_unity_build_sending_nan_stops_the_run_naming_the_process(
        tmp_path, monkeypatch, cls, kwargs, worker_id):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    model = cls(env="unity", env_kwargs=unity_nan_env(worker_id, "--decision-period", "2"), total_steps=400,
                steps_per_epoch=400, eval_episodes=0, **kwargs)
    # mlagents_envs itself refuses NaN or inf from a build (rpc_utils._raise_on_nan_and_inf), before our check.
    with pytest.raises(EnvironmentFault, match=r"Unity process .* sent non-finite numbers at step: The observations "
                                               r"provided had NaN values"):
        trainer(tmp_path, enable_checkpointing=False).fit(model)
    assert all_weights_finite(model)


def test_a_unity_rollout_larger_than_the_budget_is_refused_once_its_agents_are_counted(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    model = PPO(env="unity", env_kwargs=unity_nan_env(603), n_steps=64, total_steps=100, eval_episodes=0)
    try:
        with pytest.raises(ConfigurationError, match=r"n_steps=64 x num_envs=2 = 128 env steps, more than "
                                                     r"total_steps=100"):
            model.setup("fit")
    finally:
        model.close_envs()


def test_ddpg_refuses_an_action_space_with_infinite_bounds_and_ppo_acts_in_it(tmp_path):
    with pytest.raises(ConfigurationError, match=r"DDPG scales its actions.*infinite bounds.*TransformAction"):
        DDPG(env=NAN_ENV, env_kwargs=dict(at_step=-1, continuous=True, low=-np.inf, high=np.inf),
             **OFF_POLICY).setup("fit")
    # A Gaussian policy needs no bounds: PPO trains and acts in it with finite actions.
    model = PPO(env=NAN_ENV, env_kwargs=dict(at_step=-1, continuous=True, low=-np.inf, high=np.inf), num_envs=2,
                total_steps=32, eval_episodes=0, **ON_POLICY)
    trainer(tmp_path, enable_checkpointing=False).fit(model)
    assert np.isfinite(model.act(np.zeros(2, np.float32))).all() and all_weights_finite(model)


def test_evaluation_refuses_to_average_a_non_finite_return():
    from rl_lightning.envs.factory import make_vector_env

    envs = make_vector_env(NAN_ENV, num_envs=2, seed=0,
                           env_kwargs=dict(at_step=3, field="reward", inject_seed=1, episode_length=5))
    try:
        with pytest.raises(EnvironmentFault, match=r"sub-env 1 ended an episode with return nan after 5 steps"):
            evaluate_episodes(lambda obs: np.zeros(len(obs), np.int64), envs, n_episodes=4, seed=0)
    finally:
        envs.close()


# ---------------------------------------------------------------------- budget and size
@pytest.mark.parametrize("cls, kwargs, names", [
    (PPO, dict(num_envs=4, n_steps=32, total_steps=100), "n_steps=32 x num_envs=4 = 128 env steps, more than "
                                                          "total_steps=100"),
    (DQN, dict(num_envs=4, train_freq=32, total_steps=100, learning_starts=64, batch_size=32),
     "train_freq=32 x num_envs=4 = 128 env steps, more than total_steps=100"),
])
def test_a_collection_round_larger_than_the_budget_is_refused_at_setup(cls, kwargs, names):
    with pytest.raises(ConfigurationError, match=re.escape(names)):
        cls(env="CartPole-v1", **kwargs).setup("fit")


def test_learning_starts_past_the_budget_is_refused_as_nothing_would_be_learned():
    with pytest.raises(ConfigurationError, match=r"^learning_starts=500 >= total_steps=400: the run would only fill "
                                                 r"the replay buffer and never update the networks; lower"):
        DQN(env="CartPole-v1", total_steps=400, learning_starts=500, batch_size=32).setup("fit")


def test_a_rollout_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ConfigurationError, match=r"n_steps=10000000 x num_envs=100000 = 1000000000000 steps needs "
                                                 r"[\d.]+ GiB on cpu but only [\d.]+ GiB is available; lower n_steps"):
        RolloutBuffer(10_000_000, 100_000, (4,), (), torch.long)
    # Through the module, at setup (before the first rollout).
    with pytest.raises(ConfigurationError, match=r"a rollout of n_steps=10000000000 x num_envs=2"):
        PPO(env="CartPole-v1", num_envs=2, n_steps=10**10, batch_size=64, total_steps=10**12).setup("fit")


def run_cli(tmp_path, *args, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "rl_lightning", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_rollout_larger_than_the_budget_fails_fast_naming_the_settings(tmp_path):
    result = run_cli(tmp_path, "fit", "--config", str(REPO / "configs/ppo_cartpole.yaml"),
                     "--model.init_args.num_envs", "1000", "--model.init_args.total_steps", "2048", timeout=60)
    assert result.returncode == 2  # bad input
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*"))  # no run folder
    assert "n_steps=32 x num_envs=1000 = 32000 env steps, more than total_steps=2048" in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_cli_run_with_nan_at_a_random_step_exits_non_zero_and_leaves_only_finite_checkpoints(tmp_path):
    at_step = int(np.random.default_rng().integers(40, 400))  # each run its own step: the guard must not care
    config = tmp_path / "nan.yaml"
    config.write_text(f"""\
model:
  class_path: rl_lightning.PPO
  init_args:
    env: {NAN_ENV}
    env_kwargs: {{at_step: {at_step}, inject_seed: 2, field: reward, value: .nan}}
    num_envs: 4
    total_steps: 4096
    steps_per_epoch: 64
    eval_episodes: 1
    n_steps: 16
    batch_size: 64
    n_epochs: 1
    hidden_sizes: [16]
trainer:
  accelerator: cpu
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: lightning_logs, name: nan}}
""")
    result = run_cli(tmp_path, "fit", "--config", str(config))
    assert result.returncode == 1, result.stderr[-2000:]  # the env's fault, not bad input
    assert "Traceback" not in result.stderr
    assert f"from sub-env 2 in the env step taken at env_steps={(at_step - 1) * 4}" in result.stderr, \
        result.stderr[-2000:]
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert checkpoints  # epochs ended (and wrote checkpoints) before the fault
    for file in checkpoints:
        state = torch.load(file, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), file
