"""``Trainer(strategy="ddp_spawn")``: 2 CPU processes (gloo) train, and the model in the launching process comes back
with the trained networks (rl_lightning/algorithms/spawn.py)."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from rl_lightning import DQN, PPO

warnings.filterwarnings("ignore", message=r".*(GPU available|does not have many workers|num_workers).*")


@pytest.mark.ddp  # 2 processes: the slow suite (pytest --all, -m ddp)
def test_ddp_spawn_leaves_the_trained_networks_in_the_launching_process(tmp_path):
    model = PPO(env="CartPole-v1", num_envs=2, n_steps=32, batch_size=32, n_epochs=2, total_steps=512,
                steps_per_epoch=256, eval_episodes=1, eval_num_envs=1, hidden_sizes=[8], seed=3)
    assert model.observation_space is None
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(max_epochs=-1, strategy="ddp_spawn", devices=2, accelerator="cpu", logger=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, callbacks=[checkpoints],
                        default_root_dir=tmp_path)
    trainer.fit(model)
    # Rank 0 saved its last weights at the final epoch's end; the launching process holds exactly those.
    saved = PPO.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert saved.env_steps == 512
    got, expected = model.state_dict(), saved.state_dict()
    assert got.keys() == expected.keys() and len(got) > 0
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    fresh = PPO(env="CartPole-v1", hidden_sizes=[8], seed=3)
    fresh.setup("validate")
    fresh.close_envs()
    assert not all(torch.equal(fresh.state_dict()[k], expected[k]) for k in expected)  # it did train
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.act(obs), saved.act(obs))
    trainer.save_checkpoint(tmp_path / "main.ckpt")  # the launching process can save what it holds
    np.testing.assert_array_equal(PPO.load_from_checkpoint(tmp_path / "main.ckpt").act(obs), saved.act(obs))


def test_weights_loaded_into_a_model_without_networks_build_them_first():
    # The same path without processes: what Lightning's launcher does with rank 0's state_dict (strict=False).
    trained = DQN(env="CartPole-v1", hidden_sizes=[8], seed=1)
    trained.setup("validate")
    trained.close_envs()
    model = DQN(env="CartPole-v1", hidden_sizes=[8], seed=2)
    result = model.load_state_dict(trained.state_dict(), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert model.observation_space == trained.observation_space
    obs = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.act(obs), trained.act(obs))
