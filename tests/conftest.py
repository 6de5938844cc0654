import sys

import pytest
import torch

# As the rl-lightning command does: one torch thread suits the suite's small networks, and keeps the
# tests' speed steady when players or other processes share the cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """LightningCLI compares its ``args`` with ``sys.argv``; tests call it in-process with pytest's argv."""
    monkeypatch.setattr(sys, "argv", ["rl-lightning"])
