"""Training under Lightning's precision plugins (``Trainer(precision=...)``, see ``rl_lightning.precision``).

Short CPU fits of PPO, DQN, DDPG, SAC, TD3 and DiscreteSAC under "bf16-mixed", "64-true" and "bf16-true": each finishes its
budget, the networks get their observations in the module's dtype, and gradient clipping holds (every optimizer step
sees a gradient norm at most ``max_grad_norm``).
"""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from rl_lightning import DDPG, DQN, PPO, SAC, TD3, DiscreteSAC
from rl_lightning.errors import ConfigurationError

warnings.filterwarnings("ignore", message=r".*(GPU available|bf16|AMP|16-mixed).*")

MAX_NORM = 1e-3  # far below any raw gradient norm of these networks: every step is clipped

RUNS = {
    "PPO": lambda **kw: PPO(env="CartPole-v1", num_envs=2, n_steps=64, batch_size=64, n_epochs=2, **kw),
    "DQN": lambda **kw: DQN(env="CartPole-v1", num_envs=2, train_freq=4, gradient_steps=2, batch_size=32,
                            learning_starts=128, buffer_size=2000, **kw),
    "DDPG": lambda **kw: DDPG(env="Pendulum-v1", num_envs=2, batch_size=32, learning_starts=128, buffer_size=2000,
                              **kw),
    "SAC": lambda **kw: SAC(env="Pendulum-v1", num_envs=2, batch_size=32, learning_starts=128, buffer_size=2000,
                            **kw),
    "TD3": lambda **kw: TD3(env="Pendulum-v1", num_envs=2, batch_size=32, learning_starts=128, buffer_size=2000,
                            **kw),
    "DiscreteSAC": lambda **kw: DiscreteSAC(env="CartPole-v1", num_envs=2, train_freq=4, gradient_steps=2,
                                            batch_size=32, learning_starts=128, buffer_size=2000, **kw),
}
DTYPES = {"bf16-mixed": torch.float32, "64-true": torch.float64, "bf16-true": torch.bfloat16}


class GradientNorms(L.Callback):
    """Records the gradient norm each optimizer steps with (after clipping: Lightning calls this hook in the step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.stepped: set[int] = set()  # ids of the optimizers that stepped

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.stepped.add(id(optimizer))
        grads = [p.grad.double() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def first_linear_inputs(model: L.LightningModule) -> list[torch.dtype]:
    """Records the dtype of every input of the model's first Linear layers (one per network)."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda m, args: seen.append((args[0].dtype, m.weight.dtype)))
    return seen


def fit(model: L.LightningModule, precision: str | None = None, callbacks=(), plugins=None, tmp_path=None):
    trainer = L.Trainer(max_epochs=-1, precision=precision, plugins=plugins, callbacks=list(callbacks),
                        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("precision", list(DTYPES))
@pytest.mark.parametrize("algo", list(RUNS))
def test_fit_under_precision_clips_and_feeds_the_module_dtype(algo, precision, tmp_path):
    model = RUNS[algo](total_steps=2048, steps_per_epoch=1024, eval_episodes=1, eval_num_envs=1, hidden_sizes=[16],
                       max_grad_norm=MAX_NORM, seed=1)
    norms = GradientNorms()
    trainer = fit(model, precision, [norms], tmp_path=tmp_path)
    assert model.env_steps == 2048
    dtype = DTYPES[precision]
    params = list(model.parameters())
    assert all(p.dtype == dtype for p in params)
    assert all(bool(torch.isfinite(p).all()) for p in params)
    # Clipping is on: every step's gradient norm is at most max_grad_norm (bf16 rounding: a few per cent).
    assert len(norms.norms) > 10
    assert max(norms.norms) <= MAX_NORM * (1.05 if dtype == torch.bfloat16 else 1.0 + 1e-6), max(norms.norms)
    # Every optimizer stepped (a critic, or SAC's temperature, that never moves would pass the checks above).
    assert norms.stepped == {id(opt) for opt in trainer.optimizers}
    # Mixed precision clips with multi-tensor optimizers (MixedPrecision refuses fused ones); the rest stay fused.
    assert all(bool(opt.defaults.get("fused")) == (precision != "bf16-mixed") for opt in trainer.optimizers)
    # Acting after training: observations go in as the env gives them, actions come out as NumPy.
    obs = model.observation_space.sample()
    seen = first_linear_inputs(model)
    action = np.asarray(model.act(obs))
    assert model.action_space.contains(action.astype(model.action_space.dtype))
    assert seen and all(got == weight for got, weight in seen), seen


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_observations_reach_the_networks_in_the_module_dtype_during_fit(precision, tmp_path):
    model = PPO(env="CartPole-v1", num_envs=2, n_steps=32, batch_size=32, n_epochs=1, total_steps=128,
                steps_per_epoch=128, eval_episodes=1, eval_num_envs=1, hidden_sizes=[8])

    class Watch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.seen = first_linear_inputs(pl_module)

    watch = Watch()
    fit(model, precision, [watch], tmp_path=tmp_path)
    assert watch.seen and {got for got, _ in watch.seen} == {DTYPES[precision]}


def test_obs_to_tensor_follows_the_module_dtype_and_keeps_images_uint8():
    model = PPO(env="CartPole-v1")
    assert model.obs_to_tensor(np.zeros(4, np.float32)).dtype == torch.float32
    model.double()
    assert model.obs_to_tensor(np.zeros(4, np.float32)).dtype == torch.float64
    got = model.obs_to_tensor({"image": np.zeros((8, 8, 3), np.uint8), "goal": np.zeros(2, np.float32)})
    assert got["image"].dtype == torch.uint8 and got["goal"].dtype == torch.float64


def test_default_precision_keeps_fused_optimizers(tmp_path):
    model = RUNS["PPO"](total_steps=128, steps_per_epoch=128, eval_episodes=0, hidden_sizes=[8])
    trainer = fit(model, None, tmp_path=tmp_path)
    assert all(opt.defaults.get("fused") for opt in trainer.optimizers)
    # bf16-mixed without clipping: Lightning clips nothing, the optimizers may stay fused.
    model = RUNS["PPO"](total_steps=128, steps_per_epoch=128, eval_episodes=0, hidden_sizes=[8], max_grad_norm=None)
    trainer = fit(model, "bf16-mixed", tmp_path=tmp_path)
    assert all(opt.defaults.get("fused") for opt in trainer.optimizers)


def test_16_mixed_with_a_loss_scaler_refuses_clipping_before_training(tmp_path):
    # On the CPU Lightning turns precision="16-mixed" into "bf16-mixed"; the plugin itself has the scaler a GPU gets.
    model = RUNS["DQN"](total_steps=256, steps_per_epoch=256, eval_episodes=0, hidden_sizes=[8])
    with pytest.raises(ConfigurationError, match=r"precision='16-mixed' with max_grad_norm=10.0.*max_grad_norm=None"):
        fit(model, plugins=[MixedPrecision("16-mixed", "cpu")], tmp_path=tmp_path)
    assert model.env_steps == 0
    model = RUNS["DQN"](total_steps=256, steps_per_epoch=256, eval_episodes=0, hidden_sizes=[8], max_grad_norm=None)
    fit(model, plugins=[MixedPrecision("16-mixed", "cpu")], tmp_path=tmp_path)
    assert model.env_steps == 256
