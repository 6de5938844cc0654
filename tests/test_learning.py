"""Learning tests: fixed seeds and budgets, checked on the evaluation return."""

from pathlib import Path

import pytest

from rl_lightning.cli import RLLightningCLI

ROOT = Path(__file__).resolve().parents[1]


def fit(config: str, tmp_path: Path, *overrides: str):
    cli = RLLightningCLI(args=["fit", "--config", str(ROOT / "configs" / config), *overrides,
                               f"--trainer.logger.init_args.save_dir={tmp_path}",
                               "--trainer.enable_progress_bar=false"])
    return cli.model


@pytest.mark.learning
def test_ppo_cartpole_config_reaches_475_within_100k_steps(tmp_path):
    model = fit("ppo_cartpole.yaml", tmp_path, "--model.init_args.seed=1")
    assert model.env_steps <= 100_096
    assert len(model.last_evaluation.returns) == 20
    assert model.last_evaluation.return_mean >= 475
