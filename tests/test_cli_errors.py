"""The rl-lightning command as a user meets it: one-line errors, explicit checkpoints and the config, its own options.

Every case runs the command in a subprocess, as a user would, and checks the exit status, that the message names
the setting or file, and that nothing was left in the run folders.
"""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from test_cli import ROOT, tiny

from rl_lightning import PPO
from rl_lightning.checkpointing import CheckpointError

CONFIGS = ROOT / "configs"


def command(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rl_lightning", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The command's one error line (stderr may also hold Lightning's own notices before it)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rl-lightning: error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def written_files(folder: Path) -> list[Path]:
    """Everything under ``folder``: files and (empty) folders."""
    return list(folder.rglob("*"))


@pytest.mark.parametrize("args, expected", [
    (["--config", str(CONFIGS / "ppo_cartpole.yaml"), "--model.init_args.batch_size=1000"],
     "batch_size=1000 must be between 1 and the rollout size"),  # raised in __init__, under jsonargparse
    (["--config", str(CONFIGS / "ppo_cartpole.yaml"), "--model.init_args.bogus=3"],
     "Option 'bogus' is not accepted"),  # jsonargparse's own error
    (["--config", str(CONFIGS / "ppo_cartpole.yaml"), "--model.init_args.total_steps=many"],
     "model.init_args.total_steps: many must be a positive integer (rl_lightning.PPO)"),  # its declared range
    (["--config", str(CONFIGS / "ddpg_pendulum.yaml"), "--model.init_args.env=CartPole-v1"],
     "DDPG needs a 1-D Box (continuous) action space; the env's is Discrete(2)"),  # raised in setup
    (["--config", str(CONFIGS / "no_such.yaml")], "no_such.yaml"),
    (["--config", str(CONFIGS / "ppo_cartpole.yaml"), "--model.init_args.rollouts_per_batch=2"],
     "Option 'rollouts_per_batch' is not accepted (rollouts_per_batch is now called rounds_per_batch)"),
], ids=["init", "unknown-key", "bad-value", "setup", "missing-config", "renamed-key"])
def test_a_bad_setting_is_one_line_with_status_2_and_no_run_folder(tmp_path, args, expected):
    proc = command(tmp_path, "fit", *args, *tiny(tmp_path)[:4], f"--trainer.default_root_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert expected in error_line(proc)
    assert written_files(tmp_path) == []  # no lightning_logs/<name>/version_N, no config.yaml


def test_traceback_flag_shows_the_full_traceback(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "ppo_cartpole.yaml"), "--model.init_args.batch_size=1000"]
    proc = command(tmp_path, *args, "--traceback")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "ConfigurationError" in proc.stderr
    proc = command(tmp_path, *args, env={**__import__("os").environ, "RL_LIGHTNING_TRACEBACK": "1"})
    assert "Traceback (most recent call last)" in proc.stderr


# ---------------------------------------------------------------------- --ckpt_path <file> and the config
@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """A PPO CartPole run of 512 env steps through the command, and its last.ckpt."""
    folder = tmp_path_factory.mktemp("ppo_run")
    proc = command(folder, "fit", "--config", str(CONFIGS / "ppo_cartpole.yaml"), *tiny(folder),
                   "--model.init_args.steps_per_epoch=512")
    assert proc.returncode == 0, proc.stderr
    last = folder / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["rl_lightning"]["env_steps"] == 512
    return folder, last


def env_steps_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["rl_lightning"]["env_steps"]


def test_an_explicit_checkpoint_resumes_with_the_new_budget(ppo_run, tmp_path):
    _, last = ppo_run
    proc = command(tmp_path, "fit", "--config", str(CONFIGS / "ppo_cartpole.yaml"), *tiny(tmp_path, total_steps=1024),
                   f"--ckpt_path={last}")
    assert proc.returncode == 0, proc.stderr
    assert "Evaluation after 1024 env steps" in proc.stdout
    assert "total_steps: 512 -> 1024" in proc.stdout + proc.stderr  # said, not silently taken
    assert env_steps_of(tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt") == 1024


@pytest.mark.parametrize("config, extra, expected", [
    ("dqn_cartpole.yaml", [], "algorithm: PPO -> DQN"),
    ("ppo_lunarlander.yaml", [], "env: 'CartPole-v1' -> 'LunarLander-v3'"),
    ("ppo_cartpole.yaml", ["--model.init_args.hidden_sizes=[32]"], "hidden_sizes: [64, 64] -> [32]"),
    ("ppo_cartpole.yaml", ["--model.init_args.num_envs=4"], "num_envs: 8 -> 4"),
], ids=["algorithm", "env", "network", "env-copies"])
def test_a_checkpoint_of_another_model_stops_before_anything_is_built(ppo_run, tmp_path, config, extra, expected):
    _, last = ppo_run
    proc = command(tmp_path, "fit", "--config", str(CONFIGS / config), *tiny(tmp_path), *extra, f"--ckpt_path={last}")
    assert proc.returncode == 2
    line = error_line(proc)
    assert str(last) in line and expected in line
    assert written_files(tmp_path) == []


def test_evaluating_a_checkpoint_takes_the_configs_evaluation_settings(ppo_run, tmp_path):
    _, last = ppo_run
    proc = command(tmp_path, "test", "--config", str(CONFIGS / "ppo_cartpole.yaml"), f"--ckpt_path={last}",
                   "--model.init_args.eval_episodes=3", "--model.init_args.num_envs=16", "--trainer.logger=false",
                   "--trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr
    assert "Evaluation after 512 env steps" in proc.stdout and "over 3 episodes" in proc.stdout
    assert written_files(tmp_path) == []  # no logger: no config.yaml in the working directory either
    # The number of env copies matters to resume a fit, not to evaluate.
    assert "num_envs" not in proc.stderr


def test_validate_and_test_last_evaluate_the_newest_run_and_without_a_checkpoint_warn(ppo_run, tmp_path):
    folder, last = ppo_run
    proc = command(folder, "validate", "--config", str(CONFIGS / "ppo_cartpole.yaml"), *tiny(folder)[:4],
                   f"--trainer.logger.init_args.save_dir={folder}", "--trainer.logger.init_args.name=run",
                   "--ckpt_path=last", "--trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr
    assert f"Evaluating {last}" in proc.stdout and "Evaluation after 512 env steps" in proc.stdout
    proc = command(tmp_path, "validate", "--config", str(CONFIGS / "ppo_cartpole.yaml"), *tiny(tmp_path)[:4],
                   "--trainer.logger=false", "--trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr
    assert "validate without --ckpt_path evaluates an untrained policy" in proc.stderr


def test_changed_learning_rates_apply_after_a_resume(ppo_run, tmp_path):
    # Lightning restores the optimizers' param groups (their learning rates too); the run's own settings win.
    _, last = ppo_run
    model = PPO(env="CartPole-v1", num_envs=8, n_steps=32, batch_size=256, learning_rate=0.123,
                critic_learning_rate=0.0456, lr_schedule="constant", total_steps=768, steps_per_epoch=256,
                eval_episodes=0, gamma=0.98, gae_lambda=0.8, n_epochs=20)
    rates = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append([group["lr"] for opt in pl_module.optimizers() for group in opt.param_groups])

    L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, callbacks=[Probe()]).fit(model, ckpt_path=last)
    assert rates and rates[0] == [0.123, 0.0456]


def test_a_checkpoint_of_other_shapes_is_refused_in_python_too(ppo_run):
    _, last = ppo_run
    model = PPO(env="CartPole-v1", num_envs=8, hidden_sizes=[32], total_steps=1024, eval_episodes=0)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    with pytest.raises(CheckpointError, match=r"hidden_sizes: \[64, 64\] -> \[32\]"):
        trainer.fit(model, ckpt_path=last)


# ---------------------------------------------------------------------- damaged and foreign files
def damaged(tmp_path: Path, good: Path, damage: str) -> Path:
    bad = tmp_path / f"{damage}.ckpt"
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[:4000])
    elif damage == "random":
        bad.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
                        .numpy().tobytes())
    elif damage == "foreign":
        torch.save({"state_dict": {"layer.weight": torch.zeros(2)}, "epoch": 3}, bad)
    return bad


DAMAGES = [
    ("empty", "the file is empty"),
    ("truncated", "is not a zip archive"),
    ("random", "is not a zip archive"),
    ("foreign", "was not written by rl_lightning"),
    ("missing", "does not exist"),
]


@pytest.mark.parametrize("damage, expected", DAMAGES)
def test_a_damaged_or_foreign_checkpoint_is_one_line_naming_the_file(ppo_run, tmp_path, damage, expected):
    _, last = ppo_run
    bad = damaged(tmp_path, last, damage)
    proc = command(tmp_path, "fit", "--config", str(CONFIGS / "ppo_cartpole.yaml"),
                   f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={bad}")
    assert proc.returncode == 2
    line = error_line(proc)
    assert f"checkpoint '{bad}'" in line and expected in line
    assert sorted(written_files(tmp_path)) == sorted([bad] if bad.exists() else [])


@pytest.mark.parametrize("damage, expected", DAMAGES)
@pytest.mark.parametrize("subcommand", ["validate", "test", "export"])
def test_every_command_names_a_damaged_or_foreign_checkpoint(ppo_run, tmp_path, monkeypatch, capsys, damage,
                                                             expected, subcommand):
    # The same entry point as the command, in this process (each subprocess would spend seconds on imports).
    from rl_lightning.cli import main

    _, last = ppo_run
    bad = damaged(tmp_path, last, damage)
    monkeypatch.chdir(tmp_path)
    args = (["--output", str(tmp_path / "policy.onnx")] if subcommand == "export" else
            ["--config", str(CONFIGS / "ppo_cartpole.yaml"), f"--trainer.default_root_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_:
        main([subcommand, *args, f"--ckpt_path={bad}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rl-lightning: error: ")]
    assert len(lines) == 1 and f"checkpoint '{bad}'" in lines[0] and expected in lines[0], err
    assert sorted(written_files(tmp_path)) == sorted([bad] if bad.exists() else [])


# ---------------------------------------------------------------------- the command's own options
def test_help_lists_what_works(tmp_path):
    proc = command(tmp_path, "--help")
    assert proc.returncode == 0
    subcommands = proc.stdout[proc.stdout.index("Available subcommands"):]
    for name in ("fit", "validate", "test", "export", "configs"):
        assert f"\n    {name} " in subcommands
    assert "predict" not in subcommands


def test_version_and_configs(tmp_path):
    proc = command(tmp_path, "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("rl-lightning 0.") and "lightning 2." in proc.stdout
    proc = command(tmp_path, "configs")
    assert proc.returncode == 0
    listed = [line.split()[0] for line in proc.stdout.splitlines()[:-2] if line.strip()]
    assert listed == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert "PPO on CartPole-v1" in proc.stdout


def test_export_last_takes_the_newest_run(ppo_run, tmp_path):
    pytest.importorskip("onnx")
    folder, last = ppo_run
    proc = command(folder, "export", "--ckpt_path=last", "--logs", str(folder / "run"), "--output",
                   str(tmp_path / "policy.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert f"Exporting {last}" in proc.stdout and (tmp_path / "policy.onnx").is_file()
    proc = command(tmp_path, "export", "--ckpt_path=last", "--output", str(tmp_path / "x.onnx"))
    assert proc.returncode == 2 and "no last.ckpt under 'lightning_logs'" in error_line(proc)


def test_which_settings_may_change_with_a_checkpoint():
    from rl_lightning import DDPG, DQN
    from rl_lightning.checkpointing import settings_differences

    saved = dict(PPO(env="unity", env_kwargs={"file_name": "old/Game.x86_64", "worker_id": 1}).hparams)
    current = {**saved, "env_kwargs": {"file_name": "new/Game.x86_64", "worker_id": 7}, "total_steps": 10**6,
               "eval_episodes": 3, "learning_rate": 1e-4}
    blocking, changed = settings_differences(PPO, "PPO", saved, current, resuming=True)
    assert blocking == []
    assert sorted(c.split(":")[0] for c in changed) == ["env_kwargs", "eval_episodes", "learning_rate", "total_steps"]
    assert "env_kwargs: {'file_name': 'old/Game.x86_64', 'worker_id': 1} -> {'file_name': 'new/Game.x86_64'" in changed[0]
    # The env copies matter to resume a fit (its saved envs and rollouts), not to evaluate.
    current = {**saved, "num_envs": 4, "hidden_sizes": [8]}
    assert sorted(settings_differences(PPO, "PPO", saved, current, resuming=True)[0]) == [
        "hidden_sizes: [64, 64] -> [8]", "num_envs: 1 -> 4"]
    assert settings_differences(PPO, "PPO", saved, current, resuming=False)[0] == ["hidden_sizes: [64, 64] -> [8]"]
    # Each family adds its own: the replay buffer's size to resume, DDPG's critic layout to load at all.
    saved = dict(DDPG(env="Pendulum-v1").hparams)
    blocking, _ = settings_differences(DDPG, "DDPG", saved, {**saved, "critic_action_layer": 1, "buffer_size": 10},
                                       resuming=False)
    assert blocking == ["critic_action_layer: 0 -> 1"]
    assert settings_differences(DQN, "DDPG", saved, saved, resuming=False) == (["algorithm: DDPG -> DQN"], [])
