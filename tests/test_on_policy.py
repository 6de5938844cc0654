"""PPO and A2C modules: collection, budget and epochs, bad input, checkpoints, action spaces."""

import lightning as L
import numpy as np
import pytest
import torch
from toy_envs import CounterEnv, TupleActionEnv

from rl_lightning import A2C, PPO, ConfigurationError


def quiet_trainer(tmp_path, **kwargs):
    kwargs.setdefault("logger", L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"))
    return L.Trainer(max_epochs=-1, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=tmp_path, **kwargs)


@torch.no_grad()
def test_collect_bootstraps_truncation_from_final_obs_and_zeroes_termination():
    # gae_lambda = 0: each advantage is the one-step TD error, so each step can be checked alone.
    model = A2C(env=CounterEnv, env_kwargs={"truncate_at": 3}, n_steps=7, gamma=0.5, gae_lambda=0.0,
                reward_scale=0.1)
    model.setup("fit")
    batch = model.collect_round()
    v = lambda x: model.policy.value(torch.tensor([[float(x)]])).item()  # noqa: E731
    obs = [0, 1, 2, 0, 1, 2, 0]  # the env truncates after 3 steps and resets at once
    for t, o in enumerate(obs):
        next_value = v(3) if o == 2 else v(o + 1)  # at a truncation: V(final obs = 3), not V(reset obs = 0)
        expected = 0.1 + 0.5 * next_value - v(o)
        assert batch["advantages"][t].item() == pytest.approx(expected, abs=1e-6), t
    assert model.env_steps == 7

    model = A2C(env=CounterEnv, env_kwargs={"terminate_at": 3}, n_steps=3, gamma=0.5, gae_lambda=0.0)
    model.setup("fit")
    batch = model.collect_round()
    v = lambda x: model.policy.value(torch.tensor([[float(x)]])).item()  # noqa: E731
    assert batch["advantages"][2].item() == pytest.approx(1.0 - v(2), abs=1e-6)  # terminal: no future value


def test_training_stops_at_total_steps_with_epochs_of_steps_per_epoch(tmp_path):
    # 64 env steps per rollout; epochs of ceil(300 / 64) = 5 rollouts; budget ceil(1000 / 64) = 16 rollouts.
    model = PPO(env="CartPole-v1", num_envs=2, n_steps=32, batch_size=32, n_epochs=1, total_steps=1000,
                steps_per_epoch=300, eval_episodes=2, eval_num_envs=2)
    trainer = quiet_trainer(tmp_path)
    trainer.fit(model)
    assert model.env_steps == 16 * 64
    assert trainer.current_epoch == 4  # epochs of 5, 5, 5 and 1 rollouts
    assert model.last_evaluation is not None and len(model.last_evaluation.returns) == 2
    assert model.envs is None and model.eval_envs is None  # closed at teardown


def test_bad_input_is_rejected_before_training():
    with pytest.raises(ConfigurationError, match="did you mean 'CartPole-v1'"):
        PPO(env="CartPol-v1")
    with pytest.raises(ConfigurationError, match=r"batch_size=256 must be between 1 and the rollout size .* = 128"):
        PPO(num_envs=4, n_steps=32, batch_size=256)
    with pytest.raises(ConfigurationError, match="rounds_per_batch=0 must be a positive integer"):
        A2C(rounds_per_batch=0)
    for budget in (0, -5):
        with pytest.raises(ConfigurationError, match=rf"total_steps={budget} must be a positive integer"):
            A2C(total_steps=budget)
    for algo in (PPO, A2C):
        model = algo(env=TupleActionEnv, batch_size=4, n_steps=4) if algo is PPO else algo(env=TupleActionEnv)
        with pytest.raises(ConfigurationError, match=rf"{algo.__name__} needs a Discrete, MultiDiscrete, 1-D Box \(continuous\) or hybrid .* action space; the env's is Tuple"):
            model.setup("fit")


def test_checkpoint_gives_a_policy_that_acts_without_an_env(tmp_path):
    model = PPO(env="CartPole-v1", num_envs=2, n_steps=16, batch_size=32, total_steps=64, steps_per_epoch=64,
                eval_episodes=1, eval_num_envs=1)
    trainer = quiet_trainer(tmp_path)
    trainer.fit(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    loaded = PPO.load_from_checkpoint(path)
    assert loaded.envs is None and loaded.env_steps == 64
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    batch_actions = loaded.act(obs)
    assert batch_actions.shape == (5,)
    assert loaded.act(obs[0]) == batch_actions[0]
    np.testing.assert_array_equal(batch_actions, model.act(obs))
    with pytest.raises(ConfigurationError, match="holds a PPO model; load it with PPO, not A2C"):
        A2C.load_from_checkpoint(path)


@pytest.mark.parametrize("env", ["Pendulum-v1", "toy_envs:MultiDiscreteEnv"])
def test_ppo_trains_and_acts_on_box_and_multidiscrete_actions(tmp_path, env):
    model = PPO(env=env, num_envs=2, n_steps=32, batch_size=32, n_epochs=2, total_steps=256,
                steps_per_epoch=256, eval_episodes=2, eval_num_envs=2)
    assert not list(model.parameters())  # networks are built lazily from the env's spaces
    trainer = quiet_trainer(tmp_path)
    trainer.fit(model)
    initial = PPO(env=env, num_envs=2, n_steps=32, batch_size=32)
    initial.setup("fit")
    changed = [not torch.equal(a, b) for a, b in zip(model.policy.parameters(), initial.policy.parameters())]
    assert all(changed)  # every parameter (log_std of the Gaussian too) was updated
    space = model.action_space
    actions = model.act(np.stack([model.observation_space.sample() for _ in range(3)]), deterministic=False)
    assert all(space.contains(a.astype(space.dtype)) for a in actions)
    assert model.env_steps == 256


def test_too_few_trainer_epochs_for_the_budget_are_reported(tmp_path):
    model = PPO(env="CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, total_steps=256, steps_per_epoch=64,
                eval_episodes=0)
    trainer = L.Trainer(max_epochs=2, enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False)
    with pytest.warns(UserWarning, match=r"trainer.max_epochs=2 stops training before total_steps=256"):
        trainer.fit(model)
    assert model.env_steps == 128


@pytest.mark.parametrize("shared_trunk", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@torch.no_grad()
def test_act_log_probs_and_values_match_the_distribution_the_update_scores(shared_trunk, masked):
    # act() samples Discrete actions through its own log-softmax; PPO's first-epoch ratio is 1 only if its
    # log-probabilities and values are those of forward()'s distribution.
    import gymnasium as gym

    from rl_lightning.networks.actor_critic import ActorCritic

    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(5), [16], "tanh", shared_trunk)
    with torch.no_grad():
        policy.policy_head.weight.mul_(100)  # far from uniform, so a wrong log-prob shows
    obs = torch.randn(64, 4)
    mask = torch.rand(64, 5) > 0.4 if masked else None
    if mask is not None:
        mask[:, 0] = True
    action, log_prob, value = policy.act(obs, action_mask=mask)
    dist, expected_value = policy(obs, mask)
    assert torch.allclose(log_prob, dist.log_prob(action), atol=1e-5)
    assert torch.equal(value, expected_value)
    if mask is not None:
        assert mask.gather(-1, action.unsqueeze(-1)).all()
    greedy, _, _ = policy.act(obs, deterministic=True, action_mask=mask)
    assert torch.equal(greedy, dist.mode)


class _HookOverride(L.Callback):
    """Overrides a per-update hook, which sends every gradient step through Lightning's own path."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        pass


def test_direct_gradient_steps_equal_lightnings_path(tmp_path):
    # The direct route (plain backward, foreach clipping, the torch optimizer's step) must train exactly as
    # manual_backward + clip_gradients + LightningOptimizer.step do, and count the same global steps.
    results = []
    for callbacks in ([], [_HookOverride()]):
        model = PPO(env=CounterEnv, num_envs=2, n_steps=16, batch_size=8, n_epochs=2, total_steps=128,
                    steps_per_epoch=64, eval_episodes=0, seed=3, max_grad_norm=0.1)
        trainer = quiet_trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=callbacks)
        trainer.fit(model)
        results.append((model._stepper.direct, trainer.global_step, model.state_dict()))
    (direct_a, steps_a, params_a), (direct_b, steps_b, params_b) = results
    assert direct_a and not direct_b
    assert steps_a == steps_b == 128 // 32 * 2 * 4 * 2  # batches x epochs x minibatches x optimizers
    for name in params_a:
        assert torch.allclose(params_a[name], params_b[name], atol=1e-5), name
