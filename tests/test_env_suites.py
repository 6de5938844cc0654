"""Third-party env suites: packages imported before the env (env_packages, 'package:EnvId'), spaces recorded as the
algorithm sees them, and a conv stack small images fit (MiniGrid)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_lightning import PPO
from rl_lightning.cli import main
from rl_lightning.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
minigrid = pytest.importorskip("minigrid")


def quiet(tmp_path):
    return [f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]


def test_the_minigrid_config_trains_and_saves_a_checkpoint(tmp_path, capsys):
    # The env's own observation space holds a MissionSpace (text), which a checkpoint cannot describe: the run
    # trained a whole epoch, then failed saving it. The model's spaces (after the wrappers) are what is recorded.
    main(["fit", "--config", str(ROOT / "configs/ppo_minigrid_doorkey.yaml"), "--model.init_args.total_steps=2048",
          "--model.init_args.steps_per_epoch=1024", "--model.init_args.eval_episodes=1", *quiet(tmp_path)])
    assert "Evaluation after 2048 env steps" in capsys.readouterr().out
    last = next(tmp_path.rglob("last.ckpt"))
    state = torch.load(last, weights_only=True)["rl_lightning"]
    assert state["env_steps"] == 2048 and state["observation_space"]["shape"] == [2835]
    assert PPO.load_from_checkpoint(last).observation_space.shape == (2835,)


def test_small_images_train_with_a_conv_stack_of_their_own(tmp_path, capsys):
    args = ["fit", "--model=PPO", "--model.env=MiniGrid-DoorKey-5x5-v0", "--model.env_packages=[minigrid]",
            "--model.wrappers=[minigrid.wrappers.ImgObsWrapper]", "--model.total_steps=512",
            "--model.steps_per_epoch=512", "--model.n_steps=64", "--model.num_envs=2", "--model.eval_episodes=1",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]
    with pytest.raises(SystemExit) as exit_:  # Nature DQN's 8x8 first kernel does not fit a 7x7 view
        main(args)
    assert exit_.value.code == 2
    assert "image observations of shape (7, 7, 3) are too small for the conv layers [[32, 8, 4]" in \
        capsys.readouterr().err
    main([*args, "--model.cnn_layers=[[16, 2, 1], [32, 2, 1], [64, 2, 1]]"])
    model = PPO.load_from_checkpoint(next(tmp_path.rglob("last.ckpt")))
    assert [m.kernel_size for m in model.policy.actor_body.conv if isinstance(m, torch.nn.Conv2d)] == [(2, 2)] * 3


@pytest.mark.slow  # two fresh processes: under --all
def test_env_packages_and_the_package_prefix_register_an_unimported_suite(tmp_path):
    # In a fresh process, where nothing imported minigrid yet.
    script = """
from rl_lightning import PPO
from rl_lightning.errors import ConfigurationError
try:
    PPO(env="MiniGrid-Empty-5x5-v0")
except ConfigurationError as err:
    print("REFUSED", err)
print("PACKAGES", PPO(env="MiniGrid-Empty-5x5-v0", env_packages=["minigrid"]).hparams.env)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path).stdout
    assert ("REFUSED env='MiniGrid-Empty-5x5-v0' is not a registered Gymnasium env id; see "
            "`gymnasium.pprint_registry()` for the registered ids; an env suite registers its ids when imported: "
            "name its package in env_packages (e.g. env_packages: [minigrid]) or write the id as 'package:EnvId'") in out
    assert "PACKAGES MiniGrid-Empty-5x5-v0" in out
    prefixed = subprocess.run([sys.executable, "-c", "from rl_lightning import PPO; "
                               "print(PPO(env='minigrid:MiniGrid-Empty-5x5-v0').hparams.env)"],
                              capture_output=True, text=True, cwd=tmp_path)
    assert prefixed.stdout.strip() == "minigrid:MiniGrid-Empty-5x5-v0", prefixed.stderr[-2000:]
    with pytest.raises(ConfigurationError, match=r"^env_packages: module 'no_such_suite' could not be imported "
                                                 r"\(No module named 'no_such_suite'\): pip install no_such_suite$"):
        PPO(env="CartPole-v1", env_packages=["no_such_suite"])
