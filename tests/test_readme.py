"""The README works as written on a fresh install: its Python snippets run, its commands name real files and programs.

README conventions this file reads:
- ``<!-- not run: why -->`` on the line before a ```` ```python ```` block: the block is not executed (say why).
- ``<!-- test: OLD -> NEW -->`` (several allowed, ``;``-separated) on the line before a block: the test replaces
  the text OLD by NEW before running it, e.g. to shrink a training budget. OLD must occur in the block.
  ``{free_worker_id}`` in NEW becomes a Unity ``worker_id`` whose port (5005 + id) is free.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the environment's scripts (rl-lightning, tensorboard), as activation puts on PATH

# Programs the README may call that are not this package's console scripts.
SYSTEM_COMMANDS = {"python3", "python", "pip", "source", "cd", "srun", "torchrun"}


def readme_blocks(language: str) -> list[tuple[int, str, str]]:
    """``(line number, code, HTML comment on the line before or "")`` of each fenced block in ``language``."""
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            before = lines[start - 1].strip() if start and lines[start - 1].strip().startswith("<!--") else ""
            blocks.append((start + 1, "\n".join(lines[start + 1:j]), before))
            i = j
        i += 1
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def prepared(code: str, note: str) -> str | None:
    """The block as the test runs it: None if marked not run, else with the note's substitutions made."""
    if note.startswith("<!-- not run:"):
        return None
    if note.startswith("<!-- test:"):
        for rule in note.removeprefix("<!-- test:").removesuffix("-->").split(";"):
            old, new = (part.strip() for part in rule.split("->"))
            assert old in code, f"README test note {note!r}: {old!r} is not in the block below it"
            code = code.replace(old, new.replace("{free_worker_id}", str(free_port() - 5005)))
    return code


def activated_env() -> dict[str, str]:
    """The environment of a shell with this virtual environment activated."""
    return dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), MPLBACKEND="Agg",
                OMP_NUM_THREADS="1")


def test_python_snippets_run_as_written_one_after_another(tmp_path):
    """Each snippet runs alone, in a fresh interpreter, in one folder (a later one may read what an earlier wrote)."""
    blocks = readme_blocks("python")
    assert len(blocks) >= 3
    ran = 0
    for line, code, note in blocks:
        code = prepared(code, note)
        if code is None:
            continue
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=activated_env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"README.md line {line}: the snippet failed:\n{proc.stderr[-3000:]}"
        ran += 1
    assert ran == len(blocks)  # nothing is marked "not run" today; a marked block needs a reason in its note
    # What the snippets promise to write, where the next one looks for it.
    assert (tmp_path / "ppo.ckpt").is_file()
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "eval.png").is_file()


def test_snippet_notes_apply_and_unmarked_snippets_are_runnable():
    """A ``test:`` note whose OLD text is gone from its block fails here, fast, not only in the slow run."""
    for line, code, note in readme_blocks("python"):
        assert not note or note.startswith(("<!-- not run:", "<!-- test:")), f"line {line}: unknown note {note!r}"
        prepared(code, note)
        compile(code, f"README.md:{line}", "exec")


def shell_commands() -> list[tuple[int, list[str]]]:
    """Each simple command of the README's bash blocks, as tokens (comments, redirections and pipes removed)."""
    commands = []
    for line, code, _ in readme_blocks("bash"):
        code = code.replace("\\\n", " ")
        for text in code.splitlines():
            if text.lstrip().startswith("#"):  # a comment, or a #SBATCH directive
                continue
            tokens = shlex.split(text, comments=True)
            current: list[str] = []
            for token in tokens + ["&&"]:
                if token in ("&&", "||", ";", "|"):
                    if current:
                        commands.append((line, current))
                    current = []
                elif token.startswith(">") or (current and current[-1] == ">"):
                    continue
                else:
                    current.append(token)
    return commands


def test_shell_commands_name_installed_programs_and_existing_files():
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    known_extras = set(extras["options.extras_require"])
    scripts = {line.split("=")[0].strip() for line in extras["options.entry_points"]["console_scripts"].splitlines()
               if "=" in line}
    commands = shell_commands()
    assert len(commands) > 20
    for line, tokens in commands:
        program = tokens[0]
        if program == "srun":
            program, tokens = tokens[1], tokens[1:]
        where = f"README.md line {line}: {' '.join(tokens)}"
        if program not in SYSTEM_COMMANDS:
            assert (BIN / program).is_file(), f"{where}: {program} is not installed in {BIN}"
        if program.startswith("rl-lightning"):
            assert program in scripts, f"{where}: {program} is not a console script in setup.cfg"
        for token in tokens:
            if re.fullmatch(r"(configs|benchmarks|notebooks|tests)/[\w./-]+", token):
                assert (ROOT / token).exists(), f"{where}: {token} does not exist"
            if extra := re.fullmatch(r"\.\[(\w+)\]", token):
                assert extra[1] in known_extras, f"{where}: setup.cfg has no extra {extra[1]!r}"
        if program in ("python", "python3") and len(tokens) > 1 and tokens[1].endswith(".py"):
            assert (ROOT / tokens[1]).is_file(), f"{where}: {tokens[1]} does not exist"


def test_tensorboard_command_starts_and_serves_a_runs_scalars(tmp_path):
    """`tensorboard --logdir lightning_logs` from the README starts on this install and shows a logged scalar.

    tensorboard 2.20's command imports ``pkg_resources`` (tensorboard/default.py), gone from setuptools >= 82;
    setup.cfg caps setuptools for it.
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path / "lightning_logs", name="run")
    logger.log_metrics({"run/score": 12.5}, step=256)
    logger.finalize("success")
    stderr = tmp_path / "tensorboard.log"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", "lightning_logs", "--port", "0",
                                 "--host", "127.0.0.1"], cwd=tmp_path, stdout=err, stderr=err)
    try:
        deadline, url = time.monotonic() + 90, None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if found := re.search(r"TensorBoard \S+ at (http://\S+/) ", stderr.read_text()):
                url = found[1]
        assert url, f"tensorboard did not start:\n{stderr.read_text()[-2000:]}"
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"<tb-webapp>" in page.read()
        tags = b""
        while b"run/score" not in tags and time.monotonic() < deadline:  # the logdir is read in the background
            time.sleep(0.5)
            with urllib.request.urlopen(url + "data/plugin/scalars/tags", timeout=30) as page:
                tags = page.read()
        assert b"run/score" in tags, tags
    finally:
        proc.terminate()
        proc.wait(timeout=30)
