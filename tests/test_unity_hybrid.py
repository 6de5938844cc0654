"""Hybrid action specs (continuous + discrete branches), through the real player and mlagents' UnityEnvironment."""

import os

import lightning as L
import numpy as np
import pytest
from test_unity_player import PLAYER, TESTS, free_port, unity, vector_env  # noqa: F401 (fixtures)
from toy_envs import HybridEnv

from rl_lightning import A2C, DDPG, DQN, PPO, ConfigurationError
from rl_lightning.envs.spaces import hybrid_action_space
from rl_lightning.export import export_onnx

HYBRID = ["--env", "toy_envs:HybridEnv"]

# Hybrid actions do not touch agent ids: each test's per-episode case runs with --all (conftest.py).
pytestmark = pytest.mark.one_id_regime_in_quick_suite


@pytest.fixture(autouse=True)
def toy_envs_importable(monkeypatch):
    """The player processes import the toy envs from this folder."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))


def unity_kwargs(agents: int, worker_id: int) -> dict:
    return {"file_name": PLAYER, "base_port": free_port() - worker_id, "worker_id": worker_id, "timeout_wait": 10,
            "additional_args": HYBRID + ["--agents", str(agents)]}


def fit(model) -> None:
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model)


def test_player_serves_a_dict_action_space_as_a_hybrid_spec(unity):  # noqa: F811
    env = unity(*HYBRID, "--agents", "2")
    env.reset()
    spec = env.behavior_specs["Agent"].action_spec
    assert spec.continuous_size == 1 and spec.discrete_branches == (3, 2)


def test_hybrid_actions_arrive_intact_and_the_mask_covers_the_discrete_branches(vector_env):  # noqa: F811
    env = vector_env(*HYBRID, "--agents", "2", worker_id=654)
    assert env.single_action_space == hybrid_action_space(1, [3, 2])
    obs, info = env.reset()
    cues = obs[:, :3].argmax(1)
    forbidden = (cues + 1) % 3
    expected_mask = np.ones((2, 5), bool)
    expected_mask[[0, 1], forbidden] = False
    assert info["action_mask"].tolist() == expected_mask.tolist()
    choice = (cues + 2) % 3  # allowed, and neither the cue nor 0 for both rows
    actions = {"continuous": np.array([[0.25], [-0.8125]], np.float32), "discrete": np.stack([choice, [1, 0]], 1)}
    obs, rewards, *_ = env.step(actions)
    # The env echoes the action it received: the continuous value exactly, both branch indices.
    assert obs[:, 3:].tolist() == [[0.25, choice[0], 1.0], [-0.8125, choice[1], 0.0]]
    assert rewards.tolist() == pytest.approx([-abs(0.25 - (cues[0] - 1) / 2), -abs(-0.8125 - (cues[1] - 1) / 2)])


@pytest.mark.usefixtures("agent_id_regime")
def test_ppo_learns_hybrid_actions_through_the_player_within_its_masks():
    # HybridEnv asserts that no masked discrete action reaches it: the fit (sampling) and the evaluation
    # (deterministic) would fail on one.
    model = PPO(env="unity", env_kwargs=unity_kwargs(8, 656), eval_env_kwargs={"base_port": free_port() - 657,
                                                                               "worker_id": 657},
                n_steps=32, batch_size=64, n_epochs=4, learning_rate=3e-3, total_steps=4096, steps_per_epoch=4096,
                eval_episodes=16, seed=0)
    fit(model)
    # A random policy (within the masks) returns about -1.6 per 8-step episode, the untrained one about 0;
    # the best is 8 and needs both the continuous and the discrete part right.
    rng = np.random.default_rng(0)
    env = HybridEnv()
    random_returns = []
    for episode in range(100):
        _, info = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            d0 = rng.choice(np.flatnonzero(info["action_mask"][:3]))
            action = {"continuous": np.clip(rng.normal(size=1), -1, 1).astype(np.float32),
                      "discrete": np.array([d0, rng.integers(2)])}
            _, reward, _, done, info = env.step(action)
            total += reward
        random_returns.append(total)
    trained = float(np.mean(model.last_evaluation.returns))
    assert trained > 5.0 and trained > np.mean(random_returns) + 5.0, (trained, np.mean(random_returns))
    # act() gives the space's dict, one observation or a batch; a mask on the discrete part is honoured.
    cue0 = np.array([1, 0, 0, 0, 0, 0], np.float32)
    one = model.act(cue0)
    assert set(one) == {"continuous", "discrete"} and one["continuous"].shape == (1,) and one["discrete"].shape == (2,)
    assert one["discrete"][0] == 0 and abs(float(one["continuous"][0]) + 0.5) < 0.3  # cue 0: branch 0, target -0.5
    batch = model.act(np.stack([cue0, cue0]))
    assert batch["continuous"].shape == (2, 1) and batch["discrete"].shape == (2, 2)
    masked = model.act(cue0, action_mask=np.array([False, True, False, True, True]))
    assert masked["discrete"][0] == 1


@pytest.mark.usefixtures("agent_id_regime")
def test_a2c_trains_on_hybrid_actions_through_the_player():
    model = A2C(env="unity", env_kwargs=unity_kwargs(4, 658), n_steps=8, total_steps=256, steps_per_epoch=256,
                eval_episodes=0, seed=0)
    fit(model)
    assert model.env_steps == 256
    assert model.rollout.actions.shape[-1] == 3  # one continuous value and two branch indices per action


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.parametrize("algorithm", [DQN, DDPG])
def test_dqn_and_ddpg_refuse_hybrid_actions_naming_the_algorithms_that_can(algorithm):
    model = algorithm(env="unity", env_kwargs=unity_kwargs(1, 660), total_steps=64, steps_per_epoch=64,
                      eval_episodes=0)
    try:
        with pytest.raises(ConfigurationError, match=rf"{algorithm.__name__} needs a .* action space; the env's is a hybrid "
                                                     r"action space .*; train it with A2C or PPO$"):
            model.setup("fit")
    finally:
        model.close_envs()


def test_exporting_a_hybrid_policy_says_it_is_not_supported_yet(tmp_path):
    model = PPO(env="toy_envs:HybridEnv", num_envs=1, n_steps=8, batch_size=8, total_steps=8, eval_episodes=0)
    model.setup("fit")
    try:
        with pytest.raises(ConfigurationError, match="hybrid actions are not exported yet"):
            export_onnx(model, tmp_path / "policy.onnx")
    finally:
        model.close_envs()


def test_a_hybrid_checkpoint_loads_and_acts_without_an_env(tmp_path):
    model = PPO(env="toy_envs:HybridEnv", num_envs=2, n_steps=16, batch_size=32, total_steps=64, steps_per_epoch=64,
                eval_episodes=0)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model)
    trainer.save_checkpoint(tmp_path / "hybrid.ckpt")
    loaded = PPO.load_from_checkpoint(tmp_path / "hybrid.ckpt")
    assert loaded.action_space == hybrid_action_space(1, [3, 2])
    obs = np.array([0, 1, 0, 0, 0, 0], np.float32)
    assert {k: v.tolist() for k, v in loaded.act(obs).items()} == {k: v.tolist() for k, v in model.act(obs).items()}
