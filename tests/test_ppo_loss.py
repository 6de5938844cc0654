"""PPO's clipped surrogate on known ratios."""

import math

import pytest
import torch

from rl_lightning.algorithms.ppo import clipped_surrogate_loss


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected_objective"),
    [
        (1.5, 1.0, 1.2),    # positive advantage: gains above 1 + eps are clipped
        (0.5, 1.0, 0.5),    # positive advantage, ratio below 1 - eps: unclipped (pessimistic min)
        (0.5, -1.0, -0.8),  # negative advantage: losses below 1 - eps are clipped
        (1.5, -1.0, -1.5),  # negative advantage, ratio above 1 + eps: unclipped
        (1.1, 2.0, 2.2),    # inside the trust region: the plain ratio * advantage
    ],
)
def test_clipped_surrogate_on_known_ratios(ratio, advantage, expected_objective):
    old = torch.tensor([0.0])
    new = torch.tensor([math.log(ratio)])
    loss, r = clipped_surrogate_loss(new, old, torch.tensor([advantage]), clip_range=0.2)
    assert r.item() == pytest.approx(ratio)
    assert loss.item() == pytest.approx(-expected_objective)


def test_clipped_surrogate_has_no_gradient_where_clipped():
    new = torch.tensor([math.log(1.5), math.log(1.1)], requires_grad=True)
    loss, _ = clipped_surrogate_loss(new, torch.zeros(2), torch.tensor([1.0, 1.0]), clip_range=0.2)
    loss.backward()
    assert new.grad[0].item() == 0.0
    assert new.grad[1].item() == pytest.approx(-1.1 / 2)
