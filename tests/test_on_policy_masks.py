"""PPO and A2C with action masks (Discrete and MultiDiscrete) and with Dict observations."""

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from toy_envs import GoalImageEnv, MaskedEnv, ShiftingMaskEnv

from rl_lightning import A2C, PPO
from rl_lightning.networks.actor_critic import ActorCritic


def quiet_trainer(tmp_path):
    return L.Trainer(max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     default_root_dir=tmp_path)


def small(algo, env, **kwargs):
    """A PPO or A2C with rollouts of 2 x 16 steps, evaluated on 4 episodes after each 128-step epoch."""
    settings = {"env": env, "num_envs": 2, "n_steps": 16, "total_steps": 256, "steps_per_epoch": 128,
                "eval_episodes": 4, "eval_num_envs": 2, "seed": 1}
    if algo is PPO:
        settings.update(batch_size=16, n_epochs=2)
    return algo(**{**settings, **kwargs})


@torch.no_grad()
def test_masked_policy_gives_forbidden_actions_zero_probability_and_finite_log_probs():
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(4))
    policy.policy_head.bias[0] = 30.0  # unmasked, action 0 would be taken nearly always
    policy.policy_head.bias[1] = 10.0  # and action 1 is the next most likely
    obs = torch.randn(3, 3)
    mask = torch.tensor([[False, True, True, False], [False, False, True, False], [True, True, True, True]])
    dist, _ = policy(obs, mask)
    assert (dist.probs[~mask] == 0).all() and (dist.probs[mask] > 0).all()
    assert torch.isfinite(dist.entropy()).all()
    assert dist.entropy()[1] == 0  # one allowed action: no uncertainty left
    assert torch.isfinite(dist.log_prob(torch.tensor([1, 2, 0]))).all()
    assert dist.log_prob(torch.tensor([1, 2, 0]))[1] == 0
    samples = dist.sample((5000,))
    assert mask.gather(1, samples.T).all()
    assert mask.gather(1, dist.mode.unsqueeze(1)).all()
    assert (policy.predict(obs, deterministic=True, action_mask=mask) == torch.tensor([1, 2, 0])).all()
    assert (policy.predict(obs[:1], deterministic=True) == 0).all()  # the mask, not the weights, ruled above

    # A row that forbids everything stays a distribution (uniform) instead of NaN.
    dist, _ = policy(obs[:1], torch.zeros(1, 4, dtype=torch.bool))
    assert torch.isfinite(dist.probs).all() and torch.isfinite(dist.entropy()).all()


def test_masked_policy_gradients_stay_finite():
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([3, 2]))
    mask = torch.tensor([[True, False, False, False, True], [False, True, True, True, True]])
    dist, _ = policy(torch.randn(2, 3), mask)
    (dist.log_prob(torch.tensor([[0, 1], [2, 0]])).sum() + dist.entropy().sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.actor_parameters())


@torch.no_grad()
def test_multidiscrete_masks_apply_per_branch():
    torch.manual_seed(0)
    policy = ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([3, 2]))
    # Columns 0-2 mask the first branch, 3-4 the second.
    mask = torch.tensor([[True, False, False, False, True], [False, True, True, True, True]])
    dist, _ = policy(torch.randn(2, 3), mask)
    first, second = dist.branches
    assert first.probs[0].tolist()[1:] == [0, 0] and first.probs[1, 0] == 0 and (first.probs[1, 1:] > 0).all()
    assert second.probs[0, 0] == 0 and (second.probs[1] > 0).all()
    assert dist.entropy()[0] == 0 and torch.isfinite(dist.entropy()).all()
    samples = dist.sample((5000,))  # (draws, rows, branches)
    assert (samples[:, 0] == torch.tensor([0, 1])).all()
    assert set(samples[:, 1, 0].unique().tolist()) == {1, 2} and set(samples[:, 1, 1].unique().tolist()) == {0, 1}
    assert torch.isfinite(dist.log_prob(samples)).all()


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_training_never_takes_a_masked_action_and_updates_under_the_mask(tmp_path, algo):
    # MaskedEnv asserts on any action but 2: in collection and in the evaluation after each epoch.
    model = small(algo, MaskedEnv)
    trainer = quiet_trainer(tmp_path)
    trainer.fit(model)
    assert model.env_steps == 256 and len(model.last_evaluation.returns) == 4
    assert model.rollout.action_masks.reshape(-1, 4).tolist() == [[False, False, True, False]] * 32
    # Under the mask the only allowed action is certain: log-prob 0 when collected and when updated.
    # Were the update to score actions without the stored masks, entropy and the PPO ratio would move off it.
    assert (model.rollout.log_probs == 0).all()
    assert trainer.callback_metrics["model/entropy"] == 0
    if algo is PPO:
        assert trainer.callback_metrics["model/approx_kl"] == 0
        assert trainer.callback_metrics["model/clip_fraction"] == 0


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_multidiscrete_masks_that_change_every_step_and_at_autoreset_are_followed(tmp_path, algo):
    # ShiftingMaskEnv asserts unless each branch takes the one action its current mask allows.
    model = small(algo, ShiftingMaskEnv)
    trainer = quiet_trainer(tmp_path)
    trainer.fit(model)
    assert model.env_steps == 256 and model.episodes > 0
    assert trainer.callback_metrics["model/entropy"] == 0


