"""Any Gymnasium vector env: NEXT_STEP autoreset, functions returning vector envs, lambdas as env, and discrete
action spaces that do not start at 0."""

import gymnasium as gym
import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode
from toy_envs import CounterEnv, StartDiscreteEnv, StartMultiDiscreteEnv, next_step_counters

from rl_lightning import DQN, PPO, ConfigurationError, make_vector_env
from rl_lightning.export import export_onnx


def fit(model, tmp_path, **kwargs):
    trainer = L.Trainer(max_epochs=-1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, **kwargs)
    trainer.fit(model)
    return trainer


class RecordingPPO(PPO):
    """PPO keeping every rollout batch it trains on."""

    def collect_round(self):
        batch = super().collect_round()
        self.batches = getattr(self, "batches", []) + [batch]
        return batch


# ---------------------------------------------------------------------- NEXT_STEP autoreset
def test_next_step_env_reads_like_a_same_step_one():
    envs = make_vector_env(lambda: next_step_counters(2, terminate_at=2), seed=0)
    obs, info = envs.reset(seed=0)
    assert info["decision"].all()
    envs.step(np.zeros(2, np.int64))
    obs, reward, term, trunc, info = envs.step(np.zeros(2, np.int64))
    # The ended step returns the last observation; it is the final one too, and holds no decision.
    assert term.all() and (obs[:, 0] == 2).all() and info["_final_obs"].all()
    assert [float(f[0]) for f in info["final_obs"]] == [2.0, 2.0] and not info["decision"].any()
    assert (info["episode"]["l"] == 2).all() and (info["episode"]["r"] == 2).all()
    # The reset step: the new episode's first observation, reward 0, a decision again.
    obs, reward, term, trunc, info = envs.step(np.zeros(2, np.int64))
    assert (obs[:, 0] == 0).all() and (reward == 0).all() and not term.any() and info["decision"].all()
    envs.close()


