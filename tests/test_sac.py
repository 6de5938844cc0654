"""SAC: the squashed Gaussian's log-density, the soft Bellman target, the temperature's update, settings, learning."""

import math
from pathlib import Path

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch

from rl_lightning import SAC, ConfigurationError
from rl_lightning.algorithms.sac import parse_ent_coef, soft_bellman_target
from rl_lightning.cli import RLLightningCLI
from rl_lightning.networks.squashed import SquashedGaussianActor, squashed_log_prob

ROOT = Path(__file__).resolve().parents[1]


def normal_log_pdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("u", [-12.0, -3.0, -0.4, 0.0, 0.7, 2.5, 15.0])
def test_squashed_log_prob_is_the_change_of_variables_of_tanh(u):
    # a = tanh(u) has density N(u; mu, sigma) / |da/du| = N(u; mu, sigma) / (1 - tanh(u)^2), and
    # 1 - tanh(u)^2 = 1 / cosh(u)^2 (written so, it does not round to 0 for large |u|).
    mean, std = 0.3, 1.7
    log_det = -2 * math.log(math.cosh(u))
    expected = normal_log_pdf(u, mean, std) - log_det
    got = squashed_log_prob(torch.tensor([[u]], dtype=torch.float64), torch.tensor([[mean]], dtype=torch.float64),
                            torch.tensor([[math.log(std)]], dtype=torch.float64))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_squashed_density_integrates_to_one_and_sums_over_dimensions():
    # Over a in (-1, 1): integrate exp(log pi(a)) da = exp(log pi(tanh(u))) (1 - tanh(u)^2) du on a fine u grid.
    u = torch.linspace(-25, 25, 200_001, dtype=torch.float64)
    mean, log_std = torch.full_like(u, -0.8), torch.full_like(u, math.log(0.6))
    density = squashed_log_prob(u[:, None], mean[:, None], log_std[:, None]).exp()
    da = 1 - torch.tanh(u) ** 2
    assert torch.trapezoid(density * da, u).item() == pytest.approx(1.0, abs=1e-6)
    # Two independent dimensions: the log-densities add.
    pair = squashed_log_prob(torch.tensor([[0.5, -2.0]]), torch.tensor([[0.1, 0.2]]), torch.tensor([[-0.3, 0.4]]))
    one = squashed_log_prob(torch.tensor([[0.5]]), torch.tensor([[0.1]]), torch.tensor([[-0.3]]))
    two = squashed_log_prob(torch.tensor([[-2.0]]), torch.tensor([[0.2]]), torch.tensor([[0.4]]))
    assert pair.item() == pytest.approx((one + two).item(), rel=1e-6)


def test_the_actor_samples_in_bounds_with_their_own_log_prob_and_a_gradient():
    torch.manual_seed(0)
    space = gym.spaces.Box(-1, 1, (3,), np.float32)
    actor = SquashedGaussianActor(space, 2, [16], "relu", 32, "auto")
    obs = torch.randn(64, 3)
    action, log_prob = actor.sample(obs)
    assert action.shape == (64, 2) and log_prob.shape == (64,) and (action.abs() < 1).all()
    mean, log_std = actor(obs)
    u = torch.atanh(action.double())  # the sample's pre-tanh value
    np.testing.assert_allclose(log_prob.double().detach(), squashed_log_prob(u, mean.double(), log_std.double())
                               .detach(), rtol=1e-4, atol=1e-4)
    # Reparameterised: the sample carries gradients to the actor's weights.
    action.sum().backward()
    assert actor.mean.weight.grad.abs().sum() > 0 and actor.log_std.weight.grad.abs().sum() > 0
    assert torch.equal(actor.deterministic(obs), torch.tanh(mean))


def test_soft_bellman_target_takes_the_smaller_target_q_minus_alpha_log_pi():
    rewards = torch.tensor([1.0, -2.0, 0.5])
    terminated = torch.tensor([False, True, False])
    next_qs = torch.tensor([[10.0, 3.0, -1.0],    # target critic 1
                            [12.0, 5.0, -4.0]])   # target critic 2
    next_log_prob = torch.tensor([-1.0, 7.0, 2.0])
    alpha = torch.tensor([0.5])
    target = soft_bellman_target(rewards, terminated, 0.9, next_qs, next_log_prob, alpha)
    # Row 0: 1 + 0.9 (min(10, 12) - 0.5 * -1); row 1 terminated: the reward only; row 2: 0.5 + 0.9 (-4 - 0.5 * 2).
    expected = torch.tensor([1 + 0.9 * (10 + 0.5), -2.0, 0.5 + 0.9 * (-4 - 1.0)])
    torch.testing.assert_close(target, expected)


def built(**kwargs):
    model = SAC(env="Pendulum-v1", batch_size=16, learning_starts=32, buffer_size=100, hidden_sizes=[16],
                eval_episodes=0, seed=0, **kwargs)
    model.setup("fit")
    return model


