"""Steps per second of a Unity env with 1, 2 and 4 processes, each build taking ``--step-time`` per step.

    python benchmarks/unity_processes.py
    python benchmarks/unity_processes.py --game rl_lightning/Dodge-v0 --agents 16 --step-time 0.01 --processes 1 2 4

A real build spends its own time on each step (physics, rendering); the project's player imitates that with
``--step-time``. ``UnityVectorEnv`` sends each step to all its processes at once and waits for them together, so N
processes should give about N times the steps per second of one while the build's time dominates. For each
process count the script plays uniformly random actions for ``--seconds`` after a warm-up and prints agent steps
per second (vector steps x sub-envs / wall time) and the speed-up over one process, next to the ideal N.
"""

from __future__ import annotations

import argparse
import socket
import time

from rl_lightning.unity.vector_env import UnityVectorEnv


def free_port_block(n: int) -> int:
    """A base port with ``n`` free ports after it (checked one by one)."""
    while True:
        with socket.socket() as s:
            s.bind(("localhost", 0))
            base = s.getsockname()[1]
        ok = True
        for k in range(1, n):
            with socket.socket() as s:
                try:
                    s.bind(("localhost", base + k))
                except OSError:
                    ok = False
                    break
        if ok:
            return base


def measure(game: str, agents: int, processes: int, step_time: float, seconds: float) -> float:
    env = UnityVectorEnv(additional_args=["--env", game, "--agents", str(agents), "--step-time", str(step_time)],
                         num_processes=processes, base_port=free_port_block(processes), timeout_wait=30)
    try:
        env.action_space.seed(0)
        env.reset()
        for _ in range(20):
            env.step(env.action_space.sample())
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(env.action_space.sample())
            steps += 1
        return steps * env.num_envs / (time.perf_counter() - start)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="CartPole-v1")
    parser.add_argument("--agents", type=int, default=1, help="agents per process")
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--step-time", type=float, default=0.01, help="seconds each process spends per step")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    args = parser.parse_args()
    print(f"{args.game}, {args.agents} agent(s) per process, {args.step_time * 1000:g} ms per step in each process")
    print("| processes | steps/s | speed-up over 1 | ideal |")
    print("|---|---|---|---|")
    base = None
    for n in sorted(set(args.processes) | {1}):
        sps = measure(args.game, args.agents, n, args.step_time, args.seconds)
        base = base or sps  # 1 process comes first
        print(f"| {n} | {sps:,.0f} | {sps / base:.2f}x | {n}x |", flush=True)

if __name__ == "__main__":
    main()
