"""SIGTERM ends a run with last.ckpt and exit code 143; last.ckpt follows every epoch; progress lines off a terminal."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl_lightning import PPO
from rl_lightning.checkpointing import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
PPO_CARTPOLE = str(ROOT / "configs/ppo_cartpole.yaml")


def command(tmp_path, *args, total_steps=12288, steps_per_epoch=4096):
    return [sys.executable, "-m", "rl_lightning", "fit", "--config", PPO_CARTPOLE,
            f"--model.init_args.total_steps={total_steps}", f"--model.init_args.steps_per_epoch={steps_per_epoch}",
            "--model.init_args.eval_episodes=2", "--model.init_args.n_epochs=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=run",
            "--trainer.enable_model_summary=false", *args]


def env_steps(path):
    return torch.load(path, weights_only=True)["rl_lightning"]["env_steps"]


def start(args, cwd, **variables):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **variables}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("signum", "status", "name"), [
    (signal.SIGTERM, 143, "SIGTERM"),
    # Under --all: the in-process Ctrl-C tests below cover Ctrl-C in the quick suite.
    pytest.param(signal.SIGINT, 130, "Ctrl-C", marks=pytest.mark.slow)], ids=["sigterm", "ctrl_c"])
def test_a_stop_mid_epoch_saves_a_last_checkpoint_that_resumes_to_the_budget(signum, status, name, tmp_path):
    budget = dict(total_steps=16384, steps_per_epoch=8192)
    # 10 update epochs a rollout: the second epoch lasts seconds (with 2 it took under half a second on a free machine).
    proc = start(command(tmp_path, "--model.init_args.n_epochs=10", **budget), tmp_path)
    lines = []
    for line in proc.stdout:  # stdout is a pipe: one progress line per epoch
        lines.append(line)
        if line.startswith("epoch 0,"):
            break
    time.sleep(0.5)  # inside the second and last epoch (32 batches of 256 env steps)
    proc.send_signal(signum)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err[-2000:]
    assert time.monotonic() - sent < 10
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"Stopped by {name}: saved {last}" in err
    stopped_at = env_steps(last)
    assert 8192 < stopped_at < 16384, stopped_at  # the moment of the signal, not the end of the first epoch
    assert PPO.load_from_checkpoint(last).env_steps == stopped_at

    resumed = subprocess.run(command(tmp_path, "--model.init_args.n_epochs=10", "--ckpt_path", "last", **budget),
                             cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming from {last}" in resumed.stdout
    # The interrupted epoch counts as ended: the resumed run spends exactly the rest of the budget (resumed inside
    # the budget's last epoch, Lightning's own mid-epoch restart stopped short of it).
    assert "Evaluation after 16384 env steps" in resumed.stdout
    assert env_steps(last) == 16384


@pytest.mark.slow  # a minute-long rollout started in a process: under --all
def test_sigterm_stops_a_long_rollout_within_seconds(tmp_path):
    # One rollout of 16 envs x 200,000 steps takes about a minute or more; SIGTERM is checked between env steps.
    args = command(tmp_path, "--model.init_args.num_envs=16", "--model.init_args.n_steps=200000",
                   "--model.init_args.batch_size=2048", total_steps=3_200_000, steps_per_epoch=3_200_000)
    proc = start(args, tmp_path)
    time.sleep(12)  # started and collecting
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    print(f"rollout stopped {elapsed:.2f} s after SIGTERM")
    assert proc.returncode == 143, err[-2000:]
    assert elapsed < 5
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert env_steps(last) == 0  # the abandoned rollout is not counted
    assert PPO.load_from_checkpoint(last).env_steps == 0


def test_last_checkpoint_follows_every_epoch_after_the_best_score_stops_improving(tmp_path):
    # Every episode of CounterEnv(terminate_at=5) returns 5: the best checkpoint is saved once, after the first
    # epoch, and never again. last.ckpt must still hold the end of the run, and progress lines reach the pipe.
    args = command(tmp_path, "--model.init_args.env=toy_envs:CounterEnv", "--model.init_args.env_kwargs={terminate_at: 5}",
                   "--model.init_args.hidden_sizes=[8]", total_steps=2048, steps_per_epoch=512)
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert run.returncode == 0, run.stderr[-2000:]
    checkpoints = tmp_path / "run" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-step=512.ckpt", "last.ckpt"]
    assert env_steps(checkpoints / "last.ckpt") == 2048
    lines = [line for line in run.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 4, run.stdout
    assert lines[-1].startswith("epoch 3, env steps 2048/2048 (100%), return 5.00, ")
    assert lines[-1].endswith(", eval return 5.00") and " steps/s, " in lines[-1]
    assert "\r" not in run.stdout  # no progress bar redrawn into the pipe


def test_a_killed_saves_temporary_file_is_removed_when_its_checkpoint_is_loaded(tmp_path):
    model = PPO(env="CartPole-v1", total_steps=64, n_steps=32, batch_size=32, eval_episodes=0)
    ckpt = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state": torch.zeros(2)}, ckpt)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.ckpt.{int(dead.stdout)}.tmp"  # what a save killed midway leaves
    stale.write_bytes(b"partial")
    mine = tmp_path / f".last.ckpt.{os.getpid()}.tmp"  # a save in progress in a live process stays
    mine.write_bytes(b"in progress")
    assert AtomicCheckpointIO().load_checkpoint(ckpt)["state"].shape == (2,)
    assert not stale.exists()
    assert mine.exists()
    del model


def ppo_run(**kwargs) -> PPO:
    settings = dict(env="CartPole-v1", num_envs=2, n_steps=16, batch_size=16, n_epochs=4, hidden_sizes=[16],
                    steps_per_epoch=64, total_steps=256, seed=3, eval_episodes=1, eval_num_envs=1)
    return PPO(**{**settings, **kwargs})


def fit_to(model, tmp_path, ckpt_path=None, callbacks=()):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_top_k=0), *callbacks])
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


def ctrl_c_at_gradient_step(model, k, presses=1):
    """Press Ctrl-C (SIGINT to this process) ``presses`` times right after the model's k-th gradient step, inside an
    update."""
    original, count = model.gradient_step, [0]

    def step(loss, optimizers):
        original(loss, optimizers)
        count[0] += 1
        if count[0] == k:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)

    model.gradient_step = step
    return count


def test_ctrl_c_in_the_middle_of_an_update_stops_after_it_and_resumes_bit_for_bit(tmp_path, capfd):
    whole = ppo_run()
    whole_trainer = fit_to(whole, tmp_path / "whole")

    stopped = ppo_run()
    # 2 envs x 16 steps = 32 per rollout, 4 epochs of 2 minibatches: 8 gradient steps an update. The 11th is in
    # the middle of the second update.
    count = ctrl_c_at_gradient_step(stopped, 11)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_:
        fit_to(stopped, tmp_path / "split")
    assert exit_.value.code == 130
    # The run's own handlers are gone again (a SIGTERM handler left behind would make SIGTERM a flag nobody reads).
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert count[0] == 16  # the interrupted update was finished, the next one never started
    last = tmp_path / "split" / "last.ckpt"
    assert env_steps(last) == stopped.env_steps == 64  # the next rollout was abandoned at its first step
    err = capfd.readouterr().err
    assert "Ctrl-C: stopping at the next consistent point" in err and f"Stopped by Ctrl-C: saved {last}" in err

    resumed = ppo_run()
    resumed_trainer = fit_to(resumed, tmp_path / "split", ckpt_path=last)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # also after a whole fit
    assert resumed.env_steps == whole.env_steps == 256
    assert resumed_trainer.global_step == whole_trainer.global_step
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_epochs_checkpoint(tmp_path, capfd):
    model = ppo_run(total_steps=512)
    # In the third update (after the first epoch's end: 2 updates of 8 steps).
    count = ctrl_c_at_gradient_step(model, 19, presses=2)
    with pytest.raises(SystemExit) as exit_:
        fit_to(model, tmp_path)
    assert exit_.value.code == 1  # Lightning's own exit after a KeyboardInterrupt
    assert count[0] == 19  # stopped inside the update
    assert env_steps(tmp_path / "last.ckpt") == 64  # the epoch end's, not half an update
    assert "left as it was" in capfd.readouterr().err


@pytest.mark.slow  # the stop timeout's seconds of waiting: under --all
def test_sigterm_ends_a_run_whose_env_step_never_returns_within_the_stop_timeout(tmp_path):
    args = command(tmp_path, "--model.init_args.env=toy_envs:HangingEnv",
                   "--model.init_args.env_kwargs={terminate_at: 20, hang_after: 3000}",
                   "--model.init_args.check_env=false", "--model.init_args.hidden_sizes=[8]",
                   total_steps=1_000_000, steps_per_epoch=1024)
    proc = start(args, tmp_path, RL_LIGHTNING_STOP_TIMEOUT="3")
    for line in proc.stdout:
        if line.startswith("epoch 1,"):  # 2048 steps and two checkpoints written; it hangs before 3000
            break
    time.sleep(2)
    last = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    print(f"hung run ended {elapsed:.2f} s after SIGTERM (stop timeout 3 s)")
    assert proc.returncode == 143, err[-2000:]
    assert 3 <= elapsed < 8
    assert "SIGTERM: the run did not reach a point where it can stop within 3 s" in err
    assert last.read_bytes() == before and env_steps(last) == 2048  # intact, and still loads
