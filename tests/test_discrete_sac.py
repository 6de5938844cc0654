"""Discrete SAC: the masked policy's terms, the exact soft value, the three losses' directions, masks, learning."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from rl_lightning import SAC, ConfigurationError, DiscreteSAC
from rl_lightning.algorithms.discrete_sac import policy_terms, soft_state_values
from rl_lightning.cli import RLLightningCLI
from toy_envs import MaskedEnv

ROOT = Path(__file__).resolve().parents[1]


def test_masked_actions_get_probability_zero_and_finite_terms():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 8.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False, False, True, False]])
    probs, log_probs = policy_terms(logits, mask)
    # Row 0: a softmax over actions 0 and 2 alone; row 1: action 2 certain.
    expected = torch.softmax(torch.tensor([1.0, 3.0]), 0)
    torch.testing.assert_close(probs[0], torch.stack([expected[0], torch.tensor(0.0), expected[1], torch.tensor(0.0)]))
    torch.testing.assert_close(probs[1], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    entropy_terms = probs * log_probs
    assert torch.isfinite(log_probs).all() and torch.isfinite(entropy_terms).all()
    assert entropy_terms[1].sum().item() == 0.0  # one allowed action: no entropy
    entropy_terms.sum().backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(policy_terms(logits, None)[0], torch.softmax(logits, -1))


def test_soft_state_value_is_the_policy_weighted_smaller_q_minus_alpha_log_pi():
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    log_probs = torch.log(torch.tensor([[0.25, 0.75], [1.0, 1e-30]]))
    qs = torch.tensor([[[1.0, 4.0], [2.0, -3.0]],     # critic 1
                       [[3.0, 2.0], [0.0, 9.0]]])     # critic 2
    alpha = torch.tensor([0.5])
    values = soft_state_values(probs, log_probs, qs, alpha)
    # Row 0: 0.25 (min(1, 3) - 0.5 log 0.25) + 0.75 (min(4, 2) - 0.5 log 0.75); row 1: min(2, 0) - 0.5 log 1.
    row0 = 0.25 * (1 - 0.5 * np.log(0.25)) + 0.75 * (2 - 0.5 * np.log(0.75))
    torch.testing.assert_close(values, torch.tensor([row0, 0.0], dtype=torch.float32))


def built(**kwargs):
    model = DiscreteSAC(**{**dict(env="CartPole-v1", batch_size=16, learning_starts=32, buffer_size=100,
                                  hidden_sizes=[16], eval_episodes=0, seed=0), **kwargs})
    model.setup("fit")
    return model


def test_critic_target_bootstraps_from_the_exact_soft_value_under_the_next_mask():
    model = built(env=MaskedEnv, gamma=0.9)
    obs = torch.tensor([[1.0], [2.0], [3.0]])
    next_mask = torch.tensor([[False, False, True, False], [True, True, True, True], [True, False, False, True]])
    mb = {"next_obs": obs, "next_action_mask": next_mask, "rewards": torch.tensor([1.0, 2.0, 3.0]),
          "terminated": torch.tensor([False, False, True])}
    alpha = torch.tensor([0.3])
    target = model.critic_target_values(mb, alpha)
    with torch.no_grad():
        probs = torch.softmax(model.actor(obs).masked_fill(~next_mask, -torch.inf), -1)
        min_q = torch.minimum(model.critic_target[0](obs), model.critic_target[1](obs))
        expected = []
        for i in range(3):
            allowed = next_mask[i]
            p = probs[i][allowed]
            value = (p * (min_q[i][allowed] - 0.3 * torch.log(p))).sum()
            expected.append(mb["rewards"][i] + (0.0 if i == 2 else 0.9 * value))
    torch.testing.assert_close(target, torch.stack(expected))
    # Row 0 allows one action: its value is that action's smaller Q, with no entropy bonus.
    assert target[0].item() == pytest.approx(1.0 + 0.9 * min_q[0, 2].item(), rel=1e-5)


def test_the_actor_moves_towards_the_better_allowed_action_and_alpha_towards_the_target_entropy():
    model = built(env=MaskedEnv, ent_coef="auto_0.01")
    obs = torch.zeros(8, 1)
    mask = torch.tensor([[True, True, False, False]]).expand(8, 4)
    with torch.no_grad():  # critics that prefer action 1 among the allowed; action 3 (masked) would be best
        for critic in model.critic:
            critic[-1].weight.zero_()
            critic[-1].bias.copy_(torch.tensor([0.0, 1.0, -1.0, 5.0]))
    mb = {"obs": obs, "action_mask": mask}
    (probs, log_probs), neg_entropy = model.policy_outputs(mb)
    before = probs[0].detach().clone()
    loss = model.actor_loss(mb, (probs, log_probs), neg_entropy, model.ent_coef())
    optimizer = torch.optim.SGD(model.actor.parameters(), lr=0.5)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = policy_terms(model.actor(obs), mask)[0][0].detach()
    assert after[1] > before[1] and after[2] == after[3] == 0.0
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.critic.parameters())
    # The temperature: with two allowed actions the entropy is at most log 2 < the target 0.98 log 4, so alpha
    # must rise (its gradient in log alpha is -(E[log pi] + target)).
    assert model.target_entropy == pytest.approx(0.98 * np.log(4))
    temperature_loss = model.temperature_loss(neg_entropy)
    temperature_loss.backward()
    assert model.log_ent_coef.grad.item() == pytest.approx(-(neg_entropy.mean().item() + model.target_entropy),
                                                           rel=1e-5)
    assert model.log_ent_coef.grad.item() < 0


def test_training_keeps_to_masked_actions_and_stores_each_observations_mask(tmp_path):
    # MaskedEnv asserts on any action but 2: random warm-up, the policy's draws and evaluation are all masked.
    model = DiscreteSAC(env=MaskedEnv, num_envs=2, learning_starts=16, batch_size=16, total_steps=128,
                        steps_per_epoch=64, eval_episodes=2, eval_deterministic=False, hidden_sizes=[16], seed=0)
    L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(model)
    assert model.env_steps == 128 and model.gradient_updates > 0
    size = model.buffer.size
    for name in ("action_mask", "next_action_mask"):
        assert model.buffer.storage[name][:size].tolist() == [[False, False, True, False]] * size, name
    assert (model.buffer.storage["actions"][:size] == 2).all()


def test_unmasked_envs_store_no_masks_and_sac_points_discrete_envs_here():
    model = built()
    assert set(model.buffer.storage) == {"obs", "next_obs", "actions", "rewards", "terminated"}
    assert model.target_entropy == pytest.approx(0.98 * np.log(2))
    assert built(target_entropy_scale=0.5).target_entropy == pytest.approx(0.5 * np.log(2))
    assert built(target_entropy=0.1).target_entropy == 0.1
    with pytest.raises(ConfigurationError, match=r"target_entropy_scale=0 must lie in \(0, 1\]"):
        DiscreteSAC(target_entropy_scale=0)
    with pytest.raises(ConfigurationError, match=r"SAC needs a 1-D Box .*; train it with .*DiscreteSAC"):
        SAC(env="CartPole-v1", batch_size=32, learning_starts=100).setup("fit")
    with pytest.raises(ConfigurationError, match=r"DiscreteSAC needs a Discrete action space.*; train it with .*SAC"):
        DiscreteSAC(env="Pendulum-v1", batch_size=32, learning_starts=100).setup("fit")


def test_deterministic_action_is_the_likeliest_allowed_one():
    model = built(env=MaskedEnv)
    obs = torch.randn(6, 1)
    mask = torch.tensor([[True, True, False, True]]).expand(6, 4)
    logits = model.actor(obs).masked_fill(~mask, -torch.inf)
    assert torch.equal(model.predict_actions(obs, deterministic=True, action_mask=mask), logits.argmax(-1))
    draws = torch.stack([model.predict_actions(obs, deterministic=False, action_mask=mask) for _ in range(50)])
    assert not (draws == 2).any() and len(draws.unique()) > 1


@pytest.mark.learning
def test_discrete_sac_learns_cartpole_on_a_short_budget(tmp_path):
    cli = RLLightningCLI(args=["fit", "--config", str(ROOT / "configs" / "discrete_sac_cartpole.yaml"),
                               "--model.init_args.total_steps=10000", "--model.init_args.steps_per_epoch=10000",
                               "--model.init_args.seed=0", f"--trainer.logger.init_args.save_dir={tmp_path}",
                               "--trainer.enable_progress_bar=false"])
    # A random policy lasts about 22 steps.
    assert cli.model.last_evaluation.return_mean >= 150


def test_transitions_between_decisions_keep_the_mask_of_their_deciding_observation():
    # Two rows; row 1 decides only every other step (as a Unity agent with a decision period of 2): its stored
    # transition must carry the mask it had when it decided, not the one of the step that completed it.
    import gymnasium as gym

    from rl_lightning.data.replay import DecisionTransitions, ReplayBuffer

    buffer = ReplayBuffer(10, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3), action_mask_size=3,
                          current_action_masks=True)
    transitions = DecisionTransitions()
    masks = [np.array([[1, 0, 0], [0, 1, 0]], bool), np.array([[0, 0, 1], [1, 1, 1]], bool)]
    next_masks = [masks[1], np.array([[1, 1, 0], [0, 1, 1]], bool)]
    obs = [np.array([[0.0], [0.5]], np.float32), np.array([[0.1], [0.6]], np.float32),
           np.array([[0.2], [0.7]], np.float32)]
    decisions = [np.array([True, True]), np.array([True, False])]
    completes = [np.array([True, False]), np.array([True, True])]
    for t in range(2):
        transitions.store(buffer, decisions[t], obs[t], np.array([0, 1]), np.ones(2, np.float32), obs[t + 1],
                          np.zeros(2, bool), next_masks[t], completes[t], masks[t])
    # Stored: row 0 at step 0, then rows 0 and 1 at step 1 (row 1's transition began at step 0).
    assert buffer.size == 3
    stored_masks = buffer.storage["action_mask"][:3].numpy()
    np.testing.assert_array_equal(stored_masks, [masks[0][0], masks[1][0], masks[0][1]])
    np.testing.assert_array_equal(buffer.storage["next_action_mask"][:3].numpy(),
                                  [next_masks[0][0], next_masks[1][0], next_masks[1][1]])
    np.testing.assert_array_equal(buffer.storage["obs"][:3, 0].numpy(), np.array([0.0, 0.1, 0.5], np.float32))


def test_masks_that_appear_after_the_first_reset_stop_the_run_with_a_clear_error():
    # The buffer's fields are fixed when it is built; a mask it cannot store must not be dropped silently.
    import gymnasium as gym

    from rl_lightning.data.replay import ReplayBuffer
    from rl_lightning.errors import EnvironmentFault

    buffer = ReplayBuffer(10, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3))
    obs = np.zeros((2, 1), np.float32)
    with pytest.raises(EnvironmentFault, match=r"gives action masks .* but gave none at its first reset"):
        buffer.add(obs, np.array([0, 1]), np.ones(2, np.float32), obs, np.zeros(2, bool), np.ones((2, 3), bool))
    buffer.add(obs, np.array([0, 1]), np.ones(2, np.float32), obs, np.zeros(2, bool))
    assert buffer.size == 2
