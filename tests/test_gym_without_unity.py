"""Gymnasium runs never import mlagents_envs: they work when it cannot be imported (e.g. after another package
upgraded protobuf past the 3.20 that mlagents-envs 0.28 needs), and a Unity run then says what to install."""

import subprocess
import sys

from test_cli import ROOT, tiny

# Every import of mlagents_envs fails, as it does beside a newer protobuf (`pip install mlflow-skinny`). Then the
# command runs in this process, and the modules it loaded are listed at the end.
BLOCKED = """
import importlib.abc, sys

class NoMlagents(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mlagents_envs":
            raise ImportError(f"{name} cannot be imported here")
        return None

sys.meta_path.insert(0, NoMlagents())
from rl_lightning.cli import main

for command in COMMANDS:
    sys.argv = ["rl-lightning", *command]
    try:
        main()
    except SystemExit as exit_:
        print(f"exit {exit_.code} from {command[0]}", flush=True)
print("mlagents modules:", sorted(m for m in sys.modules if m.startswith("mlagents")))
"""


def run_blocked(tmp_path, commands):
    return subprocess.run([sys.executable, "-c", BLOCKED.replace("COMMANDS", repr(commands))], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_every_gym_command_works_without_mlagents_envs(tmp_path):
    config = ["--config", str(ROOT / "configs/ppo_cartpole.yaml"), *tiny(tmp_path, total_steps=256)]
    commands = [["fit", *config], ["validate", *config, "--ckpt_path=last"], ["test", *config, "--ckpt_path=last"],
                ["export", "--ckpt_path=last", f"--logs={tmp_path}", f"--output={tmp_path / 'plain.onnx'}"],
                ["export", "--ckpt_path=last", f"--logs={tmp_path}", f"--output={tmp_path / 'unity.onnx'}",
                 "--format=mlagents"],
                ["configs"], ["--version"]]
    proc = run_blocked(tmp_path, commands)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "exit" not in proc.stdout, out[-3000:]
    assert "Evaluation after 256 env steps" in proc.stdout
    assert (tmp_path / "plain.onnx").is_file() and (tmp_path / "unity.onnx").is_file()
    assert "ppo_cartpole" in proc.stdout  # configs
    assert "mlagents-envs 0.28.0" in proc.stdout  # --version reads the installed version's metadata only
    assert proc.stdout.rstrip().endswith("mlagents modules: []")


def test_a_unity_run_without_mlagents_envs_says_what_to_install(tmp_path):
    proc = run_blocked(tmp_path, [["fit", "--config", str(ROOT / "configs/ppo_unity_cartpole.yaml"),
                                   f"--trainer.logger.init_args.save_dir={tmp_path}"]])
    assert "exit 2 from fit" in proc.stdout
    error = [line for line in proc.stderr.splitlines() if line.startswith("rl-lightning: error:")]
    assert error == ["rl-lightning: error: env='unity' needs mlagents-envs 0.28.0 with protobuf 3.20.x, which failed "
                     "to import (ImportError: mlagents_envs cannot be imported here): pip install "
                     "mlagents-envs==0.28.0 protobuf==3.20.3, or use a virtual env of its own for Unity runs if "
                     "another package needs a newer protobuf"]
    assert "Traceback" not in proc.stderr
