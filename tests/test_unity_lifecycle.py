"""Agents as a real Unity build numbers them (one id per agent, or a new id every episode: both regimes, see
conftest.py), spawned and destroyed during a run, listed in any order; through the real player and the real
mlagents_envs.UnityEnvironment."""

import numpy as np
import pytest
import torch
from test_unity_player import PLAYER, free_port, unity, vector_env  # noqa: F401 (fixtures)

from rl_lightning.data.rollout import RolloutBuffer
from rl_lightning.errors import ConfigurationError

CHURN = ("--env", "toy_envs:EchoEnv", "--agents", "4", "--despawn-prob", "0.05", "--spawn-prob", "0.1",
         "--shuffle-agents")


def test_rows_follow_their_agents_through_episode_ends_spawning_destroying_and_shuffled_order(vector_env):  # noqa: F811
    env = vector_env(*CHURN, max_agents=4)
    assert env.num_envs == 4
    obs, info = env.reset()
    rng = np.random.default_rng(0)
    episode_return, episode_length = np.zeros(4), np.zeros(4)
    seen_inactive = seen_spawn = seen_ended = 0
    for _ in range(400):
        actions = rng.integers(0, 5, 4)
        deciding = info["decision"].copy()
        before = obs.copy()
        obs, rewards, terminated, truncated, info = env.step(actions)
        ended = info.get("_final_obs", np.zeros(4, bool))
        for i in range(4):
            if deciding[i]:
                episode_return[i] += actions[i]
                episode_length[i] += 1
            if ended[i]:
                seen_ended += 1
                final = info["final_obs"][i]
                # The agent's last step applied the action this row sent (whatever order Unity listed agents in).
                assert final.tolist() == [before[i][0] + 1, actions[i]]
                assert rewards[i] == actions[i]
                assert info["episode"]["r"][i] == episode_return[i] and info["episode"]["l"][i] == episode_length[i]
                episode_return[i] = episode_length[i] = 0
                if info["active"][i]:
                    assert obs[i].tolist() == [0.0, 0.0]  # the next episode (or a new agent) starts in this row
            elif deciding[i]:
                assert obs[i].tolist() == [before[i][0] + 1, actions[i]] and rewards[i] == actions[i]
            elif info["active"][i]:
                seen_spawn += 1  # an empty row an agent just took: its first observation, nothing earned yet
                assert obs[i].tolist() == [0.0, 0.0] and rewards[i] == 0
            else:
                seen_inactive += 1
                assert rewards[i] == 0 and not info["decision"][i] and obs[i].tolist() == before[i].tolist()
        assert (info["decision"] == info["active"]).all()  # decision period 1: every agent decides every step
    assert seen_inactive > 0 and seen_spawn > 0 and seen_ended > 20


@pytest.mark.one_id_regime_in_quick_suite
def test_more_agents_than_sub_envs_is_an_error_naming_max_agents(vector_env):  # noqa: F811
    with pytest.raises(ConfigurationError, match="max_agents=2: the build started with 3 agents"):
        vector_env("--env", "toy_envs:EchoEnv", "--agents", "3", max_agents=2)
    env = vector_env("--env", "toy_envs:EchoEnv", "--agents", "4", "--start-agents", "2", "--spawn-prob", "1.0")
    assert env.num_envs == 2  # the agents present at the first reset
    env.reset()
    with pytest.raises(ConfigurationError, match="set max_agents to the most agents"):
        env.step(np.zeros(2, dtype=int))
    assert not env.units  # the processes were ended


@pytest.mark.one_id_regime_in_quick_suite
def test_max_agents_leaves_room_for_agents_spawned_later(vector_env):  # noqa: F811
    env = vector_env("--env", "toy_envs:EchoEnv", "--agents", "4", "--start-agents", "1", "--spawn-prob", "1.0",
                     max_agents=4)
    _, info = env.reset()
    assert info["active"].tolist() == [True, False, False, False]
    _, _, _, _, info = env.step(np.zeros(4, dtype=int))
    assert info["active"].all() and info["decision"].all()


