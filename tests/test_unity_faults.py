"""Unity processes that die, hang or fail to start, mid-training and before it; per-rank ports under DDP.

Each test drives the real player over real gRPC through mlagents_envs.UnityEnvironment.
"""

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from test_unity_player import PLAYER, TESTS, free_port

from rl_lightning import DQN, PPO, ConfigurationError
from rl_lightning.unity.vector_env import UnityProcessError, UnityVectorEnv

AGENTS = ["--env", "toy_envs:CounterEnv", "--env-kwargs", '{"terminate_at": 20}', "--agents", "2"]

# Processes that fail do so whatever their agent ids: each test's per-episode case runs with --all (conftest.py).
pytestmark = pytest.mark.one_id_regime_in_quick_suite


@pytest.fixture(autouse=True)
def toy_envs_importable(monkeypatch, agent_id_regime):
    """The players import the toy envs from this folder, and run in each agent-id regime (conftest.py)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))


def exists(pid: int) -> bool:
    """Whether ``pid`` is still a process at all (running, stopped, or an unreaped zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def players_on(ports: list[int]) -> list[int]:
    """Pids of live players launched for any of ``ports``."""
    wanted = {str(p) for p in ports}
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        args = [a.decode(errors="replace") for a in args]
        if any(a == "--mlagents-port" and b in wanted for a, b in itertools.pairwise(args)):
            found.append(int(proc.name))
    return found


def port_accepts_a_new_server(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mlagents checks: only a listener is in the way
        try:
            s.bind(("localhost", port))
        except OSError:
            return False
    return True


def unity_processes(model: PPO) -> list:
    """The UnityProcess units of the model's training envs, then of its evaluation envs."""
    return [unit for venv in (model.envs, model.eval_envs) for unit in venv.unwrapped.units]


class AtBatch(L.Callback):
    """At the end of training batch ``n`` (from 1): note the Unity processes and the time, then do ``action``."""

    def __init__(self, n: int, action) -> None:
        self.n, self.action, self.seen = n, action, 0
        self.units, self.at = [], None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.units = unity_processes(pl_module)
            self.at = time.monotonic()
            self.action(self.units)


def ppo_on_unity(timeout_wait: int, num_processes: int = 1) -> PPO:
    # 2 agents a process, 32 env steps a batch, 2 batches an epoch; the budget would last 300 batches.
    return PPO(env="unity", env_kwargs={"file_name": PLAYER, "base_port": free_port(), "timeout_wait": timeout_wait,
                                        "num_processes": num_processes, "additional_args": AGENTS},
               eval_env_kwargs={"base_port": free_port(), "num_processes": 1},
               n_steps=16 // num_processes, batch_size=32, n_epochs=1, total_steps=10_000, steps_per_epoch=64,
               eval_episodes=1, eval_num_envs=1, rounds_per_batch=1)


def fit(model: PPO, tmp_path: Path, callback: L.Callback) -> None:
    L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, default_root_dir=tmp_path,
              callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True), callback]).fit(model)


def assert_checkpoint_from_first_epoch(tmp_path: Path) -> None:
    last = tmp_path / "last.ckpt"
    assert torch.load(last, weights_only=True)["rl_lightning"]["env_steps"] == 64  # written after epoch 1, intact
    loaded = PPO.load_from_checkpoint(last)
    assert loaded.act(torch.zeros(1).numpy()) in (0, 1)


# ---------------------------------------------------------------------- faults mid-training
def test_a_killed_player_ends_fit_at_once_naming_it_and_leaves_no_process(tmp_path):
    model = ppo_on_unity(timeout_wait=5)
    killer = AtBatch(3, lambda units: os.kill(units[0].process.pid, signal.SIGKILL))
    with pytest.raises(UnityProcessError) as error:
        fit(model, tmp_path, killer)
    elapsed = time.monotonic() - killer.at
    killed = killer.units[0]
    assert re.fullmatch(
        rf"Unity process 0 of 1 \(worker_id 0, port {killed._port}, pid {killed.process.pid}; "
        rf"command: {re.escape(PLAYER)} .*--mlagents-port {killed._port} --env toy_envs:CounterEnv.*\) "
        r"was killed by signal SIGKILL \(9\) at step", str(error.value)), str(error.value)
    assert elapsed < 5, f"{elapsed:.1f} s to notice a dead process (timeout_wait=5)"
    print(f"killed player: fit ended {elapsed:.2f} s after the kill")
    assert model.envs is None and model.eval_envs is None
    assert [u.process.pid for u in killer.units if exists(u.process.pid)] == []  # training and evaluation players
    assert_checkpoint_from_first_epoch(tmp_path)


