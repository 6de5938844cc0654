"""The stand-in games: their rules, observation/action specs, and a random policy's return."""

import gymnasium as gym
import numpy as np
import pytest

import rl_lightning.games  # noqa: F401 (registers the ids)
from rl_lightning.games.gridworld import AGENT, EX, LEFT, PLUS, RIGHT, STAY, UP, GridWorld


def test_gridworld_specs_match_the_seed():
    env = gym.make("rl_lightning/GridWorld-v0")
    obs, info = env.reset(seed=0)
    assert obs["CameraSensor"].shape == (64, 84, 3) and obs["CameraSensor"].dtype == np.uint8
    assert obs["GoalSensor"].tolist() in ([1.0, 0.0], [0.0, 1.0])
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


def test_drone_specs_and_physics():
    from rl_lightning.games.drone import Drone

    env = gym.make("rl_lightning/Drone-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9,) and env.action_space.shape == (3,)
    assert env.action_space.low.tolist() == [-1, -1, -1]
    drone = Drone(drag=0.0, dt=0.1, max_accel=4.0)
    drone.reset(seed=0)
    obs, *_ = drone.step(np.array([1.0, 0.0, 0.0]))
    assert obs[3:6].tolist() == pytest.approx([0.4, 0.0, 0.0])          # v = a * max_accel * dt
    assert (obs[:3] + drone.goal).tolist() == pytest.approx([0.04, 0, 0], abs=1e-6)  # p = v * dt
    assert obs[6:].tolist() == pytest.approx([0.4, 0.0, 0.0])          # w = 0.2 * max_rate * (a - a_prev)


def test_drone_rewards_progress_and_ends_at_the_goal_or_the_bounds():
    from rl_lightning.games.drone import Drone

    drone = Drone(goal_radius=0.5)
    drone.reset(seed=0)
    drone.goal = np.array([0.3, 0.0, 0.0])
    drone.pos = np.array([-0.2, 0.0, 0.0])
    _, reward, terminated, _, info = drone.step(np.array([1.0, 0.0, 0.0]))
    assert terminated and info["reached"] and reward > 1.0  # bonus plus progress
    drone.reset(seed=0)
    drone.pos = np.array([5.99, 0.0, 0.0])
    drone.vel = np.array([5.0, 0.0, 0.0])
    _, reward, terminated, _, info = drone.step(np.zeros(3))
    assert terminated and not info["reached"] and reward < -1.0 + 1e-6
    drone = Drone(max_steps=2)
    drone.reset(seed=3)
    assert [drone.step(np.zeros(3))[3] for _ in range(2)] == [False, True]


def test_drone_random_policy_rarely_reaches_the_goal():
    env = gym.make("rl_lightning/Drone-v0")
    rng = np.random.default_rng(0)
    reached = 0
    for episode in range(50):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
            done = term or trunc
        reached += info["reached"]
    assert reached / 50 < 0.3


def test_dodge_specs_rays_and_parameters():
    from rl_lightning.games.dodge import DOWN, STAY, Dodge

    env = gym.make("rl_lightning/Dodge-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (122,) and env.action_space == gym.spaces.Discrete(5)
    dodge = Dodge(ballNums=0, boardRadius=6.0)
    obs, _ = dodge.reset(seed=0, options={"parameters": {"boardRadius": 8.0, "ballNums": 0}})
    # Alone at the centre of a radius-8 board: every ray meets the wall at 8, i.e. 8 / 16.
    assert obs[0:120:3] == pytest.approx([0.5] * 40) and obs[-2:].tolist() == [0.0, 0.0]
    # One ball straight to the right (ray 0), at rest.
    dodge.balls, dodge.vel = np.array([[3.0, 0.0]]), np.array([[-4.0, 0.0]])
    obs = dodge._observe()
    assert obs[0] == pytest.approx((3.0 - 0.25) / 16) and obs[1:3].tolist() == [-1.0, 0.0]
    dodge.vel = np.zeros((1, 2))
    dodge.step(DOWN)
    assert dodge.agent.tolist() == pytest.approx([0.0, -0.3])  # agentSpeed 3 * dt 0.1
    dodge.step(STAY)


def test_dodge_ends_with_minus_one_when_hit_and_bounces_balls_inwards():
    from rl_lightning.games.dodge import STAY, Dodge

    dodge = Dodge(ballNums=1)
    dodge.reset(seed=0)
    dodge.balls, dodge.vel = np.array([[0.9, 0.0]]), np.array([[-4.0, 0.0]])
    _, reward, terminated, truncated, _ = dodge.step(STAY)
    assert (reward, terminated, truncated) == (-1.0, True, False)
    dodge.reset(seed=0)
    dodge.balls, dodge.vel = np.array([[6.7, 0.0]]), np.array([[4.0, 0.0]])
    _, reward, terminated, _, _ = dodge.step(STAY)
    assert reward == 0.01 and not terminated
    assert np.linalg.norm(dodge.balls[0]) <= 7.0 - 0.25 + 1e-9 and dodge.vel[0, 0] < 0  # heading back in
    assert np.linalg.norm(dodge.vel[0]) == pytest.approx(4.0)


def test_dodge_random_policy_survival_baseline():
    env = gym.make("rl_lightning/Dodge-v0")
    rng = np.random.default_rng(0)
    lengths = []
    for episode in range(30):
        env.reset(seed=episode)
        done, n = False, 0
        while not done:
            _, _, term, trunc, _ = env.step(int(rng.integers(5)))
            n += 1
            done = term or trunc
        lengths.append(n)
    # Balls find a wandering agent within a few dozen steps, far from the 1000-step limit.
    assert 10 < np.mean(lengths) < 300
