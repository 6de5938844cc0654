"""A run that would learn nothing is refused before training; one that a Trainer setting ends before total_steps
says so in its last line, with the env steps trained and why."""

from pathlib import Path

import pytest

from rl_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]


def config(name: str) -> list[str]:
    return ["--config", str(ROOT / "configs" / name)]


def quiet(tmp_path: Path) -> list[str]:
    return [f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]


REFUSED = {
    "td3_warmup_longer_than_budget": (config("td3_pendulum.yaml") + ["--model.init_args.total_steps=4096"],
                                      "learning_starts=10000 >= total_steps=4096: the run would only fill the replay "
                                      "buffer and never update the networks"),
    "dqn_warmup_longer_than_budget": (config("dqn_cartpole.yaml") + ["--model.init_args.total_steps=1000"],
                                      "learning_starts=1000 >= total_steps=1000"),
    "sac_warmup_longer_than_budget": (config("sac_pendulum.yaml") + ["--model.init_args.total_steps=200",
                                                                     "--model.init_args.steps_per_epoch=200"],
                                      "learning_starts=256 >= total_steps=200"),
    "policy_delay_never_reached": (config("td3_pendulum.yaml") + [
        "--model.init_args.total_steps=1024", "--model.init_args.learning_starts=1000",
        "--model.init_args.policy_delay=50"], "policy_delay=50 is more than the 25 critic updates the budget makes"),
    "limit_train_batches_0": (config("ppo_cartpole.yaml") + ["--trainer.limit_train_batches=0"],
                              "trainer.limit_train_batches=0 trains nothing"),
    "max_epochs_0": (config("ppo_cartpole.yaml") + ["--trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
    "max_steps_0": (config("ppo_cartpole.yaml") + ["--trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_run_that_would_learn_nothing_is_refused_with_one_line(case, tmp_path, capsys):
    args, message = REFUSED[case]
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, *quiet(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("rl-lightning: error: ")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert not list(tmp_path.rglob("*.ckpt"))


EARLY = {
    "early_stopping": (["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=eval/return_mean",
                        "--trainer.callbacks.mode=max", "--trainer.callbacks.patience=1",
                        "--trainer.callbacks.min_delta=1000"],
                       "after 1024 of total_steps=4096 env steps (25%): EarlyStopping(monitor='eval/return_mean') "
                       "stopped it at epoch 1"),
    "max_epochs": (["--trainer.max_epochs=1"], "after 512 of total_steps=4096 env steps (12%): trainer.max_epochs=1 "
                                               "was reached"),
    "limit_train_batches": (["--trainer.limit_train_batches=1"],
                            "after 2048 of total_steps=4096 env steps (50%): trainer.limit_train_batches=1 cut every epoch short"),
}


@pytest.mark.parametrize("case", EARLY)
def test_a_run_ended_early_by_a_trainer_setting_says_so_in_its_last_line(case, tmp_path, capsys):
    args, message = EARLY[case]
    main(["fit", *config("ppo_cartpole.yaml"), "--model.init_args.total_steps=4096",
          "--model.init_args.steps_per_epoch=512", "--model.init_args.eval_episodes=1", *quiet(tmp_path), *args])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Training stopped early, after "), last
    assert message in last


def test_a_run_that_spends_its_budget_says_nothing_of_stopping_early(tmp_path, capsys):
    main(["fit", *config("ppo_cartpole.yaml"), "--model.init_args.total_steps=512",
          "--model.init_args.steps_per_epoch=512", "--model.init_args.eval_episodes=1", *quiet(tmp_path)])
    out = capsys.readouterr().out
    assert "stopped early" not in out and out.strip().splitlines()[-1].startswith("Evaluation after 512 env steps")
