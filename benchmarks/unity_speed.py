"""Steps per second of each stand-in game through the Unity protocol, next to the same game played directly.

    python benchmarks/unity_speed.py
    python benchmarks/unity_speed.py --games rl_lightning/Dodge-v0 --agents 1 16 --steps 3000

For each game and agent count it plays uniformly random actions (masked where the
game gives masks) for ``--steps`` vector steps, after a short warm-up, through

- ``direct``: a Gymnasium ``SyncVectorEnv`` of that many copies in this process, and
- ``unity``: ``UnityVectorEnv`` over the real ``mlagents_envs.UnityEnvironment``, the
  project's player serving the same copies as agents of one behavior (one process),

and prints agent steps per second (vector steps x agents / wall time) and their ratio.
Set ``OMP_NUM_THREADS``/pin cores yourself if you compare machines; nothing else runs here.
"""

from __future__ import annotations

import argparse
import socket
import time

import numpy as np

from rl_lightning.envs.factory import make_vector_env
from rl_lightning.unity.vector_env import UnityVectorEnv

GAMES = ["rl_lightning/GridWorld-v0", "rl_lightning/Drone-v0", "rl_lightning/Dodge-v0", "CartPole-v1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def random_actions(envs, info: dict, rng: np.random.Generator) -> np.ndarray:
    mask = info.get("action_mask")
    if mask is None:
        return envs.action_space.sample()
    return np.array([rng.choice(np.flatnonzero(m)) for m in mask])


def steps_per_second(envs, steps: int, warmup: int = 50) -> float:
    rng = np.random.default_rng(0)
    envs.action_space.seed(0)
    _, info = envs.reset(seed=0)
    for _ in range(warmup):
        _, _, _, _, info = envs.step(random_actions(envs, info, rng))
    start = time.perf_counter()
    for _ in range(steps):
        _, _, _, _, info = envs.step(random_actions(envs, info, rng))
    return steps * envs.num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=GAMES)
    parser.add_argument("--agents", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--steps", type=int, default=2000, help="vector steps timed per measurement")
    args = parser.parse_args()
    print("| game | agents | direct (steps/s) | Unity protocol (steps/s) | Unity / direct |")
    print("|---|---|---|---|---|")
    for game in args.games:
        for agents in args.agents:
            direct = make_vector_env(game, num_envs=agents, seed=0)
            try:
                fast = steps_per_second(direct, args.steps)
            finally:
                direct.close()
            unity = UnityVectorEnv(additional_args=["--env", game, "--agents", str(agents)], base_port=free_port(),
                                   timeout_wait=30)
            try:
                slow = steps_per_second(unity, args.steps)
            finally:
                unity.close()
            print(f"| {game} | {agents} | {fast:,.0f} | {slow:,.0f} | {slow / fast:.2f} |", flush=True)


if __name__ == "__main__":
    main()