@pytest.mark.parametrize("log_prob", [2.0, 0.5, -3.0])
def test_temperature_rises_below_the_target_entropy_and_falls_above(log_prob):
    # Pendulum: one action dimension, target entropy -1. log pi = 2: entropy estimate -2, below the target, so
    # alpha must rise (more weight on entropy); log pi = 0.5 or -3: entropy -0.5 or 3, above it, so alpha falls.
    model = built(ent_coef="auto_0.2")
    assert model.target_entropy == -1.0 and model.ent_coef().item() == pytest.approx(0.2)
    loss = model.temperature_loss(torch.full((8,), log_prob))
    loss.backward()
    # d loss / d log(alpha) = -(log pi + target entropy).
    assert model.log_ent_coef.grad.item() == pytest.approx(-(log_prob - 1.0))
    torch.optim.Adam([model.log_ent_coef], lr=0.1).step()
    rises = -log_prob < -1.0
    assert (model.ent_coef().item() > 0.2) == rises and model.ent_coef().item() != pytest.approx(0.2)


def test_deterministic_action_is_tanh_of_the_mean_scaled_to_the_bounds():
    model = built()
    obs = torch.randn(5, 3)
    expected = 2.0 * torch.tanh(model.actor(obs)[0])  # Pendulum: [-2, 2]
    torch.testing.assert_close(model.predict_actions(obs, deterministic=True), expected)
    sampled = model.predict_actions(obs, deterministic=False)
    assert (sampled.abs() <= 2).all() and not torch.equal(sampled, expected)


def fit(**kwargs):
    model = SAC(env="Pendulum-v1", batch_size=16, learning_starts=32, buffer_size=200, hidden_sizes=[16],
                eval_episodes=0, seed=0, total_steps=96, steps_per_epoch=96, **kwargs)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model)
    return model, trainer


def test_a_fixed_coefficient_is_not_learned_and_targets_follow_their_interval():
    model, trainer = fit(ent_coef=0.05, target_update_interval=100)
    assert len(trainer.optimizers) == 2 and model.learning_rates().keys() == {"lr/actor", "lr/critic"}
    assert model.ent_coef().item() == pytest.approx(0.05)
    assert model.gradient_updates == 96 - 32 + 1  # one per env step from learning_starts on
    # No target update in 65 < 100 gradient steps: the targets are still the initial critics.
    initial = SAC(env="Pendulum-v1", batch_size=16, learning_starts=32, buffer_size=200, hidden_sizes=[16],
                  eval_episodes=0, seed=0)
    initial.setup("fit")
    for name, value in initial.critic_target.state_dict().items():
        assert torch.equal(value, model.critic_target.state_dict()[name]), name
        assert not torch.equal(value, model.critic.state_dict()[name]), name
    learned, trainer = fit(ent_coef="auto", target_update_interval=1)
    assert len(trainer.optimizers) == 3 and "lr/ent_coef" in learned.learning_rates()
    assert learned.ent_coef().item() != 1.0


def test_bad_sac_settings_are_refused():
    for bad in ("auto_0", "auto_x", "auto_-1", "manual", "1e12"):
        with pytest.raises(ConfigurationError, match=r"ent_coef=.*'auto'"):
            SAC(ent_coef=bad, env="Pendulum-v1")
    for bad in (-0.1, 0, float("inf"), 1e12):  # a number: its declared range (rl_lightning.setting_ranges)
        with pytest.raises(ConfigurationError, match=r"ent_coef=.* must (lie in|be a finite number in) \(0, 10000\]"):
            SAC(ent_coef=bad, env="Pendulum-v1")
    assert parse_ent_coef("auto") == (True, 1.0) and parse_ent_coef("auto_0.1") == (True, 0.1)
    assert parse_ent_coef(0.2) == (False, 0.2) and parse_ent_coef("0.2") == (False, 0.2)
    with pytest.raises(ConfigurationError, match=r"tau=0 must lie in \(0, 1\]"):
        SAC(tau=0, env="Pendulum-v1")
    with pytest.raises(ConfigurationError, match="target_update_interval=0 must be a positive integer"):
        SAC(target_update_interval=0, env="Pendulum-v1")
    with pytest.raises(ConfigurationError, match="ent_coef_learning_rate=0 must be > 0"):
        SAC(ent_coef_learning_rate=0, env="Pendulum-v1")
    with pytest.raises(ConfigurationError, match="target_entropy=nan must be a finite number"):
        SAC(target_entropy=float("nan"), env="Pendulum-v1")
    with pytest.raises(ConfigurationError, match=r"SAC needs a 1-D Box \(continuous\) action space.*Discrete"):
        SAC(env="CartPole-v1", batch_size=32, learning_starts=100).setup("fit")


@pytest.mark.learning
def test_sac_pendulum_config_learns_on_a_short_budget(tmp_path):
    # The zoo config, made short: 4k steps, a 64-64 net and batches of 128 (about 35 s on 2 CPU cores; seed 0
    # reached -199 there).
    cli = RLLightningCLI(args=["fit", "--config", str(ROOT / "configs" / "sac_pendulum.yaml"),
                               "--model.init_args.total_steps=4000", "--model.init_args.steps_per_epoch=4000",
                               "--model.init_args.hidden_sizes=[64,64]", "--model.init_args.batch_size=128",
                               "--model.init_args.seed=0", f"--trainer.logger.init_args.save_dir={tmp_path}",
                               "--trainer.enable_progress_bar=false"])
    # A random policy scores about -1200 on Pendulum.
    assert cli.model.last_evaluation.return_mean >= -400
