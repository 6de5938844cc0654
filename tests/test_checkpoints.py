"""Checkpoint files: default checkpointing, `--ckpt_path last`, mismatch errors, and files that survive SIGKILL."""

import fractions
import random
import re
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from test_cli import ROOT, scalars, tiny

from rl_lightning import DQN, PPO, ConfigurationError
from rl_lightning.checkpointing import CheckpointError
from rl_lightning.cli import main

PPO_CARTPOLE = str(ROOT / "configs/ppo_cartpole.yaml")


def quick_trainer(tmp_path, **kwargs):
    return L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, **kwargs)


def test_fit_checkpoints_by_default_and_ckpt_path_last_continues_the_run(tmp_path, capsys):
    # Stopped after its first epoch (as a kill or a time limit would), then resumed with --ckpt_path last.
    with pytest.warns(UserWarning, match="stops training before total_steps"):
        main(["fit", "--config", PPO_CARTPOLE, *tiny(tmp_path, total_steps=768), "--trainer.max_epochs=1"])
    run = tmp_path / "run" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    best = list((run / "checkpoints").glob("best-step=*.ckpt"))
    assert [p.name for p in best] == ["best-step=256.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["rl_lightning"]["env_steps"] == 256
    capsys.readouterr()

    main(["fit", "--config", PPO_CARTPOLE, *tiny(tmp_path, total_steps=768), "--ckpt_path=last"])
    out = capsys.readouterr().out
    assert f"Resuming from {run / 'checkpoints' / 'last.ckpt'}" in out
    assert "Evaluation after 768 env steps" in out
    # Same run folder: the curves continue where they stopped, no second version.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["version_0"]
    assert sorted(s for s, _ in scalars(run)["eval/return_mean"]) == [256, 512, 768]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["rl_lightning"]["env_steps"] == 768


def test_ckpt_path_last_without_a_checkpoint_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", PPO_CARTPOLE, *tiny(tmp_path), "--ckpt_path=last"])
    assert exit_.value.code == 2
    assert re.search(r"error: --ckpt_path last: no last.ckpt under .*run/\*/checkpoints", capsys.readouterr().err)


@pytest.fixture(scope="module")
def dqn_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("dqn") / "dqn.ckpt"
    model = DQN(env="CartPole-v1", learning_starts=64, batch_size=32, total_steps=128, steps_per_epoch=128,
                eval_episodes=0, hidden_sizes=[16])
    trainer = quick_trainer(path.parent, enable_checkpointing=False)
    trainer.fit(model)
    trainer.save_checkpoint(path)
    return path


def test_resuming_another_algorithms_checkpoint_names_both(dqn_checkpoint, tmp_path):
    model = PPO(env="CartPole-v1", total_steps=256, n_steps=32, batch_size=32, eval_episodes=0)
    with pytest.raises(ConfigurationError, match=f"checkpoint '{dqn_checkpoint}' holds a DQN model; load it with DQN, "
                                                 "not PPO"):
        quick_trainer(tmp_path, enable_checkpointing=False).fit(model, ckpt_path=dqn_checkpoint)
    with pytest.raises(ConfigurationError, match="holds a DQN model"):
        PPO.load_from_checkpoint(dqn_checkpoint)


def test_resuming_on_another_env_names_the_setting(dqn_checkpoint, tmp_path):
    model = DQN(env="Acrobot-v1", learning_starts=64, batch_size=32, total_steps=256, eval_episodes=0,
                hidden_sizes=[16])
    with pytest.raises(ConfigurationError, match=f"checkpoint '{dqn_checkpoint}' was written with other settings than "
                                                 r"this run's, which must match to resume it \(checkpoint -> this run\)"
                                                 r": env: 'CartPole-v1' -> 'Acrobot-v1'\."):
        quick_trainer(tmp_path, enable_checkpointing=False).fit(model, ckpt_path=dqn_checkpoint)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing", "foreign objects"])
def test_a_damaged_checkpoint_file_is_named_with_what_is_wrong(dqn_checkpoint, tmp_path, damage):
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(dqn_checkpoint.read_bytes()[:5000])
    elif damage == "garbage":
        bad.write_text("not a checkpoint")
    elif damage == "foreign objects":
        torch.save({"state_dict": {}, "extra": fractions.Fraction(1, 3)}, bad)
    expected = {"missing": "does not exist", "foreign objects": r"holds Python objects that torch.load\(weights_only",
                "garbage": r"cannot be read: the file \(16 bytes\) is not a zip archive"
                }.get(damage, "cannot be read: the file .* is not a zip archive")
    with pytest.raises(CheckpointError, match=f"checkpoint '{bad}' {expected}"):
        DQN.load_from_checkpoint(bad)
    model = DQN(env="CartPole-v1", learning_starts=64, batch_size=32, total_steps=256, eval_episodes=0)
    with pytest.raises(CheckpointError, match=f"checkpoint '{bad}' {expected}"):
        quick_trainer(tmp_path, enable_checkpointing=False).fit(model, ckpt_path=bad)


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    """A tiny PPO CartPole run's last.ckpt with NaN written into one weight (as other code or an edit could)."""
    logs = tmp_path_factory.mktemp("nan")
    main(["fit", "--config", PPO_CARTPOLE, *tiny(logs, total_steps=256)])
    checkpoint = torch.load(logs / "run" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"]["policy.critic_body.mlp.0.weight"][0, 0] = float("nan")
    bad = logs / "bad.ckpt"
    torch.save(checkpoint, bad)
    return bad, logs


@pytest.mark.parametrize("command", ["fit", "validate", "test", "export"])
def test_a_checkpoint_with_nan_weights_is_refused_at_load_naming_the_file_and_tensor(nan_checkpoint, command,
                                                                                      tmp_path, capsys):
    bad, logs = nan_checkpoint
    capsys.readouterr()
    args = ([f"--ckpt_path={bad}", f"--output={tmp_path / 'policy.onnx'}"] if command == "export" else
            ["--config", PPO_CARTPOLE, *tiny(tmp_path, total_steps=512), f"--ckpt_path={bad}"])
    with pytest.raises(SystemExit) as exit_:
        main([command, *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (f"rl-lightning: error: checkpoint '{bad}' cannot be used: its weights "
                                   "policy.critic_body.mlp.0.weight hold NaN or inf values; use an earlier "
                                   "checkpoint of the run (its best-*.ckpt, or one written before the fault)")
    assert "Traceback" not in err
    assert not (tmp_path / "policy.onnx").exists() and not (tmp_path / "run").exists()


def test_a_checkpoint_with_nan_weights_is_refused_by_python_loading_too(nan_checkpoint, tmp_path):
    bad, _ = nan_checkpoint
    match = f"checkpoint '{bad}' cannot be used: its weights policy.critic_body.mlp.0.weight hold NaN"
    with pytest.raises(CheckpointError, match=re.escape(match)):
        PPO.load_from_checkpoint(bad)
    model = PPO(env="CartPole-v1", total_steps=512, n_steps=32, batch_size=32, eval_episodes=0)
    with pytest.raises(CheckpointError, match=re.escape(match)):
        quick_trainer(tmp_path, enable_checkpointing=False).fit(model, ckpt_path=bad)


KILLED_TRAINING = """
import sys
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from rl_lightning import DQN
# A big replay buffer in every checkpoint makes each save take a while, so kills land inside saves too.
model = DQN(env="CartPole-v1", buffer_size=200_000, learning_starts=64, batch_size=32, train_freq=8,
            total_steps=10_000_000, steps_per_epoch=64, eval_episodes=0, hidden_sizes=[16], seed=int(sys.argv[2]))
trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[ModelCheckpoint(dirpath=sys.argv[1], save_last=True, save_top_k=1)])
print("training", flush=True)
trainer.fit(model, ckpt_path=sys.argv[3] if len(sys.argv) > 3 else None)
"""


def wait_for_a_save_in_progress(folder, pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(folder.glob(f".*.ckpt.{pid}.tmp")):
            return
        time.sleep(0.0005)
    raise AssertionError(f"no checkpoint save started within {timeout} s")


@pytest.mark.slow  # six training processes killed in turn: about a minute
def test_sigkill_at_random_moments_never_leaves_an_unreadable_last_checkpoint(tmp_path):
    rng = random.Random(0)
    last = tmp_path / "last.ckpt"
    steps_seen = []
    for attempt in range(6):
        args = [sys.executable, "-c", KILLED_TRAINING, str(tmp_path), str(attempt)]
        if last.exists():
            args.append(str(last))  # each run resumes from what the previous one left
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout.readline().strip() == "training"
            if attempt % 2 == 0:
                time.sleep(rng.uniform(1.0, 4.0))  # anywhere in training or saving
            else:
                wait_for_a_save_in_progress(tmp_path, proc.pid, timeout=20)  # inside a save, for sure
                time.sleep(rng.uniform(0.0, 0.005))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        if last.exists():
            model = DQN.load_from_checkpoint(last)  # must load, whatever the moment of the kill
            saved = torch.load(last, weights_only=True)["rl_lightning"]
            assert saved["replay_buffer"]["size"] == model.env_steps > 0  # and hold the whole buffer
            steps_seen.append(model.env_steps)
    # Saves happened and the runs made progress across kills (each resumed the previous one's last.ckpt).
    assert len(steps_seen) >= 4 and steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    # A kill inside a save leaves its temporary file; the next process's first save removes it.
    assert len(list(tmp_path.glob(".*.ckpt.*.tmp"))) <= 1
