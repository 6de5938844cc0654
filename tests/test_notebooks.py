"""The notebooks run top to bottom (small budgets through their parameters cell) and produce what they promise."""

import socket
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from rl_lightning import read_scalars

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def one_thread_kernels(monkeypatch):
    # Kernels inherit the environment: one torch thread, as the rl-lightning command and the suite use.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run_notebook(name: str, workdir: Path, **parameters) -> nbformat.NotebookNode:
    """Execute a notebook in ``workdir`` with its ``parameters`` cell replaced by ``parameters``."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    cells[0].source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def assert_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01  # a drawing, not a blank page
    return image


def assert_only_out_dir_written(workdir: Path) -> None:
    """Everything a notebook writes lands in its OUT_DIR folder (git-ignored under notebooks/), nothing beside it."""
    assert sorted(p.name for p in workdir.iterdir()) == ["out"]


@pytest.mark.notebooks
def test_quickstart_trains_plots_a_rising_curve_evaluates_and_reloads(tmp_path):
    nb = run_notebook("quickstart", tmp_path, TOTAL_STEPS=30_000, OUT_DIR="out")
    assert_png(tmp_path / "out" / "quickstart_curve.png")
    steps, returns = read_scalars(tmp_path / "out" / "quickstart" / "version_0", "run/score")
    assert steps[-1] >= 29_000
    third = len(returns) // 3
    assert returns[:3].mean() < 60 and returns[-third:].mean() > 150  # rising: CartPole starts near 20
    text = outputs_text(nb)
    assert "over 10 episodes" in text and "one episode with the reloaded policy:" in text
    assert (tmp_path / "out" / "ppo_cartpole.ckpt").is_file()
    assert (tmp_path / "out" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert_only_out_dir_written(tmp_path)


@pytest.mark.notebooks
def test_unity_notebook_trains_and_tests_through_the_protocol(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        worker_id = s.getsockname()[1] - 5004
    nb = run_notebook("unity_dodge", tmp_path, TOTAL_STEPS=4096, WORKER_ID=worker_id, OUT_DIR="out")
    assert "'eval/return_mean'" in outputs_text(nb)
    assert_png(tmp_path / "out" / "unity_dodge_curve.png")
    assert_only_out_dir_written(tmp_path)


@pytest.mark.notebooks
def test_comparison_notebook_plots_the_three_algorithms(tmp_path):
    run_notebook("compare_cartpole", tmp_path, TOTAL_STEPS=5_000, OUT_DIR="out")
    assert_png(tmp_path / "out" / "compare_cartpole.png")
    assert_only_out_dir_written(tmp_path)
    for algo in ("ppo", "a2c", "dqn"):
        steps, _ = read_scalars(tmp_path / "out" / f"compare_{algo}" / "version_0", "eval/return_mean")
        assert len(steps) >= 5 and 5_000 <= steps[-1] < 5_000 + 256  # PPO rounds epochs up to whole rollouts


@pytest.mark.parametrize("name", ["quickstart", "unity_dodge", "compare_cartpole"])
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebook_outputs_go_to_a_git_ignored_folder():
    """Run from notebooks/ as Jupyter does, the default OUT_DIR is a folder git ignores."""
    for name in ("quickstart", "unity_dodge", "compare_cartpole"):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        namespace: dict = {}
        exec(cell.source, namespace)
        out = NOTEBOOKS / namespace["OUT_DIR"] / "x.png"
        proc = subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=NOTEBOOKS)
        assert proc.returncode == 0, f"{name}: {out} is not git-ignored"