def test_a_hung_player_ends_fit_after_timeout_wait_and_is_killed(tmp_path):
    model = ppo_on_unity(timeout_wait=5, num_processes=2)
    stopper = AtBatch(3, lambda units: os.kill(units[1].process.pid, signal.SIGSTOP))
    with pytest.raises(UnityProcessError, match=r"^Unity process 1 of 2 \(worker_id 1, port \d+, pid \d+; command: .*"
                                                r"\) did not answer within timeout_wait=5 seconds at step$"):
        fit(model, tmp_path, stopper)
    elapsed = time.monotonic() - stopper.at
    print(f"stopped player: fit ended {elapsed:.2f} s after SIGSTOP (timeout_wait=5)")
    # mlagents alone would wait timeout_wait more for the stopped process to quit before killing it.
    assert 5 <= elapsed < 8, f"{elapsed:.1f} s"
    assert len(stopper.units) == 3  # two training processes (one healthy), one evaluation process
    assert [u.process.pid for u in stopper.units if exists(u.process.pid)] == []
    assert_checkpoint_from_first_epoch(tmp_path)


def test_ctrl_c_during_fit_leaves_no_unity_process(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    interrupt = AtBatch(1, lambda units: os.kill(os.getpid(), signal.SIGINT))
    try:
        with pytest.raises(SystemExit):  # the run stops at the next round's start, exits with 130
            fit(ppo_on_unity(timeout_wait=10), tmp_path, interrupt)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after the first
    assert len(interrupt.units) == 2
    for unit in interrupt.units:
        assert not exists(unit.process.pid)
        assert unit.process.returncode == 0  # they quit when closed; nobody had to kill them


def test_a_dead_process_is_noticed_within_a_second_even_with_a_long_timeout_wait():
    env = UnityVectorEnv(file_name=PLAYER, base_port=free_port(), timeout_wait=60, additional_args=AGENTS)
    pid = env.units[0].process.pid
    env.step([0, 0])
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(UnityProcessError, match=r"was killed by signal SIGKILL \(9\) at step$"):
        env.step([0, 0])
    # mlagents checks on the process every timeout_wait // 10 = 6 seconds.
    assert time.monotonic() - start < 1.5
    assert not exists(pid)
    with pytest.raises(RuntimeError, match="closed"):  # not a silent step on nothing
        env.step([0, 0])


def test_waiting_for_a_hung_process_does_not_busy_spin():
    env = UnityVectorEnv(file_name=PLAYER, base_port=free_port(), timeout_wait=4, additional_args=AGENTS)
    pid = env.units[0].process.pid
    os.kill(pid, signal.SIGSTOP)
    wall, cpu = time.monotonic(), time.process_time()
    with pytest.raises(UnityProcessError, match=r"did not answer within timeout_wait=4 seconds at step$"):
        env.step([0, 0])
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    # mlagents polls in slices of timeout_wait // 10 = 0 seconds below timeout_wait=10: a core spins throughout.
    assert 4 <= wall < 5.5 and cpu < 0.2, (wall, cpu)
    assert not exists(pid)


# ---------------------------------------------------------------------- faults before training
def test_a_player_that_fails_to_start_is_reported_with_its_log_and_leaves_nothing(tmp_path):
    port = free_port()
    with pytest.raises(UnityProcessError) as error:
        UnityVectorEnv(file_name=PLAYER, base_port=port, timeout_wait=10, log_folder=str(tmp_path),
                       additional_args=["--env", "no_such_module:NoEnv"])
    message = str(error.value)
    log = tmp_path / "Player-0.log"
    assert re.match(rf"Unity process 0 of 1 \(worker_id 0, port {port}, pid \d+; command: .*; log: {log}\) "
                    r"exited with return code 1 while starting; the last line of its log: .*no_such_module", message)
    assert "Traceback" in log.read_text()
    assert not exists(int(re.search(r"pid (\d+)", message).group(1)))
    # mlagents would keep its gRPC server listening on the port until the interpreter exits.
    deadline = time.monotonic() + 3
    while not port_accepts_a_new_server(port):
        assert time.monotonic() < deadline, f"port {port} still in use"
        time.sleep(0.1)


def test_a_player_that_dies_at_reset_ends_the_healthy_ones_too():
    port = free_port()
    with pytest.raises(UnityProcessError, match=r"^Unity process 0 of 2 \(worker_id 0, port \d+, pid \d+; .*\) "
                                                r"exited with return code 1 at reset$"):
        UnityVectorEnv(file_name=PLAYER, base_port=port, num_processes=2, timeout_wait=10,
                       additional_args=["--env", "toy_envs:FailingResetEnv"])
    assert players_on([port, port + 1]) == []


def test_fit_whose_evaluation_player_fails_to_start_closes_the_training_players(tmp_path):
    model = ppo_on_unity(timeout_wait=10)
    model.hparams.eval_env_kwargs["additional_args"] = ["--env", "no_such_module:NoEnv"]
    train_port = model.hparams.env_kwargs["base_port"]
    with pytest.raises(UnityProcessError, match=r"exited with return code 1 while starting"):
        fit(model, tmp_path, L.Callback())
    assert model.envs is None
    assert players_on([train_port]) == []


# ---------------------------------------------------------------------- DDP ranks
def test_ranks_above_zero_run_their_unity_processes_on_ports_of_their_own(monkeypatch):
    train_port, eval_port = free_port(), free_port()
    # Rank 2 adds 200 to each worker_id: base ports chosen so that the resulting ports are the free ones.
    model = PPO(env="unity", env_kwargs={"file_name": PLAYER, "base_port": train_port - 203, "worker_id": 3,
                                         "timeout_wait": 10, "additional_args": AGENTS},
                eval_env_kwargs={"base_port": eval_port - 205, "worker_id": 5}, eval_episodes=1)
    monkeypatch.setattr(PPO, "global_rank", property(lambda self: 2))
    for evaluation, port in ((False, train_port), (True, eval_port)):
        envs = model.make_envs(evaluation=evaluation)
        try:
            (unit,) = envs.unwrapped.units
            args = unit.process.args
            assert args[args.index("--mlagents-port") + 1] == str(port)  # and it connected there: the env is up
            assert envs.num_envs == 2
        finally:
            envs.close()


def test_an_action_space_the_algorithm_cannot_handle_is_refused_before_training_and_leaves_nothing(tmp_path):
    port = free_port()
    model = DQN(env="unity", env_kwargs={"file_name": PLAYER, "base_port": port, "timeout_wait": 10,
                                         "additional_args": ["--env", "rl_lightning/Drone-v0", "--agents", "2"]},
                learning_starts=32, batch_size=32, total_steps=64, steps_per_epoch=64, eval_episodes=0)
    with pytest.raises(ConfigurationError, match=r"DQN needs a Discrete action space; the env's is Box"):
        L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, default_root_dir=tmp_path).fit(model)
    assert model.env_steps == 0 and players_on([port]) == []


