"""GAE and rollout bookkeeping against hand-computed values."""

import pytest
import torch

from rl_lightning.data.rollout import RolloutBuffer, compute_gae


def test_gae_matches_hand_computed_example_with_termination_and_truncation():
    # One env, five steps: an episode terminates at t=1, the next is truncated at t=3
    # (time limit: its final observation is worth 10), a third runs on past t=4.
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [2.0], [0.0], [1.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [2.0], [4.0], [1.0]])
    next_values = torch.tensor([[1.0], [99.0], [4.0], [10.0], [2.0]])  # 99: after a termination, must be ignored
    terminations = torch.tensor([[False], [True], [False], [False], [False]])
    episode_ends = torch.tensor([[False], [True], [False], [True], [False]])

    adv, ret = compute_gae(rewards, values, next_values, terminations, episode_ends, gamma, lam)

    d0 = 1.0 + 0.9 * 1.0 - 0.5    # 1.4
    d1 = 2.0 - 1.0                # terminal: no future -> 1.0
    d2 = 0.0 + 0.9 * 4.0 - 2.0    # 1.6
    d3 = 1.0 + 0.9 * 10.0 - 4.0   # truncated: bootstrap from the final observation -> 6.0
    d4 = 3.0 + 0.9 * 2.0 - 1.0    # 3.8
    a4 = d4
    a3 = d3                       # the episode ended at t=3: nothing flows back from t=4
    a2 = d2 + 0.45 * a3           # 4.3
    a1 = d1                       # ended at t=1
    a0 = d0 + 0.45 * a1           # 1.85
    expected = torch.tensor([[a0], [a1], [a2], [a3], [a4]])
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, expected + values)


def test_gae_lambda_one_gives_discounted_returns_minus_values():
    rewards = torch.ones(4, 2)
    values = torch.zeros(4, 2)
    next_values = torch.zeros(4, 2)
    no = torch.zeros(4, 2, dtype=torch.bool)
    adv, _ = compute_gae(rewards, values, next_values, no, no, gamma=0.5, gae_lambda=1.0)
    # Monte-Carlo: 1 + .5 + .25 + .125 from t=0, and so on.
    assert torch.allclose(adv[:, 0], torch.tensor([1.875, 1.75, 1.5, 1.0]))


def _filled_buffer(truncate: bool) -> RolloutBuffer:
    buf = RolloutBuffer(n_steps=2, num_envs=1, obs_shape=(1,), action_shape=(), action_dtype=torch.long)
    ends = torch.tensor([True])
    for t, end in enumerate([ends, torch.tensor([False])]):
        buf.add(t, torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), torch.zeros(1), torch.tensor([1.0]),
                torch.tensor([0.0]), terminations=end & (not truncate), episode_ends=end)
    buf.final_values[0] = 5.0  # V(final observation of the episode that ended at t=0)
    return buf


@pytest.mark.parametrize("truncate", [True, False])
def test_truncated_episode_bootstraps_from_final_obs_and_termination_does_not(truncate):
    batch = _filled_buffer(truncate).finish(last_values=torch.tensor([7.0]), gamma=0.5, gae_lambda=1.0)
    # t=0 ended the episode: truncation bootstraps 0.5 * V(final obs) = 2.5, termination nothing;
    # never the value of the next episode's first observation (values[1] = 1).
    expected_t0 = (0.5 * 5.0 if truncate else 0.0) - 1.0
    assert batch["advantages"][0].item() == pytest.approx(expected_t0)
    assert batch["advantages"][1].item() == pytest.approx(0.5 * 7.0 - 1.0)
    assert batch["returns"][0].item() == pytest.approx(expected_t0 + 1.0)
