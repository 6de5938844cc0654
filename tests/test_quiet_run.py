"""A run prints what it did and where its files are, not Lightning's advertisements and notices; evaluations
leave no run folders behind."""

import subprocess
import sys

import pytest

from test_cli import ROOT, scalars, tiny

NOISE = ("💡 Tip", "litlogger", "litmodels", "FLOPs", "Flops", "weights_only")


def command(tmp_path, *args):
    proc = subprocess.run([sys.executable, "-m", "rl_lightning", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # five processes, about 20 s
def test_fit_validate_test_print_no_lightning_tips_flops_or_hp_metric_and_evaluations_add_no_run_folder(tmp_path):
    config = ["--config", str(ROOT / "configs/ppo_cartpole.yaml"), *tiny(tmp_path, total_steps=256)]
    config.remove("--trainer.enable_model_summary=false")  # the summary is part of what a run prints
    fit = command(tmp_path, "fit", *config)
    out = fit.stdout + fit.stderr
    assert "Trainable params" in out
    run = tmp_path / "run" / "version_0"
    # Where the checkpoints are, then the final evaluation as the last line.
    *_, where, evaluation = fit.stdout.splitlines()
    assert where == f"Checkpoints: {run / 'checkpoints'} (last.ckpt, best-step=256.ckpt)"
    assert evaluation.startswith("Evaluation after 256 env steps: return ")
    assert "hp_metric" not in scalars(tmp_path / "run")
    for subcommand in ("validate", "test", "validate", "test"):
        evaluation = command(tmp_path, subcommand, *config, "--ckpt_path=last")
        out += evaluation.stdout + evaluation.stderr
    assert out.count("Evaluation after 256 env steps") == 5
    assert [line for line in out.splitlines() if any(noise in line for noise in NOISE)] == []
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["version_0"]
    assert not (tmp_path / "lightning_logs").exists()


def test_python_save_checkpoint_prints_no_weights_only_notice(tmp_path):
    script = ("import lightning as L\nfrom rl_lightning import PPO\n"
              "model = PPO(env='CartPole-v1', n_steps=32, batch_size=32, total_steps=64, steps_per_epoch=64, "
              "eval_episodes=0)\n"
              "trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False)\n"
              "trainer.fit(model)\ntrainer.save_checkpoint('ppo.ckpt')\nprint('saved')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "saved" in proc.stdout, out[-3000:]
    assert "Trainable params" in out  # the summary, without its FLOPs column
    assert [line for line in out.splitlines() if any(noise in line for noise in NOISE)] == []