def test_ppo_on_a_next_step_env_stores_no_reset_step(tmp_path):
    # 2 sub-envs, episodes of 5 steps, then a reset step: vector step k of each sub-env is a reset step when
    # k % 6 == 5. The rollouts must hold the 5 real steps' observations (0..4) only, never the last one (5).
    model = RecordingPPO(env=lambda **kw: next_step_counters(2, terminate_at=5), n_steps=8, batch_size=8,
                         n_epochs=1, total_steps=480, steps_per_epoch=480, eval_episodes=2, hidden_sizes=[8])
    fit(model, tmp_path)
    obs = torch.cat([b["obs"][:, 0] for b in model.batches])
    assert set(obs.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    resets = sum(1 for k in range(240) if k % 6 == 5) * 2
    assert len(obs) == 480 - resets  # every other step is in a rollout
    assert model.env_steps == 480  # reset steps are env steps
    assert model.last_evaluation.returns.tolist() == [5.0, 5.0]  # reset steps add no reward or length


def test_dqn_on_a_next_step_env_stores_only_real_transitions(tmp_path):
    model = DQN(env=lambda **kw: next_step_counters(2, terminate_at=5), learning_starts=32, batch_size=16,
                buffer_size=1000, total_steps=240, steps_per_epoch=240, eval_episodes=0, hidden_sizes=[8])
    fit(model, tmp_path)
    buf = model.buffer
    obs, next_obs = buf.storage["obs"][:buf.size, 0], buf.storage["next_obs"][:buf.size, 0]
    rewards, terminated = buf.storage["rewards"][:buf.size], buf.storage["terminated"][:buf.size]
    # Each stored transition is a real step t -> t + 1 with reward 1, terminal exactly at 5.
    assert (next_obs == obs + 1).all() and (rewards == 1).all()
    assert torch.equal(terminated, next_obs == 5)
    assert buf.size == 240 - 2 * sum(1 for k in range(120) if k % 6 == 5)


def test_a_truncated_next_step_episode_bootstraps_from_its_last_observation():
    envs = make_vector_env(lambda: next_step_counters(1, terminate_at=None, truncate_at=3), seed=0)
    envs.reset(seed=0)
    for _ in range(3):
        obs, reward, term, trunc, info = envs.step(np.zeros(1, np.int64))
    assert trunc.all() and not term.any() and float(info["final_obs"][0][0]) == 3.0
    envs.close()


@pytest.mark.parametrize("mode", [AutoresetMode.DISABLED, None])
def test_vector_envs_whose_autoreset_cannot_be_read_are_refused(mode, tmp_path):
    def build(**kwargs):
        envs = gym.vector.SyncVectorEnv([lambda: CounterEnv(terminate_at=3)],
                                        autoreset_mode=mode or AutoresetMode.NEXT_STEP)
        if mode is None:  # a user's vector env that does not say
            envs.metadata = {k: v for k, v in envs.metadata.items() if k != "autoreset_mode"}
        return envs

    with pytest.raises(ConfigurationError, match="autoreset_mode" if mode is None else "DISABLED"):
        make_vector_env(build)


# ---------------------------------------------------------------------- functions returning vector envs
def test_a_function_returning_make_vec_is_the_env_and_num_envs_must_agree(tmp_path):
    make = lambda **kw: gym.make_vec("CartPole-v1", num_envs=3, **kw)  # noqa: E731
    envs = make_vector_env(make, seed=0)  # num_envs 1: the function decides
    assert envs.num_envs == 3
    envs.close()
    assert make_vector_env(make, num_envs=3).num_envs == 3
    with pytest.raises(ConfigurationError, match="num_envs=4 but it built 3"):
        make_vector_env(make, num_envs=4)
    with pytest.raises(ConfigurationError, match="vectorization='async'"):
        make_vector_env(make, vectorization="async")

    def takes_count(num_envs=1):
        return gym.make_vec("CartPole-v1", num_envs=num_envs)

    assert make_vector_env(takes_count, num_envs=4).num_envs == 4


def test_ppo_and_dqn_train_on_a_make_vec_factory(tmp_path):
    for model in (PPO(env=lambda **kw: gym.make_vec("CartPole-v1", num_envs=4, **kw), num_envs=4, n_steps=16,
                      batch_size=32, total_steps=256, steps_per_epoch=128, eval_episodes=2, hidden_sizes=[8]),
                  DQN(env=lambda **kw: gym.make_vec("CartPole-v1", num_envs=4, **kw), num_envs=4, learning_starts=64,
                      batch_size=16, total_steps=256, steps_per_epoch=128, eval_episodes=2, hidden_sizes=[8])):
        fit(model, tmp_path)
        assert model.env_steps == 256 and len(model.last_evaluation.returns) == 2


# ---------------------------------------------------------------------- lambdas and closures
def test_a_lambda_env_trains_and_its_checkpoint_loads(tmp_path):
    def make(**kwargs):  # a closure: not importable
        return CounterEnv(terminate_at=5, **kwargs)

    model = PPO(env=make, n_steps=16, batch_size=16, total_steps=64, steps_per_epoch=64, eval_episodes=1,
                hidden_sizes=[8])
    trainer = fit(model, tmp_path)
    assert model.hparams.env.startswith("<function ") and "make" in model.hparams.env
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    # Without the function: it acts (no env needed) ...
    loaded = PPO.load_from_checkpoint(tmp_path / "m.ckpt")
    obs = np.array([[1.0]], np.float32)
    assert loaded.act(obs).tolist() == model.act(obs).tolist()
    # ... and building envs asks for the function.
    with pytest.raises(ConfigurationError, match="load_from_checkpoint"):
        L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).validate(loaded)
    # With it: it evaluates.
    again = PPO.load_from_checkpoint(tmp_path / "m.ckpt", env=make)
    L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).validate(again)
    assert again.last_evaluation.returns.tolist() == [5.0]


def test_a_gym_make_lambda_trains(tmp_path):
    model = PPO(env=lambda **kw: gym.make("CartPole-v1", **kw), n_steps=16, batch_size=16, total_steps=64,
                steps_per_epoch=64, eval_episodes=1, hidden_sizes=[8])
    fit(model, tmp_path)
    assert model.env_steps == 64


