"""Agents that do not decide every step (Unity's DecisionRequester), through the real player and UnityEnvironment."""

import numpy as np
from test_unity_player import unity, vector_env  # noqa: F401 (fixtures)
from toy_envs import ActionSumEnv


def test_an_agent_between_decisions_is_in_neither_list_and_gets_its_rewards_at_its_next_decision(unity):  # noqa: F811
    env = unity("--env", "toy_envs:CounterEnv", "--agents", "2", "--decision-period", "2")
    env.reset()
    empty = env.behavior_specs["Agent"].action_spec.empty_action
    assert list(env.get_steps("Agent")[0].agent_id) == [0, 1]  # every agent decides at an episode's start
    env.set_actions("Agent", empty(2))
    env.step()
    decisions, terminals = env.get_steps("Agent")
    assert list(decisions.agent_id) == [1] and len(terminals) == 0  # step 1: only (1 + 1) % 2 == 0
    assert decisions.reward.tolist() == [1.0]
    env.set_actions("Agent", empty(1))  # an action for agent 1 only
    env.step()
    decisions, terminals = env.get_steps("Agent")
    assert list(decisions.agent_id) == [0] and len(terminals) == 0
    assert decisions.reward.tolist() == [2.0]  # both steps' rewards, with its decision
    assert decisions.obs[0][:, 0].tolist() == [2.0]


def test_rows_between_decisions_keep_their_observation_and_their_actions_are_not_applied(vector_env):  # noqa: F811
    period, n, length = 3, 3, 7  # episodes of 7 steps: they end between scheduled decisions
    env = vector_env("--env", "toy_envs:ActionSumEnv", "--env-kwargs", f'{{"terminate_at": {length}}}',
                     "--agents", str(n), "--decision-period", str(period))
    obs, info = env.reset()
    assert info["decision"].tolist() == [True] * n
    # The same episodes played directly, each agent repeating its last decided action as Unity does.
    direct = [ActionSumEnv(terminate_at=length) for _ in range(n)]
    for d in direct:
        d.reset()
    applied = np.zeros(n, dtype=np.int64)
    since_decision, direct_return, episode_return = np.zeros(n), np.zeros(n), np.zeros(n)
    rng = np.random.default_rng(0)
    episodes = mixed_steps = 0
    for step in range(1, 4 * length):
        # Action 3 goes to rows that did not decide: applied, it would show in their observation and reward.
        actions = np.where(info["decision"], rng.integers(1, 3, n), 3)
        applied = np.where(info["decision"], actions, applied)
        previous = obs
        obs, rewards, terminated, truncated, info = env.step(actions)
        mixed_steps += 0 < info["decision"].sum() < n
        episode_return += rewards
        for i, d in enumerate(direct):
            d_obs, d_reward, d_terminated, _, _ = d.step(int(applied[i]))
            since_decision[i] += d_reward
            direct_return[i] += d_reward
            assert terminated[i] == d_terminated and not truncated[i]  # an episode end is reported at once
            if d_terminated:
                assert info["final_obs"][i].tolist() == d_obs.tolist()
                assert rewards[i] == since_decision[i]
                assert episode_return[i] == direct_return[i]
                assert info["decision"][i] and obs[i].tolist() == [0.0, 0.0]  # its next episode starts deciding
                d.reset()
                since_decision[i] = direct_return[i] = episode_return[i] = 0.0
                episodes += 1
            elif (step + i) % period == 0:
                assert info["decision"][i]
                assert obs[i].tolist() == d_obs.tolist() and rewards[i] == since_decision[i]
                since_decision[i] = 0.0
            else:
                assert not info["decision"][i]
                assert obs[i].tolist() == previous[i].tolist() and rewards[i] == 0.0
    assert episodes == 3 * n and mixed_steps > 0
