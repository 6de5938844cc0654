"""Gradient steps for small networks: one fused optimizer kernel, and no per-step framework detours.

A PPO update on CartPole (two 64-unit MLPs, 256 samples) costs well under a millisecond of arithmetic,
so what surrounds it matters: the default CPU Adam loops over parameters in Python, and Lightning's
optimizer wrapper, precision plugin and hook dispatch added ~250-450 us per update in our measurements,
as much as the update itself. ``GradientStepper`` takes the direct route whenever that is equivalent,
and Lightning's own path otherwise.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from rl_lightning.guards import divergence_suspects, non_finite_loss
from rl_lightning.lightning_compat import count_optimizer_steps, optimizer_step_progress, plain_precision

# Hooks Lightning calls around every backward and optimizer step; the direct route skips them.
UPDATE_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def make_optimizer(cls: type[torch.optim.Optimizer], params: Iterable[torch.nn.Parameter],
                   allow_fused: bool = True, **kwargs: Any) -> torch.optim.Optimizer:
    """``cls(params, **kwargs)`` in its fastest form: fused (one kernel for all parameters) where the class and
    the parameters' device support it and ``allow_fused`` (``rl_lightning.precision.fused_optimizers_allowed``: not
    when a mixed-precision plugin clips), else multi-tensor (``foreach``). The arithmetic is the same."""
    params = list(params)
    accepted = inspect.signature(cls).parameters
    if allow_fused and "fused" in accepted and "fused" not in kwargs and "foreach" not in kwargs:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # older torch (CPU fused needs 2.4) or a device without fused kernels
            pass
    if "foreach" in accepted and "foreach" not in kwargs:
        kwargs["foreach"] = True
    return cls(params, **kwargs)


def _raw(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # LightningOptimizer wraps the torch optimizer


class GradientStepper:
    """``step(loss, optimizers, max_grad_norm)``: zero the grads, back-propagate, clip, step each optimizer.

    The direct route (plain ``backward``, ``clip_grad_norm_(foreach=True)``, the torch optimizer's ``step``)
    is taken when Lightning's route would do nothing more: 32-bit precision (no gradient scaler), and no
    module or callback overriding ``backward`` or the per-update hooks. The strategy's ``pre_backward`` /
    ``post_backward`` still run (DDP prepares its gradient reduction there), and ``trainer.global_step``
    still counts optimizer steps (``max_steps`` and step-based checkpointing keep working).
    Otherwise every call goes through ``manual_backward``, ``clip_gradients`` and the Lightning optimizer.
    """

    def __init__(self, module: L.LightningModule) -> None:
        self.module = module
        trainer = module.trainer
        self.strategy = trainer.strategy
        callbacks_hook = any(is_overridden(h, cb, L.Callback) for cb in trainer.callbacks for h in UPDATE_HOOKS)
        module_hook = any(is_overridden(h, module, L.LightningModule) for h in (*UPDATE_HOOKS, "backward"))
        self.direct = plain_precision(self.strategy) and not callbacks_hook and not module_hook
        self._progress = optimizer_step_progress(trainer)
        self._params: dict[int, list[torch.Tensor]] = {}

    def _params_of(self, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        params = self._params.get(id(optimizer))
        if params is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self._params[id(optimizer)] = params
        return params

    def _check_finite(self, loss: torch.Tensor, norms: Sequence[torch.Tensor] = ()) -> None:
        """Raise ``NonFiniteLoss`` unless the loss and the gradient norms are finite: one test of their sum.

        On the CPU reading a scalar costs about a microsecond; elsewhere the sum is one device operation and the
        test one host sync per gradient step.
        """
        if loss.device.type == "cpu":
            total = loss.detach().item()
            for norm in norms:
                total += norm.item()
            finite = math.isfinite(total)
        else:
            flag = loss.detach()
            for norm in norms:
                flag = flag + norm
            finite = bool(torch.isfinite(flag))
        if not finite:
            raise non_finite_loss("loss or its gradient norm", getattr(self.module, "env_steps", 0),
                                  divergence_suspects(self.module))

    def gradient_step(self, loss: torch.Tensor, optimizers: Sequence[Any], max_grad_norm: float | None) -> None:
        """Zero the grads, back-propagate, clip, step; a non-finite loss (or gradient norm) raises ``NonFiniteLoss``
        before any optimizer steps, so the weights stay as they were."""
        module = self.module
        if not self.direct:
            # The loss only: under a mixed-precision plugin, inf gradients are the loss scaler's business (it skips
            # that step and lowers its scale), not a fault.
            self._check_finite(loss)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            module.manual_backward(loss)
            for opt in optimizers:
                if max_grad_norm is not None:
                    module.clip_gradients(opt, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
            return
        raw = [_raw(opt) for opt in optimizers]
        for opt in raw:
            opt.zero_grad(set_to_none=True)
        self.strategy.pre_backward(loss)
        loss.backward()
        self.strategy.post_backward(loss)
        # Every optimizer's gradients are clipped before any of them steps (their parameters are disjoint, so the
        # order changes nothing), so one test of the loss and all norms comes before the first step.
        norms = [torch.nn.utils.clip_grad_norm_(self._params_of(opt), max_grad_norm, foreach=True)
                 for opt in raw] if max_grad_norm is not None else []
        self._check_finite(loss, norms)
        for opt in raw:
            opt.step()
            count_optimizer_steps(self._progress)
