"""Every run gets a folder of its own, atomically; a folder a live run trains into is refused to another fit."""

import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from rl_lightning import PPO
from rl_lightning.run_folder import LOCK_NAME, RunFolderInUse

ROOT = Path(__file__).resolve().parents[1]
PPO_CARTPOLE = str(ROOT / "configs/ppo_cartpole.yaml")


def cli(tmp_path, *args, total_steps=1024):
    return [sys.executable, "-m", "rl_lightning", "fit", "--config", PPO_CARTPOLE,
            f"--model.init_args.total_steps={total_steps}", "--model.init_args.steps_per_epoch=512",
            "--model.init_args.eval_episodes=1", "--model.init_args.n_epochs=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=run",
            "--trainer.enable_model_summary=false", *args]


def test_runs_started_together_into_one_folder_each_get_their_own_version(tmp_path):
    procs = [subprocess.Popen(cli(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    runs = sorted((tmp_path / "run").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1", "version_2"]
    for run in runs:
        assert (run / "config.yaml").is_file() and len(list(run.glob("events.out.tfevents.*"))) == 1
        last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["rl_lightning"]["env_steps"] == 1024
        assert not (run / LOCK_NAME).exists()  # released at the end


@pytest.mark.slow  # three processes, about 13 s
def test_a_second_resume_of_a_running_run_is_refused_naming_the_folder_and_the_process(tmp_path):
    first = subprocess.run(cli(tmp_path, total_steps=512), cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    running = subprocess.Popen(cli(tmp_path, "--ckpt_path", "last", total_steps=10_000_000), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in running.stdout:
            if line.startswith("epoch "):
                break
        folder = tmp_path / "run" / "version_0"
        config_before = (folder / "config.yaml").read_bytes()
        second = subprocess.run(cli(tmp_path, "--ckpt_path", "last", total_steps=10_000_000), cwd=tmp_path,
                                capture_output=True, text=True)
        assert second.returncode == 2, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("rl-lightning: error:")]
        assert errors == [(f"rl-lightning: error: run folder {str(folder.resolve())!r} is in use by process "
                            f"{running.pid}, which is training into it; wait for that run to end, or start a new run "
                            "(without --ckpt_path, or with another logger version)")]
        assert "Traceback" not in second.stderr
        assert (folder / "config.yaml").read_bytes() == config_before
        assert running.poll() is None  # the running one goes on
    finally:
        running.terminate()
        running.communicate(timeout=60)
    assert running.returncode == 143


def small_ppo():
    return PPO(env="CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, hidden_sizes=[8], total_steps=64,
               steps_per_epoch=64, eval_episodes=0)


def python_fit(tmp_path, **logger_kwargs):
    trainer = L.Trainer(max_epochs=-1, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        logger=TensorBoardLogger(tmp_path, name="run", **logger_kwargs))
    trainer.fit(small_ppo())
    return trainer


def test_python_runs_claim_versions_and_respect_a_live_lock(tmp_path):
    assert Path(python_fit(tmp_path).log_dir).name == "version_0"
    assert Path(python_fit(tmp_path).log_dir).name == "version_1"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run" / "version_1" / LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(RunFolderInUse, match=rf"is in use by process {sleeper.pid}, which is training"):
            python_fit(tmp_path, version=1)
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process is gone now: the lock is stale and taken over.
    assert Path(python_fit(tmp_path, version=1).log_dir).name == "version_1"
    assert not (tmp_path / "run" / "version_1" / LOCK_NAME).exists()