# DDPG stores through the same machinery as DQN: its per-episode case runs with --all only (conftest.py).
@pytest.mark.parametrize("algorithm", ["DQN", pytest.param("DDPG", marks=pytest.mark.one_id_regime_in_quick_suite)])
def test_replay_stores_one_transition_per_decision_and_none_for_empty_rows(vector_env, algorithm):  # noqa: F811
    import rl_lightning

    args = list(CHURN) + ["--decision-period", "3"]
    if algorithm == "DDPG":
        args = ["--env", "Pendulum-v1"] + args[2:]
    module = getattr(rl_lightning, algorithm)(env="unity", env_kwargs=dict(
        file_name=PLAYER, additional_args=args, base_port=free_port(), timeout_wait=10, max_agents=4),
        learning_starts=2000, batch_size=32, buffer_size=4000, eval_episodes=0, total_steps=4000)
    module.setup("fit")
    try:
        for _ in range(400):
            module.collect_round()
    finally:
        module.close_envs()
    n = module.buffer.size
    assert 0 < n < 400 * 4 / 2  # about one transition per agent every 3 steps, none for empty rows
    data = module.buffer.gather(torch.arange(n))
    if algorithm == "DQN":
        obs, next_obs, actions = data["obs"].numpy(), data["next_obs"].numpy(), data["actions"].numpy()
        steps = next_obs[:, 0] - obs[:, 0]
        # From a decision to the next decision (or the episode's end), the action repeated in between.
        assert ((steps >= 1) & (steps <= 3)).all()
        assert (next_obs[:, 1] == actions).all()
        assert np.allclose(data["rewards"].numpy(), actions * steps)
    else:
        assert (data["obs"] != data["next_obs"]).any(dim=1).all()  # no stale row stored as a transition


def test_rollout_returns_only_decisions_each_with_the_rewards_until_its_next_decision():
    # Env 0 decides at steps 0, 2, 3; env 1 at step 0 only, its decision still open at the end.
    buf = RolloutBuffer(4, 2, (1,), (), torch.long)
    decisions = [[True, True], [False, False], [True, False], [True, False]]
    rewards = [[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0]]
    for t in range(4):
        buf.add(t, np.full((2, 1), t, np.float32), np.zeros(2, np.int64), np.zeros(2, np.float32),
                np.array([0.5 * t, 100.0], np.float32), np.array(rewards[t], np.float32), np.zeros(2, bool),
                np.zeros(2, bool), decision=np.array(decisions[t]))
    batch = buf.finish(torch.tensor([3.0, 100.0]), gamma=1.0, gae_lambda=1.0, next_decision=np.array([True, False]))
    assert batch["obs"][:, 0].tolist() == [0.0, 2.0, 3.0]  # env 0's decisions; env 1's is carried over
    # Returns with gamma = lambda = 1: the rewards to the end, then V(last obs) = 3.
    assert batch["returns"].tolist() == [1 + 2 + 4 + 8 + 3, 4 + 8 + 3, 8 + 3]
    # The next rollout starts with env 1's open decision, and it gets every reward it earned.
    for t in range(4):
        buf.add(t, np.full((2, 1), 10 + t, np.float32), np.zeros(2, np.int64), np.zeros(2, np.float32),
                np.array([0.0, 7.0], np.float32), np.array([0.0, 1.0], np.float32), np.zeros(2, bool),
                np.array([False, t == 1]), decision=np.array([True, t == 3]))
    batch = buf.finish(torch.zeros(2), gamma=1.0, gae_lambda=1.0, next_decision=np.ones(2, bool))
    carried = (batch["obs"][:, 0] == 0.0).nonzero().flatten().tolist()
    assert len(carried) == 1
    assert batch["returns"][carried[0]].item() == 10 + 20 + 40 + 80 + 1 + 1  # to its episode's end at step 1
    assert batch["values"][carried[0]].item() == 100.0
    assert len(batch["returns"]) == 4 + 1 + 1  # env 0 every step, env 1 its carried decision and step 3


