import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# As the rl-lightning command does: one torch thread suits the suite's small networks, and keeps the
# tests' speed steady when players or other processes share the cores.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]

# Tests that take minutes (train to a return, start process groups, run notebooks): left out of a plain
# `pytest` so that it stays the quick suite; `pytest --all` (what .ci/run runs) or `-m <marker>` selects them.
SLOW_MARKERS = ("learning", "ddp", "notebooks", "slow")


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="also run the slow tests (markers: " + ", ".join(SLOW_MARKERS) + "), as CI does")


def _named_files(config) -> set[Path]:
    """Test files given on the command line by name (a file or a node id, not a folder): run whatever they hold."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return set()
    files = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path.is_file():
            files.add(path)
    return files


# Unity agent ids come in two regimes (rl_lightning/unity/player.py): "kept", an agent keeps its id across
# episodes (com.unity.ml-agents 2.x, the player's default), and "per-episode", a new id at every episode (early
# 2020 packages, and builds that re-enable their agents at each episode). Every test that starts players runs in
# both: through the `unity` and `vector_env` fixtures (tests/test_unity_player.py), or by asking for
# `agent_id_regime` itself (the tests that start players by another route: training runs, configs, resume).
# To keep the quick suite under 10 minutes, per-episode cases run only under --all (as CI does), -m or a named
# file, except in the files that test the agent-to-row mapping itself (ID_MAPPING_FILES); there too, the tests
# marked `one_id_regime_in_quick_suite` run it only under --all: the expensive ones that exercise no id the regime changes (one
# episode or none, failures of the process, bad settings, spaces), and the training runs whose episode ends the
# cheap tests of the same file already cover in both regimes. The regime matters in the agent-to-row mapping
# (decisions, lifecycle, autoreset, stats, curricula), and those tests run in both regimes everywhere.
AGENT_ID_REGIMES = ("kept", "per-episode")


@pytest.fixture(params=AGENT_ID_REGIMES)
def agent_id_regime(request, monkeypatch):
    """The test once per agent-id regime: every player it starts, by whatever route, plays that regime."""
    from rl_lightning.unity.player import ID_REGIME_VARIABLE

    monkeypatch.setenv(ID_REGIME_VARIABLE, request.param)
    return request.param


# The files whose tests exercise the agent-to-row mapping itself: their per-episode cases stay in the quick suite.
ID_MAPPING_FILES = {"test_unity_player.py", "test_unity_decisions.py", "test_unity_lifecycle.py", "test_unity_stats.py"}


def _run_per_episode_case_only_with_all(items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (callspec is not None and callspec.params.get("agent_id_regime") == "per-episode"
                and (item.get_closest_marker("one_id_regime_in_quick_suite")
                     or Path(item.path).name not in ID_MAPPING_FILES)):
            item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config, items):
    _run_per_episode_case_only_with_all(items)
    # An explicit -m expression, --all, or naming a test file decides by itself; otherwise slow tests are deselected.
    if config.getoption("run_all") or config.getoption("markexpr"):
        return
    named = _named_files(config)
    keep, slow = [], []
    for item in items:
        is_slow = any(item.get_closest_marker(m) for m in SLOW_MARKERS) and Path(item.path).resolve() not in named
        (slow if is_slow else keep).append(item)
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = keep
        config._rl_slow_deselected = len(slow)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_rl_slow_deselected", 0)
    if n:
        terminalreporter.write_line(f"{n} slow tests ({', '.join(SLOW_MARKERS)}) not run: add --all to run them "
                                    "(CI does), or -m <marker> for one kind")


# What a test run may leave in the working tree: the venv, caches, build metadata.
_ALLOWED_PARTS = {".venv", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}


def _untracked_files() -> set[str] | None:
    """Untracked and ignored files in the repository (folders expanded), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "-z"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = set()
    for entry in filter(None, out.split("\0")):
        status, rel = entry[:2], entry[3:]
        if status not in ("??", "!!"):
            continue
        parts = Path(rel).parts
        if _ALLOWED_PARTS.intersection(parts) or any(p.endswith(".egg-info") for p in parts):
            continue
        path = ROOT / rel
        if path.is_dir():  # git lists a new folder once; a run adds files inside folders that already exist
            for folder, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if d not in _ALLOWED_PARTS]
                files.update(str(Path(folder, n).relative_to(ROOT)) for n in names)
        else:
            files.add(rel.rstrip("/"))
    return files


@pytest.fixture(scope="session", autouse=True)
def repository_stays_clean():
    """Fails the session if tests left files in the repository: outputs belong in ``tmp_path``."""
    before = _untracked_files()
    yield
    after = _untracked_files()
    if before is not None and after is not None and (new := sorted(after - before)):
        shown = "\n  ".join(new[:20]) + (f"\n  ... and {len(new) - 20} more" if len(new) > 20 else "")
        pytest.fail(f"the tests wrote into the repository ({ROOT}):\n  {shown}\n"
                    "write into tmp_path (Trainer(default_root_dir=tmp_path), subprocess cwd=tmp_path)",
                    pytrace=False)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """LightningCLI compares its ``args`` with ``sys.argv``; tests call it in-process with pytest's argv."""
    monkeypatch.setattr(sys, "argv", ["rl-lightning"])
