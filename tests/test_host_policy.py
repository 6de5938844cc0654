"""The NumPy mirror that CPU rollouts act through: the same policy as the torch module, sampled correctly."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_lightning import A2C
from rl_lightning.networks.acting import TorchActor, TorchQValues, q_values_of
from rl_lightning.networks.actor_critic import ActorCritic
from rl_lightning.networks.host import HostActorCritic

VECTOR = gym.spaces.Box(-1, 1, (4,))


def sharp_policy(shared_trunk: bool = False, activation: str = "tanh", n: int = 5) -> ActorCritic:
    torch.manual_seed(0)
    policy = ActorCritic(VECTOR, gym.spaces.Discrete(n), [16, 8], activation, shared_trunk)
    with torch.no_grad():
        policy.policy_head.weight.mul_(100)  # far from uniform, so a wrong log-prob shows
    return policy


@pytest.mark.parametrize("shared_trunk, activation", [(False, "tanh"), (True, "relu")])
@pytest.mark.parametrize("masked", [False, True])
@torch.no_grad()
def test_mirror_gives_the_modules_log_probs_values_and_modes(shared_trunk, activation, masked):
    policy = sharp_policy(shared_trunk, activation)
    host = policy.host()
    assert host is not None
    obs = torch.randn(64, 4)
    mask = torch.rand(64, 5) > 0.4 if masked else None
    if mask is not None:
        mask[:, 0] = True
    np_mask = None if mask is None else mask.numpy()
    dist, values = policy(obs, mask)
    for deterministic in (False, True):
        actions, log_probs, host_values = host.act(obs.numpy(), np_mask, deterministic)
        actions_t = torch.as_tensor(actions)
        assert np.allclose(log_probs, dist.log_prob(actions_t).numpy(), atol=1e-5)
        assert np.allclose(host_values, values.numpy(), atol=1e-6)
        if mask is not None:
            assert mask.gather(-1, actions_t.unsqueeze(-1)).all()
    assert torch.equal(torch.as_tensor(host.act(obs.numpy(), np_mask, deterministic=True)[0]), dist.mode)


@torch.no_grad()
def test_mirror_samples_the_policys_probabilities_and_never_a_forbidden_action():
    torch.manual_seed(1)
    policy = ActorCritic(VECTOR, gym.spaces.Discrete(4), [8])
    with torch.no_grad():
        policy.policy_head.weight.normal_(0, 1)  # clearly different probabilities
    obs = torch.randn(1, 4).repeat(40_000, 1)
    mask = torch.tensor([[True, True, False, True]]).repeat(40_000, 1)
    probs = policy(obs[:1], mask[:1])[0].probs[0].numpy()
    actions, _, _ = policy.host().act(obs.numpy(), mask.numpy())
    freq = np.bincount(actions, minlength=4) / len(actions)
    assert freq[2] == 0
    sigma = np.sqrt(probs * (1 - probs) / len(actions))
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1e-9), (freq, probs)


@torch.no_grad()
def test_mirror_reads_the_current_weights_and_only_exists_where_it_is_exact():
    policy = sharp_policy()
    host = policy.host()
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    before = host.act(obs, deterministic=True)[2].copy()
    for p in policy.parameters():
        p.add_(0.1)  # in place, as the optimizers step
    after = host.act(obs, deterministic=True)[2]
    assert not np.allclose(before, after)
    assert np.allclose(after, policy.value(torch.as_tensor(obs)).numpy(), atol=1e-6)

    assert ActorCritic(VECTOR, gym.spaces.Box(-1, 1, (2,))).host() is None  # Gaussian policies
    assert ActorCritic(VECTOR, gym.spaces.MultiDiscrete([2, 3])).host() is None
    assert ActorCritic(VECTOR, gym.spaces.Discrete(2), [8], "gelu").host() is None
    assert ActorCritic(gym.spaces.Box(0, 255, (36, 36, 3), np.uint8), gym.spaces.Discrete(2)).host() is None
    assert ActorCritic(gym.spaces.Box(-1, 1, (2, 3)), gym.spaces.Discrete(2)).host() is None  # flattened input
    assert ActorCritic(VECTOR, gym.spaces.Discrete(2)).double().host() is None


@torch.no_grad()
def test_rollout_collected_through_the_mirror_stores_the_policys_log_probs_and_values():
    model = A2C(env="CartPole-v1", num_envs=3, n_steps=16, hidden_sizes=[16], seed=4)
    model.setup("fit")
    assert isinstance(model.policy.rollout_actor(model.obs_to_tensor), HostActorCritic)
    batch = model.collect_round()
    dist, values = model.policy(batch["obs"])
    assert torch.allclose(batch["log_probs"], dist.log_prob(batch["actions"]), atol=1e-5)
    assert torch.allclose(batch["values"], values, atol=1e-6)
    assert batch["actions"].dtype == torch.long and set(batch["actions"].tolist()) == {0, 1}
    model.close_envs()


@torch.no_grad()
def test_policies_without_an_exact_mirror_act_through_torch_behind_the_same_numpy_boundary():
    torch.manual_seed(0)
    policy = ActorCritic(VECTOR, gym.spaces.MultiDiscrete([2, 3]), [8])
    actor = policy.rollout_actor(lambda obs: torch.as_tensor(obs, dtype=torch.float32))
    assert isinstance(actor, TorchActor)
    obs = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    mask = np.ones((6, 5), bool)
    mask[:, 1] = False  # branch 0 may only take action 0
    actions, log_probs, values = actor.act(obs, mask)
    assert all(isinstance(a, np.ndarray) for a in (actions, log_probs, values))
    assert actions.shape == (6, 2) and (actions[:, 0] == 0).all()
    dist, expected_values = policy(torch.as_tensor(obs), torch.as_tensor(mask))
    assert np.allclose(log_probs, dist.log_prob(torch.as_tensor(actions)).numpy())
    assert np.array_equal(values, expected_values.numpy())


def test_dqn_acts_alike_with_and_without_its_mirror(tmp_path, monkeypatch):
    import lightning as L

    from rl_lightning import DQN
    from rl_lightning.networks.host import HostMLP

    runs = []
    for mirror in (True, False):
        if not mirror:
            monkeypatch.setattr(HostMLP, "of", classmethod(lambda cls, *modules: None))
        model = DQN(env="CartPole-v1", num_envs=2, hidden_sizes=[32], total_steps=600, steps_per_epoch=600,
                    learning_starts=100, train_freq=20, gradient_steps=2, batch_size=16, exploration_fraction=0.5,
                    eval_episodes=0, seed=5)
        trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(model)
        assert isinstance(q_values_of(model.q_net, model.obs_to_tensor), TorchQValues) != mirror
        runs.append(model)
    with_mirror, without = runs
    # The same actions from the same draws (epsilon-greedy with learned Q-values), hence the same weights.
    stored = [m.buffer.state_dict()["storage"]["actions"] for m in runs]
    assert len(stored[0]) == 600 and torch.equal(*stored)
    for (name, a), b in zip(with_mirror.state_dict().items(), without.state_dict().values()):
        assert torch.equal(a, b), name