@pytest.mark.parametrize("algo, env", [(PPO, MaskedEnv), (A2C, ShiftingMaskEnv)])
def test_evaluation_and_act_never_take_a_masked_action(algo, env):
    model = small(algo, env, eval_episodes=8)
    model.setup("validate")
    with torch.no_grad():
        model.policy.policy_head.bias[0] = 30.0  # unmasked, action 0 would win
    for deterministic in (True, False):
        result = model.evaluate(deterministic=deterministic)  # the env asserts on a masked action
        assert len(result.returns) == 8
        assert (result.lengths == env().truncate_at).all()  # every episode ran to its time limit
    if env is MaskedEnv:
        obs = np.zeros((3, 1), dtype=np.float32)
        mask = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.int8)
        assert model.act(obs, action_mask=mask).tolist() == [2, 1, 0]
        assert model.act(obs[0], action_mask=mask[1]) == 1
        assert model.act(obs[0]) == 0


def test_ppo_trains_on_dict_observations_and_acts_on_one_or_a_batch(tmp_path):
    # GoalImageEnv: a uint8 image with a float goal vector; episodes truncate, so final Dict observations are valued.
    model = small(PPO, GoalImageEnv, steps_per_epoch=256, eval_episodes=2)
    initial = small(PPO, GoalImageEnv)
    initial.setup("fit")
    quiet_trainer(tmp_path).fit(model)
    assert model.env_steps == 256 and model.episodes > 0
    obs_store = model.rollout.obs
    # Env-side data is kept on the host in NumPy until the rollout is complete.
    assert obs_store["image"].dtype == np.uint8 and obs_store["image"].shape == (16, 2, 36, 40, 3)
    assert obs_store["goal"].dtype == np.float32 and obs_store["goal"].shape == (16, 2, 2)
    assert model.rollout.action_masks is None
    for name, body in (("image", "actor_body.encoders.image"), ("goal", "actor_body.encoders.goal")):
        trained = dict(model.policy.named_parameters())
        before = dict(initial.policy.named_parameters())
        assert any(not torch.equal(trained[k], before[k]) for k in trained if k.startswith(body)), name

    env = GoalImageEnv()
    single, _ = env.reset(seed=0)
    batch = {k: np.stack([env.step(0)[0][k] for _ in range(3)]) for k in single}
    actions = model.act(batch)
    assert actions.shape == (3,) and all(env.action_space.contains(int(a)) for a in actions)
    one = model.act({k: v[1] for k, v in batch.items()})
    assert np.ndim(one) == 0 and one == actions[1]
    assert env.action_space.contains(int(model.act(single, deterministic=False)))


@torch.no_grad()
def test_envs_without_masks_store_and_use_none():
    model = A2C(env="CartPole-v1", num_envs=2, n_steps=4)
    model.setup("fit")
    batch = model.collect_round()
    assert model._action_mask is None and model.rollout.action_masks is None
    assert "action_mask" not in batch and batch["obs"].dtype == torch.float32
