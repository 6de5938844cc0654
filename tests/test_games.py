"""The stand-in games: their rules, observation/action specs, and a random policy's return."""

import gymnasium as gym
import numpy as np
import pytest

import rl_lightning.games  # noqa: F401 (registers the ids)
from rl_lightning.games.gridworld import AGENT, EX, LEFT, PLUS, RIGHT, STAY, UP, GridWorld


def test_gridworld_specs_match_the_seed():
    env = gym.make("rl_lightning/GridWorld-v0")
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (64, 84, 3) and obs["image"].dtype == np.uint8
    assert obs["goal"].tolist() in ([1.0, 0.0], [0.0, 1.0])
    assert env.action_space == gym.spaces.Discrete(5)
    assert info["action_mask"][STAY] == 1


def test_gridworld_rewards_the_signalled_goal_and_punishes_the_other():
    env = GridWorld()
    env.reset(seed=0)
    env.agent, env.plus, env.ex, env.target = (2, 2), (2, 3), (2, 1), 0
    _, reward, terminated, truncated, _ = env.step(RIGHT)
    assert (reward, terminated, truncated) == (1.0, True, False)
    env.agent, env.target = (2, 2), 0
    _, reward, terminated, _, _ = env.step(LEFT)
    assert (reward, terminated) == (-1.0, True)
    env.agent = (0, 0)
    obs, reward, terminated, _, info = env.step(UP)  # off the grid: stays, masked
    assert env.agent == (0, 0) and reward == -0.01 and not terminated
    assert info["action_mask"][UP] == 0 and info["action_mask"][LEFT] == 0 and info["action_mask"][RIGHT] == 1


def test_gridworld_truncates_at_the_step_limit():
    env = GridWorld(max_steps=3)
    env.reset(seed=1)
    env.agent, env.plus, env.ex = (0, 0), (4, 4), (4, 3)
    ends = [env.step(STAY)[3] for _ in range(3)]
    assert ends == [False, False, True]


def test_gridworld_image_shows_agent_and_goals_where_they_are():
    env = GridWorld()
    env.reset(seed=2)
    env.agent, env.plus, env.ex = (0, 0), (4, 4), (2, 2)
    img = env.render()
    for cell, color in ((env.agent, AGENT), (env.plus, PLUS), (env.ex, EX)):
        ys, xs = env._cell_slice(cell)
        assert (img[ys, xs] == color).all(axis=-1).any(), (cell, color)
    ys, xs = env._cell_slice((1, 3))
    assert not (img[ys, xs] == AGENT).all(axis=-1).any()


@pytest.mark.parametrize("seed", [0])
def test_gridworld_random_policy_baseline(seed):
    env = GridWorld()
    rng = np.random.default_rng(seed)
    returns, successes = [], 0
    obs, info = env.reset(seed=seed)
    for _ in range(300):
        ret, done = 0.0, False
        while not done:
            allowed = np.flatnonzero(info["action_mask"])
            obs, r, term, trunc, info = env.step(int(rng.choice(allowed)))
            ret += r
            done = term or trunc
        returns.append(ret)
        successes += r == 1.0
        obs, info = env.reset()
    # A random walk finds the right goal about as often as the wrong one.
    assert 0.3 < successes / 300 < 0.7
    assert -0.6 < float(np.mean(returns)) < 0.4
