"""Evaluation episodes recorded as videos, from the CLI and from Python; evaluation-only wrappers."""

import re
from pathlib import Path

import pytest

from rl_lightning import PPO, evaluate
from rl_lightning.cli import main
from rl_lightning.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp_path):
    return [f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--model.init_args.total_steps=512",
            "--model.init_args.steps_per_epoch=512"]


def test_validate_records_each_evaluation_episode_with_wrappers_the_checkpoint_did_not_have(tmp_path, capsys):
    config = ["--config", str(ROOT / "configs/ppo_cartpole.yaml"), *tiny(tmp_path)]
    main(["fit", *config, "--model.init_args.eval_episodes=1"])
    capsys.readouterr()
    videos = tmp_path / "videos"
    # An evaluation-only wrapper (it keeps the spaces) and the recorder: neither is in the checkpoint's settings.
    main(["validate", *config, "--ckpt_path=last", "--model.init_args.eval_episodes=3",
          "--model.init_args.eval_num_envs=2", f"--model.init_args.eval_video_folder={videos}",
          "--model.init_args.eval_wrappers=[{class_path: gymnasium.wrappers.TimeLimit, "
          "init_args: {max_episode_steps: 30}}]"])
    out = capsys.readouterr().out
    assert "over 3 episodes (mean length" in out
    files = sorted(p.name for p in videos.glob("*.mp4"))
    # Three episodes over two copies: each copy's first, and a second of one of them (which one depends on which
    # ends first; a copy may finish one more than counted). No file for the episodes cut short when it ended.
    assert {"copy0-episode-0.mp4", "copy1-episode-0.mp4"} <= set(files) and 3 <= len(files) <= 4, files
    assert all(re.fullmatch(r"copy[01]-episode-\d\.mp4", f) for f in files)
    assert all((videos / f).stat().st_size > 1000 for f in files)


def test_python_evaluate_records_videos_and_refuses_unity(tmp_path):
    model = PPO(env="CartPole-v1", n_steps=32, batch_size=32, total_steps=64, steps_per_epoch=64, eval_episodes=1)
    model.setup("validate")  # networks (an untrained policy is enough to record)
    result = evaluate(model, "CartPole-v1", n_episodes=2, video_folder=tmp_path / "v")
    assert len(result.returns) == 2
    assert sorted(p.name for p in (tmp_path / "v").glob("*.mp4")) == ["copy0-episode-0.mp4", "copy0-episode-1.mp4"]
    with pytest.raises(ConfigurationError, match="is a vector env of its own, whose episodes cannot be recorded"):
        PPO(env="unity", eval_video_folder=str(tmp_path / "u"),
            env_kwargs=dict(file_name="rl-lightning-unity-player")).make_envs(evaluation=True)
