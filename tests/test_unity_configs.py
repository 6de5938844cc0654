"""The seed configs that run through the Unity protocol: fit then test, on tiny budgets, from the CLI."""

import socket
from pathlib import Path

import pytest
import torch
import yaml

from rl_lightning import DDPG, DQN, PPO, SAC, DiscreteSAC
from rl_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def shrunk(config: str, tmp_path: Path, **init_args) -> Path:
    """The config with free ports (tests run in parallel), a tiny budget, and logs under ``tmp_path``."""
    data = yaml.safe_load((ROOT / "configs" / config).read_text())
    args = data["model"]["init_args"]
    args["env_kwargs"].update(worker_id=0, base_port=free_port(), timeout_wait=20)
    args["eval_env_kwargs"].update(worker_id=0, base_port=free_port())
    args.update(init_args)
    data["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    data["trainer"].update(enable_progress_bar=False, enable_model_summary=False)
    path = tmp_path / config
    path.write_text(yaml.safe_dump(data))
    return path


# Every config runs in both agent-id regimes (conftest.py); the quick suite runs PPO on Dodge (agents spawning,
# leaving and shuffled) in both, the other four in the default regime only (lifecycle tests cover replay).
ONE_REGIME = pytest.mark.one_id_regime_in_quick_suite


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.parametrize(("config", "algorithm", "init_args"), [
    pytest.param("dqn_gridworld.yaml", DQN, dict(total_steps=96, steps_per_epoch=48, learning_starts=32,
                                                 buffer_size=64, eval_episodes=2), marks=ONE_REGIME),
    pytest.param("ddpg_drone.yaml", DDPG, dict(total_steps=96, steps_per_epoch=48, learning_starts=32, batch_size=32,
                                               eval_episodes=2), marks=ONE_REGIME),
    ("ppo_dodge.yaml", PPO, dict(total_steps=256, steps_per_epoch=128, n_steps=16, batch_size=64, eval_episodes=2)),
    pytest.param("sac_drone.yaml", SAC, dict(total_steps=96, steps_per_epoch=48, learning_starts=32, batch_size=32,
                                             eval_episodes=2), marks=ONE_REGIME),
    pytest.param("discrete_sac_dodge.yaml", DiscreteSAC, dict(total_steps=256, steps_per_epoch=128,
                                                              learning_starts=64, batch_size=32, buffer_size=512,
                                                              eval_episodes=2), marks=ONE_REGIME),
], ids=["dqn_gridworld", "ddpg_drone", "ppo_dodge", "sac_drone", "discrete_sac_dodge"])
def test_seed_config_fits_and_tests_through_the_player(config, algorithm, init_args, tmp_path, capsys):
    path = shrunk(config, tmp_path, **init_args)
    main(["fit", "--config", str(path)])
    out = capsys.readouterr().out
    assert f"Evaluation after {init_args['total_steps']} env steps" in out
    last = next(tmp_path.rglob("last.ckpt"))
    model = algorithm.load_from_checkpoint(last)
    assert model.env_steps == init_args["total_steps"]
    if config == "dqn_gridworld.yaml":
        # The 6-channel goal image and the 4 moves of seed S1, as the network sees them.
        assert model.observation_space.shape == (64, 84, 6) and model.action_space.n == 4
    if config in ("ppo_dodge.yaml", "discrete_sac_dodge.yaml"):
        assert model.observation_space.shape == (122,) and model.action_space.n == 5
    main(["test", "--config", str(path), f"--ckpt_path={last}"])
    out = capsys.readouterr().out
    assert "eval/return_mean" in out
    if "dodge" not in config:
        assert "eval/success_rate" in out  # reported through success_reward (Unity sends no per-agent info)
    assert torch.load(last, weights_only=True)["rl_lightning"]["env_steps"] == init_args["total_steps"]