@pytest.mark.one_id_regime_in_quick_suite
def test_side_channels_reach_every_process(vector_env):  # noqa: F811
    env = vector_env("--env", "CartPole-v1", "--echo-settings-as-stats", num_processes=2, engine_settings={"time_scale": 7.0},
                     parameters={"ballSpeed": 4.0, "radius": {"sampler": "uniform", "min": 0.0, "max": 1.0, "seed": 5}})
    received = env.read_stats()  # what each process reported after the first reset, one agent each
    assert received["engine/time_scale"].count == 2 and received["engine/time_scale"].low == 7.0
    assert received["received/ballSpeed"].count == 2 and received["received/radius"].count == 2
    assert (received["param/ballSpeed"].count, received["param/ballSpeed"].low) == (2, 4.0)
    # Sampler seeds differ per process (seed + process index): the two processes drew different values.
    assert received["param/radius"].count == 2 and received["param/radius"].low != received["param/radius"].high
    env.reset(options={"parameters": {"ballSpeed": 9.0}, "engine_settings": {"time_scale": 2.0}})
    received = env.read_stats()
    assert (received["engine/time_scale"].count, received["engine/time_scale"].high) == (2, 2.0)
    assert (received["param/ballSpeed"].count, received["param/ballSpeed"].low) == (2, 9.0)


@pytest.mark.one_id_regime_in_quick_suite
def test_processes_compute_their_steps_at_the_same_time(vector_env):  # noqa: F811
    env = vector_env("--env", "CartPole-v1", "--step-time", "0.2", "--report-step-times", num_processes=3)
    env.reset()
    env.read_stats()
    env.step(np.zeros(3, dtype=int))
    stats = env.read_stats()
    starts, ends = stats["player/step_start"], stats["player/step_end"]
    assert starts.count == ends.count == 3
    # Every process's step began before any had ended: they were all running at once.
    assert starts.high < ends.low


@pytest.mark.timeout(120)
def test_evaluation_finishes_when_an_agent_leaves_for_good(vector_env):  # noqa: F811
    from rl_lightning.evaluation import evaluate_episodes

    # One of the two agents is destroyed at the first step and never spawned again: its sub-env stays empty.
    env = vector_env("--env", "toy_envs:EchoEnv", "--agents", "2", "--despawn-prob", "1.0", max_agents=2)
    result = evaluate_episodes(lambda obs, mask=None: np.zeros(len(obs), dtype=int), env, n_episodes=6, seed=0)
    assert len(result.returns) == 6
    assert (result.lengths[1:] == 7).all()  # after the destroyed agent's cut-short one, whole 7-step episodes


def test_ppo_rollouts_hold_one_sample_per_decision_and_carry_open_ones(vector_env):  # noqa: F811
    from rl_lightning import PPO

    module = PPO(env="unity", env_kwargs=dict(file_name=PLAYER, additional_args=list(CHURN) + ["--decision-period", "3"],
                                              base_port=free_port(), timeout_wait=10, max_agents=4),
                 n_steps=16, batch_size=16, hidden_sizes=[8], eval_episodes=0, total_steps=640)
    module.setup("fit")
    try:
        sizes, carried = [], 0
        for _ in range(10):
            batch = module.collect_round()
            sizes.append(len(batch["returns"]))
            carried += module.rollout._carry is not None
    finally:
        module.close_envs()
    # About a third of the 64 row-steps of each rollout are decisions; decisions open at a rollout's end move on.
    assert all(0 < n < 64 for n in sizes) and 10 <= sum(sizes) <= 64 * 10 / 2
    assert carried > 0
