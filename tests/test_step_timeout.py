"""step_timeout bounds a Gymnasium env's steps: a hung step ends the run with one line naming the env, in time."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl_lightning import PPO
from rl_lightning.envs.checks import EnvStepTimeout
from rl_lightning.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]


def hanging_ppo(vectorization: str, **kwargs) -> PPO:
    from toy_envs import HangingEnv

    HangingEnv.steps_taken = 0
    return PPO(env="toy_envs:HangingEnv", env_kwargs=dict(terminate_at=20, hang_after=150), num_envs=2,
               vectorization=vectorization, n_steps=16, batch_size=32, n_epochs=1, hidden_sizes=[8],
               total_steps=10_000, steps_per_epoch=64, eval_episodes=0, check_env=False, step_timeout=1.0, **kwargs)


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_a_step_that_never_returns_ends_fit_after_step_timeout_naming_the_env(vectorization, tmp_path):
    import lightning as L

    model = hanging_ppo(vectorization)
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    start = time.monotonic()
    with pytest.raises(EnvStepTimeout, match=r"^env='toy_envs:HangingEnv': .*within step_timeout=1 s") as error:
        trainer.fit(model)
    elapsed = time.monotonic() - start
    if vectorization == "async":
        assert "sub-env(s) 0, 1 did not return from step()" in str(error.value)
    assert elapsed < 20, elapsed
    assert model.envs is None  # closed (async: the hung workers killed, else close would wait for them)
    last = next(tmp_path.rglob("last.ckpt"))
    # The last epoch end's: the one process's 150th step hangs (sync), or each worker's own (async: 300 in all).
    assert torch.load(last, weights_only=True)["rl_lightning"]["env_steps"] == (128 if vectorization == "sync" else 256)


def test_the_cli_reports_a_hung_step_in_one_line(tmp_path):
    args = [sys.executable, "-m", "rl_lightning", "fit", "--config", str(ROOT / "configs/ppo_cartpole.yaml"),
            "--model.init_args.env=toy_envs:HangingEnv", "--model.init_args.env_kwargs={terminate_at: 20, hang_after: 600}",
            "--model.init_args.check_env=false", "--model.init_args.step_timeout=0.5",
            "--model.init_args.eval_episodes=0", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "tests"), "PATH": ""})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert ("rl-lightning: error: env='toy_envs:HangingEnv': a step did not return within step_timeout=0.5 s (sync "
            "envs)") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_step_timeout_is_refused_for_a_vector_env_of_its_own():
    with pytest.raises(ConfigurationError, match=r"set env_kwargs.timeout_wait instead, and step_timeout to null"):
        PPO(env="unity", step_timeout=5.0, env_kwargs=dict(file_name="rl-lightning-unity-player")).make_envs()
