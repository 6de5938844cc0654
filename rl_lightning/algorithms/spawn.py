"""Weights loaded into a model that has no networks yet, as after ``Trainer(strategy="ddp_spawn").fit``.

Under ``ddp_spawn`` the ranks train in spawned processes, each on its own copy of the model; the model object in the
launching process never runs ``setup``, so it has no envs and no networks (they are built from the env's spaces).
Lightning sends the trained weights back as rank 0's ``state_dict`` only (``_collect_rank_zero_results`` in
``lightning/pytorch/strategies/launchers/multiprocessing.py`` saves it to a temporary file) and loads them with
``load_state_dict(..., strict=False)`` (``_recover_results_in_main_process``), which would silently skip every
network weight. ``build_networks_before_loading``, a ``load_state_dict`` pre-hook of every ``RLModule``, builds the
networks first, from the spaces of one evaluation env made from the model's settings and closed again, so the
weights land and ``act``, ``evaluate`` and ``save_checkpoint`` work in the launching process.

Loading a checkpoint (``load_from_checkpoint``, ``ckpt_path``) is untouched: ``on_load_checkpoint`` builds the
networks from the spaces saved in it before Lightning loads the state dict, so the hook finds them built.
"""

from __future__ import annotations

from typing import Any

import torch


def build_networks_before_loading(module: Any, state_dict: dict[str, torch.Tensor], prefix: str,
                                  *args: Any, **kwargs: Any) -> None:
    """``load_state_dict`` pre-hook: if ``module`` has no networks and ``state_dict`` holds weights it lacks, build
    its networks from its env's spaces (see the module docstring). Does nothing otherwise."""
    if module.observation_space is not None:
        return
    own = set(module.state_dict(prefix=prefix))
    if not any(key.startswith(prefix) and key not in own for key in state_dict):
        return
    envs = module.make_envs(evaluation=True)
    try:
        module._attach_spaces(envs.single_observation_space, envs.single_action_space)
        module._note_env_spaces(envs)
    finally:
        envs.close()
