"""Lightning's precision plugins (``Trainer(precision=...)``) and what the library adapts to them.

What each plugin does, read in Lightning 2.6's source (``lightning/pytorch/plugins/precision/``):

- ``"32-true"``: the base ``Precision`` (``precision.py``); nothing to adapt, and ``GradientStepper`` takes its
  direct route with fused optimizers.
- ``"bf16-mixed"`` / ``"16-mixed"``: ``MixedPrecision`` (``amp.py``) runs the forward passes under
  ``torch.autocast``; the weights stay float32. Its ``clip_gradients`` refuses an optimizer that unscales inside its
  own ``step`` (``_optimizer_handles_unscaling``: the fused ones), so with ``max_grad_norm`` set the library builds
  multi-tensor (``foreach``) optimizers instead. ``"16-mixed"`` adds a ``GradScaler`` whose ``unscale_`` Lightning
  calls inside ``optimizer_step``, i.e. after ``LightningModule.clip_gradients`` ran on the still scaled gradients
  under manual optimization (which every algorithm here uses), and calling ``unscale_`` first ourselves makes that
  second call raise: clipping is refused there (``check_precision``), unclipped ``"16-mixed"`` runs.
- ``"64-true"``: ``DoublePrecision`` (``double.py``) turns the module into float64 (``convert_module``) and makes
  float64 the default dtype inside the step hooks (``forward_context``).
- ``"bf16-true"`` / ``"16-true"``: ``HalfPrecision`` (``half.py``) does the same with bfloat16 / float16.

Under the ``-true`` plugins the envs' float observations are cast to the module's dtype (``RLModule.obs_to_tensor``,
and the encoders for stored batches: ``rl_lightning.networks.encoders``); uint8 images stay uint8 until the encoder
scales them. Stored rollouts and replay buffers keep float32 observations and rewards.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from rl_lightning.errors import ConfigurationError
from rl_lightning.lightning_compat import attached_trainer


def precision_plugin(module: L.LightningModule) -> Any | None:
    """The precision plugin of the Trainer ``module`` runs in, or ``None`` outside any Trainer."""
    trainer = attached_trainer(module)
    return trainer.strategy.precision_plugin if trainer is not None else None


def check_precision(module: L.LightningModule) -> None:
    """Refuse, before training, a precision the module's settings cannot train under (see the module docstring)."""
    plugin = precision_plugin(module)
    if (isinstance(plugin, MixedPrecision) and getattr(plugin, "scaler", None) is not None
            and module.hparams.get("max_grad_norm") is not None):
        raise ConfigurationError(
            f"precision={plugin.precision!r} with max_grad_norm={module.hparams.max_grad_norm}: its loss scaler "
            "unscales the gradients only inside the optimizer step, after Lightning clipped the scaled ones, so "
            "clipping would be wrong; use precision='bf16-mixed' (no scaler) or set max_grad_norm=None")


def fused_optimizers_allowed(module: L.LightningModule) -> bool:
    """Whether ``make_optimizer`` may build fused optimizers for ``module``: not when a ``MixedPrecision`` plugin
    would clip their gradients (its ``clip_gradients`` refuses fused ones); also checks the precision first
    (``check_precision``). Outside a Trainer (and under 32-bit precision) fused ones are allowed, as always."""
    check_precision(module)
    plugin = precision_plugin(module)
    return not (isinstance(plugin, MixedPrecision) and module.hparams.get("max_grad_norm") is not None)


def host_array(tensor: torch.Tensor) -> np.ndarray:
    """``tensor`` as a NumPy array on the host; bfloat16 and float16 (which NumPy lacks, or envs do not take) as
    float32. A float32 tensor comes out exactly as ``tensor.cpu().numpy()``."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()