def test_sigterm_to_the_trainer_stops_it_leaving_its_checkpoint_and_no_process(tmp_path):
    # A scheduler's SIGTERM (e.g. SLURM preemption) to `rl-lightning fit` on Unity agents.
    train_port, eval_port = free_port(), free_port()
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/ppo_unity_cartpole.yaml").read_text())
    args = config["model"]["init_args"]
    args["env_kwargs"].update(worker_id=0, base_port=train_port, additional_args=AGENTS)
    args["eval_env_kwargs"].update(worker_id=0, base_port=eval_port, additional_args=AGENTS)
    args.update(total_steps=1_000_000, steps_per_epoch=64, n_steps=16, batch_size=32, n_epochs=1, eval_episodes=1)
    config["trainer"].update(enable_progress_bar=False, default_root_dir=str(tmp_path), callbacks=[
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}])
    config["trainer"]["logger"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "rl_lightning", "fit", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ckpt" / "last.ckpt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.2)
        assert len(players_on([train_port, eval_port])) == 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "Received SIGTERM" in out
    assert players_on([train_port, eval_port]) == []
    assert PPO.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt").env_steps >= 64


# ---------------------------------------------------------------------- builds that cannot start (worker ids 700-799)
def build(tmp_path: Path, name: str, content: bytes, mode: int = 0o755) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_a_build_that_exits_at_start_up_shows_the_last_lines_of_its_output(tmp_path):
    # mlagents sends a build's stdout and stderr to /dev/null: without log_folder its last words would be lost.
    crash = build(tmp_path, "Game.x86_64", b"#!/bin/sh\nfor i in $(seq 1 30); do echo \"loading part $i\"; done\n"
                                           b"echo 'Fatal: no graphics device' >&2\nexit 1\n")
    with pytest.raises(UnityProcessError) as error:
        UnityVectorEnv(file_name=str(crash), worker_id=700, timeout_wait=10)
    first, *rest = str(error.value).splitlines()
    assert re.fullmatch(rf"Unity process 0 of 1 \(worker_id 700, port 5705, pid \d+; command: {re.escape(str(crash))} "
                        r"--mlagents-port 5705\) exited with return code 1 while starting; the last line of its "
                        r"output: Fatal: no graphics device", first), first
    assert rest == ["The last 20 lines of its output:"] + [f"    loading part {i}" for i in range(12, 31)] + [
        "    Fatal: no graphics device"]
    assert port_accepts_a_new_server(5705)


