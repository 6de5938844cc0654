import sys

import pytest


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """LightningCLI compares its ``args`` with ``sys.argv``; tests call it in-process with pytest's argv."""
    monkeypatch.setattr(sys, "argv", ["rl-lightning"])
