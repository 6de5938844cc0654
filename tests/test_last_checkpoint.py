"""last.ckpt is the run's latest state whatever checkpoint callbacks the config or the Python Trainer brings."""

import importlib.util
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from rl_lightning import DQN
from rl_lightning.callbacks import LastCheckpoint
from rl_lightning.cli import main
from test_unity_configs import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
EPOCH = 256


def env_steps(path: Path) -> int:
    return torch.load(path, weights_only=True)["rl_lightning"]["env_steps"]


def shrunk(config: Path, tmp_path: Path) -> tuple[Path, int]:
    """The config on a 3-epoch budget, logging under ``tmp_path``. Off-policy runs warm up for the first epoch and a
    bit (no optimizer step: Lightning's own ModelCheckpoint never saves then) and update in the others."""
    data = yaml.safe_load(config.read_text())
    args = data["model"]["init_args"]
    num_envs = args.get("num_envs", 1)
    if data["model"]["class_path"].endswith(("PPO", "A2C")):
        args["n_steps"] = 8
        if data["model"]["class_path"].endswith("PPO"):
            args.update(batch_size=8 * num_envs, n_epochs=1)
    else:
        args.update(learning_starts=EPOCH + EPOCH // 4, train_freq=16, gradient_steps=1, batch_size=32,
                    buffer_size=4 * EPOCH)
    if args.get("env") == "unity":
        args["env_kwargs"].update(worker_id=0, base_port=free_port(), timeout_wait=30)
        args["eval_env_kwargs"].update(worker_id=0, base_port=free_port())
    # Whole rounds of 8 steps of 1, 8 or 16 sub-envs (Unity: agents) in an epoch.
    args.update(total_steps=3 * EPOCH, steps_per_epoch=EPOCH, eval_episodes=1, eval_num_envs=1)
    data["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    data["trainer"].update(enable_progress_bar=False, enable_model_summary=False)
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(data))
    return path, 3 * EPOCH


def needs(config: Path) -> str | None:
    if "halfcheetah" in config.name and importlib.util.find_spec("mujoco") is None:
        return "MuJoCo is not installed (pip install -e '.[mujoco]')"
    return None


def _unity(config: Path) -> bool:
    return "env: unity" in config.read_text()


# The Unity configs start players (5-10 s each): under --all; tests/test_unity_configs.py checks their last.ckpt
# in the quick suite.
@pytest.mark.parametrize("config", [pytest.param(c, marks=pytest.mark.slow) if _unity(c) else c for c in CONFIGS],
                         ids=lambda p: p.stem)
def test_every_shipped_config_leaves_last_ckpt_at_the_final_env_step(config, tmp_path, capsys):
    if needs(config):
        pytest.skip(needs(config))
    path, total = shrunk(config, tmp_path)
    main(["fit", "--config", str(path)])
    assert f"Evaluation after {total} env steps" in capsys.readouterr().out
    lasts = list(tmp_path.rglob("last*.ckpt"))
    assert [p.name for p in lasts] == ["last.ckpt"]  # one writer: no last-v1.ckpt beside it
    assert env_steps(lasts[0]) == total


def test_a_monitored_checkpoint_that_stops_improving_does_not_hold_last_ckpt_back(tmp_path):
    # The DQN config's own ModelCheckpoint(monitor=eval/return_mean, save_last=True): here the evaluation peaks at
    # 1536 env steps, after which Lightning alone never rewrote last.ckpt (it stayed at 1536 of 2048).
    main(["fit", "--config", str(ROOT / "configs/dqn_cartpole.yaml"), "--model.init_args.total_steps=2048",
          "--model.init_args.steps_per_epoch=512", "--model.init_args.eval_episodes=2",
          "--model.init_args.learning_starts=600", f"--trainer.logger.init_args.save_dir={tmp_path}",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    checkpoints = next(tmp_path.rglob("checkpoints"))
    best = next(checkpoints.glob("best-*.ckpt"))
    assert env_steps(checkpoints / "last.ckpt") == 2048
    assert env_steps(best) < 2048  # the case this test is about: the best was not the last epoch


def small_dqn(**kwargs) -> DQN:
    return DQN(env="CartPole-v1", total_steps=3 * EPOCH, steps_per_epoch=EPOCH, learning_starts=EPOCH + 64,
               train_freq=16, gradient_steps=1, batch_size=32, buffer_size=1024, eval_episodes=1, eval_num_envs=1,
               hidden_sizes=[16], **kwargs)


def python_trainer(tmp_path: Path, callbacks: list, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=-1, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                     logger=TensorBoardLogger(tmp_path, name="run"), callbacks=callbacks, **kwargs)


CHECKPOINT_SETUPS = {
    "lightning_default": lambda: [],
    "monitored_with_save_last": lambda: [ModelCheckpoint(monitor="eval/return_mean", mode="max", save_last=True)],
    "monitored_without_save_last": lambda: [ModelCheckpoint(monitor="eval/return_mean", mode="max")],
    "every_epoch_with_save_last": lambda: [ModelCheckpoint(save_last=True)],
    "last_checkpoint": lambda: [LastCheckpoint()],
}


@pytest.mark.parametrize("setup", CHECKPOINT_SETUPS)
def test_a_python_trainer_gets_a_current_last_ckpt_with_any_checkpoint_callbacks(setup, tmp_path):
    model = small_dqn()
    trainer = python_trainer(tmp_path, CHECKPOINT_SETUPS[setup]())
    trainer.fit(model)
    lasts = list(tmp_path.rglob("last*.ckpt"))
    assert [p.name for p in lasts] == ["last.ckpt"]
    assert env_steps(lasts[0]) == model.env_steps == 3 * EPOCH
    assert sum(isinstance(cb, LastCheckpoint) for cb in trainer.callbacks) == 1
    # A second fit on the same trainer does not add another one.
    trainer.fit(small_dqn(), ckpt_path=str(lasts[0]))
    assert sum(isinstance(cb, LastCheckpoint) for cb in trainer.callbacks) == 1


def test_no_checkpointing_asked_for_writes_no_last_ckpt(tmp_path):
    trainer = python_trainer(tmp_path, [], enable_checkpointing=False)
    trainer.fit(small_dqn())
    assert not list(tmp_path.rglob("*.ckpt"))


class SigtermAt(L.Callback):
    """Sends this process SIGTERM at the end of the batch that passes ``env_steps``."""

    def __init__(self, env_steps: int) -> None:
        self.env_steps, self.sent_at = env_steps, None

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self.sent_at is None and pl_module.env_steps >= self.env_steps:
            self.sent_at = pl_module.env_steps
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("setup", CHECKPOINT_SETUPS)
def test_sigterm_saves_the_current_state_to_last_ckpt_with_any_checkpoint_callbacks(setup, tmp_path):
    model = small_dqn()
    probe = SigtermAt(EPOCH + EPOCH // 2)  # mid-way through the second epoch, after updates started
    trainer = python_trainer(tmp_path, [*CHECKPOINT_SETUPS[setup](), probe])
    with pytest.raises(SystemExit) as stopped:
        trainer.fit(model)
    assert stopped.value.code == 143
    last = next(tmp_path.rglob("last.ckpt"))
    assert env_steps(last) == model.env_steps >= probe.sent_at > EPOCH