def test_a_build_file_that_is_not_executable_says_chmod(tmp_path):
    game = build(tmp_path, "Game.x86_64", b"#!/bin/sh\nexit 0\n", mode=0o644)
    with pytest.raises(ConfigurationError, match=rf"^file_name='{re.escape(str(game))}': {re.escape(str(game))} is "
                                                 rf"not executable; make it executable with chmod \+x "
                                                 rf"{re.escape(str(game))}$"):
        UnityVectorEnv(file_name=str(game), worker_id=701, timeout_wait=10)


ARM64_ELF = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little") + bytes(44)
"""The 64-byte header of an executable for aarch64 (e_machine 183): exec refuses it on another processor."""


@pytest.mark.parametrize("content", [b"just some text, no #! line\n", ARM64_ELF], ids=["text file", "other processor"])
def test_a_file_that_is_not_a_program_for_this_machine_says_so_and_frees_its_port(tmp_path, content):
    import platform

    if content == ARM64_ELF and platform.machine() == "aarch64":
        pytest.skip("the header is this machine's own")
    game = build(tmp_path, "Game.x86_64", content)
    with pytest.raises(ConfigurationError, match=rf"^file_name='{re.escape(str(game))}' is not a program this machine "
                                                 r"\(Linux on \w+\) can run \(exec format error\): a text file without "
                                                 r"a '#!' first line, or a build for another operating system or "
                                                 r"processor"):
        UnityVectorEnv(file_name=str(game), worker_id=702, timeout_wait=10)
    assert port_accepts_a_new_server(5707)  # mlagents' gRPC server, opened before the launch, is closed


def test_a_port_in_use_suggests_a_worker_id_whose_ports_are_free(tmp_path):
    held = []
    try:
        for worker_id in (710, 711, 720, 723):  # another run's ports
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("localhost", 5005 + worker_id))
            s.listen()
            held.append(s)
        # The old hint, worker_id + num_processes, would name 711 (taken) and 722 (whose second port, 723, is taken).
        with pytest.raises(ConfigurationError, match=r"^worker_id=710: its port is already in use by another "
                                                     r"Unity environment \(port 5715\); give each concurrent run its own worker_id "
                                                     r"\(worker_id=712 has its port free now\)$"):
            UnityVectorEnv(file_name=PLAYER, worker_id=710, timeout_wait=10, additional_args=AGENTS)
        with pytest.raises(ConfigurationError, match=r"\(worker_id=724 has the ports free now\)$"):
            UnityVectorEnv(file_name=PLAYER, worker_id=720, num_processes=2, timeout_wait=10, additional_args=AGENTS)
        env = UnityVectorEnv(file_name=PLAYER, worker_id=712, timeout_wait=10, additional_args=AGENTS)  # it is free
        env.close()
    finally:
        for s in held:
            s.close()