# ---------------------------------------------------------------------- discrete actions with a start
@pytest.mark.parametrize("algorithm", ["PPO", "DQN"])
def test_discrete_actions_with_a_start_reach_the_env_in_its_space(algorithm, tmp_path):
    # StartDiscreteEnv raises on any action outside {1, 2, 3}; action 3 is rewarded.
    if algorithm == "PPO":
        model = PPO(env=StartDiscreteEnv, num_envs=2, n_steps=32, batch_size=32, learning_rate=3e-3,
                    total_steps=2048, steps_per_epoch=1024, eval_episodes=2, hidden_sizes=[16], ent_coef=0.0)
    else:
        model = DQN(env=StartDiscreteEnv, num_envs=2, learning_starts=200, batch_size=32, buffer_size=2000,
                    learning_rate=3e-3, exploration_fraction=0.5, target_update_interval=100, total_steps=2048,
                    steps_per_epoch=1024, eval_episodes=2, hidden_sizes=[16])
    fit(model, tmp_path)
    obs = np.arange(5, dtype=np.float32)[:, None]
    actions = model.act(obs)
    assert set(actions.tolist()) <= {1, 2, 3} and (actions == 3).all()  # in the env's space, and learned
    assert model.last_evaluation.returns.tolist() == [5.0, 5.0]
    if algorithm == "DQN":
        stored = model.buffer.storage["actions"][:model.buffer.size]
        assert set(stored.tolist()) == {0, 1, 2}  # the buffer keeps 0-based indices


def test_multidiscrete_actions_with_a_start_reach_the_env_in_its_space(tmp_path):
    model = PPO(env=StartMultiDiscreteEnv, num_envs=2, n_steps=32, batch_size=32, learning_rate=3e-3,
                total_steps=1024, steps_per_epoch=1024, eval_episodes=1, hidden_sizes=[16])
    fit(model, tmp_path)
    actions = model.act(np.arange(5, dtype=np.float32)[:, None])
    assert all(StartMultiDiscreteEnv().action_space.contains(a) for a in actions.astype(np.int64))


def test_export_adds_the_start_and_the_mlagents_format_refuses_it(tmp_path):
    model = PPO(env=StartDiscreteEnv, n_steps=16, batch_size=16, total_steps=64, steps_per_epoch=64,
                eval_episodes=1, hidden_sizes=[8])
    fit(model, tmp_path)
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "p.onnx")))
    obs = np.arange(5, dtype=np.float32)[:, None]
    assert [i.name for i in session.get_inputs()] == ["obs"]  # the env gives no masks
    (actions,) = session.run(None, {"obs": obs})
    assert actions.tolist() == model.act(obs).tolist() and set(actions.tolist()) <= {1, 2, 3}
    model.env_gives_action_masks = True  # as for an env with masks: column i of a mask is action start + i
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "masked.onnx")))
    masks = np.ones((5, 3), bool)
    masks[:, 2] = False  # the mask's column 2 is action 3 (start + 2)
    (actions,) = session.run(None, {"obs": obs, "action_masks": masks})
    assert 3 not in actions.tolist() and actions.tolist() == model.act(obs, action_mask=masks).tolist()
    with pytest.raises(ConfigurationError, match="format='onnx'"):
        export_onnx(model, tmp_path / "m.onnx", format="mlagents")


# ---------------------------------------------------------------------- learning on a NEXT_STEP env
@pytest.mark.learning
def test_ppo_learns_cartpole_vector_env(tmp_path):
    model = PPO(env=lambda **kw: CartPoleVectorEnv(num_envs=8, **kw), num_envs=8, n_steps=64, batch_size=128,
                n_epochs=10, learning_rate=1e-3, total_steps=30_720, steps_per_epoch=10_240, eval_episodes=10,
                seed=0)
    fit(model, tmp_path)
    assert model.last_evaluation.returns.mean() > 150
