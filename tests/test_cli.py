"""The rl-lightning command: configs, --print_config, fit/validate/test, TensorBoard output."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def tiny(tmp_path: Path, total_steps: int = 512) -> list[str]:
    return [f"--model.init_args.total_steps={total_steps}", "--model.init_args.steps_per_epoch=256",
            "--model.init_args.eval_episodes=2", "--model.init_args.eval_num_envs=2",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=run",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_print_config_round_trips(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code in (None, 0)
    first = capsys.readouterr().out
    assert "class_path: rl_lightning." in first
    printed = tmp_path / "printed.yaml"
    printed.write_text(first)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(printed), "--print_config"])
    assert capsys.readouterr().out == first


def test_unknown_config_key_is_rejected_by_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs/ppo_cartpole.yaml").read_text().replace("n_epochs: 20", "n_epochz: 20"))
    proc = subprocess.run([sys.executable, "-m", "rl_lightning", "fit", "--config", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "n_epochz" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_setting_from_cli_fails_with_its_name_before_training(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rl_lightning", "fit", "--config", str(ROOT / "configs/ppo_cartpole.yaml"),
                           "--model.init_args.batch_size=1000", *tiny(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "batch_size=1000 must be between 1 and the rollout size" in proc.stderr
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_fit_then_test_logs_against_env_steps(tmp_path, capsys):
    main(["fit", "--config", str(ROOT / "configs/ppo_cartpole.yaml"), *tiny(tmp_path)])
    assert "Evaluation after 512 env steps" in capsys.readouterr().out
    logged = scalars(tmp_path / "run")
    for tag in ("run/score", "run/episode_length", "model/actor_loss", "model/critic_loss",
                "time/steps_per_second", "model/approx_kl", "eval/return_mean", "eval/return_std",
                "eval/length_mean"):
        assert tag in logged, tag
    # The x-axis is environment steps: one point per 256-step rollout, evaluations at epoch ends.
    assert sorted(s for s, _ in logged["model/actor_loss"]) == [256, 512]
    assert sorted(s for s, _ in logged["eval/return_mean"]) == [256, 512]

    ckpt = next((tmp_path / "run").rglob("*.ckpt"))
    main(["test", "--config", str(ROOT / "configs/ppo_cartpole.yaml"), *tiny(tmp_path), f"--ckpt_path={ckpt}"])
    out = capsys.readouterr().out
    assert "eval/return_mean" in out


@pytest.mark.parametrize("algorithm", ["PPO", "A2C", "DQN", "DDPG"])
def test_help_documents_every_hyperparameter(algorithm, capsys):
    import rl_lightning

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", algorithm])
    text = capsys.readouterr().out
    for name in getattr(rl_lightning, algorithm)().hparams:
        match = re.search(rf"--model\.{name} [^\n]*\n\s+(\S[^\n]*)", text)
        assert match, name
        assert not match.group(1).startswith("(type:"), f"{name} has no description"


@pytest.mark.parametrize("switch", [["--config", str(ROOT / "configs/dqn_cartpole.yaml")], ["--model", "rl_lightning.DQN"]],
                         ids=["second_config", "model_option"])
def test_changing_the_algorithm_says_which_settings_were_dropped(switch, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/ppo_cartpole.yaml"), *switch, "--print_config"])
    captured = capsys.readouterr()
    assert "class_path: rl_lightning.DQN" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("Warning: the model changed")]
    assert warnings == ["Warning: the model changed from rl_lightning.PPO to rl_lightning.DQN (a later --config or "
                        "--model): rl_lightning.PPO's settings n_steps, n_epochs, gae_lambda, lr_schedule, clip_range, "
                        "clip_range_schedule, ent_coef, vf_coef do not apply to DQN and were dropped; the settings both "
                        "take carry over"]


def test_one_algorithm_from_several_configs_warns_of_nothing(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/ppo_cartpole.yaml"), "--config",
              str(ROOT / "configs/ppo_lunarlander.yaml"), "--print_config"])
    assert "Warning" not in capsys.readouterr().err
