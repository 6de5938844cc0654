"""GridWorld: a Python stand-in for Unity ML-Agents' GridWorld, with the same observation and action specs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

# Actions, as in Unity's GridWorld: 0 stays, the others move one cell.
STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = {STAY: (0, 0), UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}

HEIGHT, WIDTH = 64, 84
BACKGROUND = (40, 40, 40)
FLOOR = (120, 120, 120)
AGENT = (40, 90, 230)
PLUS = (40, 200, 60)
EX = (220, 50, 50)


class GridWorld(gym.Env):
    """Reach the goal the goal signal names, on a small grid seen from above.

    Rules:
    - A ``size`` x ``size`` grid (5 x 5) holds the agent, a "plus" goal and an "ex"
      goal, each on a different random cell at every reset.
    - The goal signal is ``[1, 0]`` (reach the plus) or ``[0, 1]`` (reach the ex), drawn at every reset.
    - Actions: 0 stay, 1 up, 2 down, 3 left, 4 right. A move off the grid leaves the agent in place;
      with ``mask_actions`` those moves are masked in ``info["action_mask"]`` (1 = allowed).
    - Stepping onto the signalled goal: +1 and the episode terminates; onto the other goal: -1 and it
      terminates; any other step: ``step_penalty`` (-0.01). After ``max_steps`` steps the episode is truncated.
      The last step's ``info["is_success"]`` says whether the signalled goal was reached.
    - Observation: ``{"CameraSensor": 64 x 84 x 3 uint8 top-down view, "GoalSensor": the 2-entry signal}``,
      named as a Unity agent's camera and goal sensors would be; Unity orders sensors by name, so the camera is
      ``obs_0`` and the goal ``obs_1`` for Unity (and in an exported model). In the
      image each cell is a 12 x 12 square: grey floor, the agent a blue square filling most of its cell,
      the plus goal a thick green "+", the ex goal a thick red "x".
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, size: int = 5, max_steps: int = 100, step_penalty: float = -0.01,
                 mask_actions: bool = True, render_mode: str | None = None) -> None:
        if not 2 <= size <= 5:
            raise ValueError(f"size={size} must be in 2..5 (the image holds 5 x 5 cells of 12 px)")
        self.size, self.max_steps, self.step_penalty, self.mask_actions = size, max_steps, step_penalty, mask_actions
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict({
            "CameraSensor": gym.spaces.Box(0, 255, (HEIGHT, WIDTH, 3), np.uint8),
            "GoalSensor": gym.spaces.Box(0.0, 1.0, (2,), np.float32),
        })
        self.action_space = gym.spaces.Discrete(5)
        self.cell = 12
        self.top = (HEIGHT - size * self.cell) // 2
        self.left = (WIDTH - size * self.cell) // 2
        self.agent = self.plus = self.ex = (0, 0)
        self.target = 0
        self.t = 0

    # ------------------------------------------------------------------ rendering
    def _cell_slice(self, cell: tuple[int, int]) -> tuple[slice, slice]:
        r, c = cell
        y, x = self.top + r * self.cell, self.left + c * self.cell
        return slice(y + 1, y + self.cell - 1), slice(x + 1, x + self.cell - 1)

    def render(self) -> np.ndarray:
        img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        img[:] = BACKGROUND
        for r in range(self.size):
            for c in range(self.size):
                img[self._cell_slice((r, c))] = FLOOR
        # Goals and agent fill their cells, as the solid objects of Unity's top-down view do.
        ys, xs = self._cell_slice(self.plus)
        mid_y, mid_x = (ys.start + ys.stop) // 2, (xs.start + xs.stop) // 2
        img[mid_y - 2:mid_y + 2, xs] = PLUS
        img[ys, mid_x - 2:mid_x + 2] = PLUS
        ys, xs = self._cell_slice(self.ex)
        n = ys.stop - ys.start
        for k in range(n):
            for w in (-1, 0, 1):
                if 0 <= k + w < n:
                    img[ys.start + k, xs.start + k + w] = EX
                    img[ys.start + k, xs.stop - 1 - k - w] = EX
        ys, xs = self._cell_slice(self.agent)
        img[ys.start + 1:ys.stop - 1, xs.start + 1:xs.stop - 1] = AGENT
        return img

    def _obs(self) -> dict[str, np.ndarray]:
        return {"CameraSensor": self.render(), "GoalSensor": np.eye(2, dtype=np.float32)[self.target]}

    def _info(self) -> dict[str, Any]:
        if not self.mask_actions:
            return {}
        mask = np.ones(5, np.int8)
        for action, (dr, dc) in MOVES.items():
            r, c = self.agent[0] + dr, self.agent[1] + dc
            if not (0 <= r < self.size and 0 <= c < self.size):
                mask[action] = 0
        return {"action_mask": mask}

    # ------------------------------------------------------------------ dynamics
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        cells = self.np_random.choice(self.size * self.size, size=3, replace=False)
        self.agent, self.plus, self.ex = (divmod(int(i), self.size) for i in cells)
        self.target = int(self.np_random.integers(2))
        self.t = 0
        return self._obs(), self._info()

    def step(self, action: int):
        dr, dc = MOVES[int(action)]
        r, c = self.agent[0] + dr, self.agent[1] + dc
        if 0 <= r < self.size and 0 <= c < self.size:
            self.agent = (r, c)
        self.t += 1
        right, wrong = (self.plus, self.ex) if self.target == 0 else (self.ex, self.plus)
        if self.agent == right:
            reward, terminated = 1.0, True
        elif self.agent == wrong:
            reward, terminated = -1.0, True
        else:
            reward, terminated = self.step_penalty, False
        truncated = not terminated and self.t >= self.max_steps
        info = self._info()
        if terminated or truncated:
            info["is_success"] = reward > 0
        return self._obs(), reward, terminated, truncated, info
