"""Input and run errors that the command reports as one line (exit 2 for bad input, 1 for a failed run), not a
traceback: unwritable outputs, a full disk, foreign or edited checkpoints, things that are not envs, envs that
raise, loggers, wrappers and packages that are missing, config files that hold no settings, a GPU that is not
there. Most cases run the command's entry point in this process; the file size limit needs a process of its own.
"""

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_cli import ROOT, tiny

from rl_lightning import PPO
from rl_lightning.checkpointing import AtomicCheckpointIO, CheckpointError
from rl_lightning.cli import main
from rl_lightning.envs.factory import make_vector_env
from rl_lightning.errors import ConfigurationError, EnvironmentFault, OutputWriteError
from rl_lightning.export import export_onnx

CONFIGS = ROOT / "configs"
PPO_CARTPOLE = str(CONFIGS / "ppo_cartpole.yaml")
QUICK = ["--model.init_args.total_steps=256", "--model.init_args.steps_per_epoch=256",
         "--model.init_args.eval_episodes=1", "--model.init_args.eval_num_envs=1",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
NO_LOGGER = [*QUICK, "--trainer.logger=false"]


# ---------------------------------------------------------------------- envs and wrappers that fail
class StepRaises(gym.Env):
    """Divides by zero at its 5th step."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.steps = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps >= 5:
            1 / 0  # noqa: B018
        return np.zeros(2, np.float32), 0.0, False, False, {}


class ResetRaises(StepRaises):
    def reset(self, seed=None, options=None):
        raise ZeroDivisionError("division by zero")


class RefusingWrapper(gym.Wrapper):
    def __init__(self, env):
        raise ValueError("this wrapper refuses")


def run(capsys, *args: str) -> tuple[int, str]:
    """The command's exit status and its one error line; fails unless stderr has exactly one and no traceback."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("rl-lightning: error: ")]
    assert len(lines) == 1, err
    return exit_.value.code, lines[0]


# ---------------------------------------------------------------------- folders and disks
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs: a real "no space left" (needs root, or is skipped)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write into: mode 0555, or (as root, who may write there anyway) a read-only
    tmpfs."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    mounted = False
    if os.access(folder, os.W_OK):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("cannot make a read-only folder here (root, and no mount)")
    yield folder
    if mounted:
        subprocess.run(["umount", str(folder)], check=False)
    folder.chmod(0o755)


def test_an_output_folder_that_is_a_file_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *QUICK, f"--trainer.logger.init_args.save_dir={file}")
    assert code == 2 and f"trainer.logger save_dir '{file}' is a file" in line
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *QUICK, "--trainer.logger=true",
                     f"--trainer.default_root_dir={file / 'runs'}")
    assert code == 2 and "trainer.default_root_dir" in line and f"lies under '{file}', which is a file" in line
    assert sorted(tmp_path.iterdir()) == [file]


def test_a_read_only_output_folder_is_one_line_before_training(read_only_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *QUICK,
                     f"--trainer.logger.init_args.save_dir={read_only_folder}")
    assert code == 2 and f"save_dir '{read_only_folder}'" in line and ("read-only" in line or "not writable" in line)
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *NO_LOGGER,
                     f"--trainer.default_root_dir={read_only_folder}")
    assert code == 2 and f"trainer.default_root_dir '{read_only_folder}'" in line


def test_a_full_disk_while_checkpointing_names_the_file_and_the_cause(small_disk, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *QUICK,
                     f"--trainer.logger.init_args.save_dir={small_disk}", "--trainer.logger.init_args.name=run")
    assert code == 1
    assert f"could not write checkpoint '{small_disk}/run/version_0/checkpoints/" in line and "no space left" in line


def test_a_failed_save_leaves_the_previous_checkpoint_and_says_so(small_disk):
    path = small_disk / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(4)}}, path)
    with pytest.raises(OutputWriteError, match="no space left.*the previous checkpoint there is unchanged"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(100_000)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(4))
    assert [p.name for p in small_disk.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_the_file_size_limit_is_told_apart_from_a_full_disk(tmp_path):
    # RLIMIT_FSIZE (ulimit -f): writes past it fail with EFBIG, as on a full disk torch only says "unexpected pos".
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's SIGXFSZ ends the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))

    script = ("from rl_lightning.checkpointing import AtomicCheckpointIO; import torch, sys;"
              "AtomicCheckpointIO().save_checkpoint({'w': torch.ones(100_000)}, sys.argv[1])")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "big.ckpt")], capture_output=True, text=True,
                          preexec_fn=limit_file_size, timeout=120)
    assert proc.returncode != 0
    assert "OutputWriteError: could not write checkpoint" in proc.stderr
    assert "file size limit (100000 bytes, ulimit -f)" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def last_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    main(["fit", "--config", PPO_CARTPOLE, *tiny(folder, total_steps=256)])
    return next(folder.rglob("last.ckpt"))


def edited(tmp_path: Path, last: Path, how: str) -> Path:
    path = tmp_path / f"{how}.ckpt"
    if how == "text":
        path.write_text("hello\n")  # torch's weights-only unpickler: KeyError 101 ('h')
        return path
    if how == "plain-dict":
        torch.save({"a": 1}, path)
        return path
    checkpoint = torch.load(last, weights_only=True)
    weights = checkpoint["state_dict"]
    if how == "missing-key":
        del weights["policy.actor_body.mlp.0.weight"]
    elif how == "other-shape":
        weights["policy.actor_body.mlp.0.weight"] = torch.zeros(3, 3)
    elif how == "extra-key":
        weights["extra.weight"] = torch.zeros(2)
    torch.save(checkpoint, path)
    return path


CHECKPOINTS = [
    ("text", "not a zip archive"),
    ("plain-dict", "was not written by rl_lightning"),
    ("missing-key", "the weights in checkpoint {path} do not fit the PPO model its settings build: it lacks "
                    "policy.actor_body.mlp.0.weight"),
    ("other-shape", "policy.actor_body.mlp.0.weight has shape (3, 3) where the model's has (64, 4)"),
    ("extra-key", "the model has no extra.weight"),
]


@pytest.mark.parametrize("how, expected", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
@pytest.mark.parametrize("subcommand", ["validate", "fit", "export"])
def test_a_foreign_or_edited_checkpoint_is_one_line(last_ckpt, tmp_path, monkeypatch, capsys, how, expected,
                                                    subcommand):
    monkeypatch.chdir(tmp_path)
    path = edited(tmp_path, last_ckpt, how)
    args = (["--output", str(tmp_path / "policy.onnx")] if subcommand == "export" else
            ["--config", PPO_CARTPOLE, *NO_LOGGER])
    code, line = run(capsys, subcommand, *args, f"--ckpt_path={path}")
    assert code == 2 and f"'{path}'" in line and expected.format(path=repr(str(path))) in line


def test_load_from_checkpoint_names_the_file_and_what_is_wrong(last_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="not a zip archive"):
        PPO.load_from_checkpoint(edited(tmp_path, last_ckpt, "text"))
    missing = edited(tmp_path, last_ckpt, "missing-key")
    with pytest.raises(CheckpointError, match=f"{missing}.*lacks policy.actor_body.mlp.0.weight"):
        PPO.load_from_checkpoint(missing)
    with pytest.warns(UserWarning, match="not in the checkpoint"):  # strict=False: Lightning's warning, as without us
        PPO.load_from_checkpoint(missing, strict=False)
    with pytest.raises(CheckpointError, match=r"shape \(3, 3\) where the model's has \(64, 4\)"):
        PPO.load_from_checkpoint(edited(tmp_path, last_ckpt, "other-shape"), strict=False)


# ---------------------------------------------------------------------- export
def test_export_to_a_folder_or_an_unwritable_path_is_one_line(last_ckpt, tmp_path, capsys):
    code, line = run(capsys, "export", f"--ckpt_path={last_ckpt}", f"--output={tmp_path}")
    assert code == 2 and f"output '{tmp_path}' is a folder" in line
    file = tmp_path / "a_file"
    file.write_text("")
    code, line = run(capsys, "export", f"--ckpt_path={last_ckpt}", f"--output={file / 'policy.onnx'}")
    assert code == 2 and f"its folder '{file}' is a file" in line
    with pytest.raises(ConfigurationError, match="is a folder"):
        export_onnx(PPO.load_from_checkpoint(last_ckpt), tmp_path)


def test_export_to_a_full_disk_is_one_line(last_ckpt, small_disk, capsys):
    (small_disk / "filler").write_bytes(b"\0" * 60_000)
    code, line = run(capsys, "export", f"--ckpt_path={last_ckpt}", f"--output={small_disk / 'policy.onnx'}")
    assert code == 1 and f"could not write exported policy '{small_disk / 'policy.onnx'}'" in line
    assert "no space left" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# ---------------------------------------------------------------------- envs
ENV_FAULTS = [
    ("StepRaises", [], ["sub-env 0 raised ZeroDivisionError: division by zero (in its step(), at step 5"]),
    ("StepRaises", ["--model.init_args.vectorization=async", "--model.init_args.num_envs=2",
                    "--model.init_args.batch_size=64"], ["raised ZeroDivisionError", "at step 5 of these envs"]),
    ("ResetRaises", [], ["sub-env 0 raised ZeroDivisionError", "in its reset(), before their first step"]),
]


@pytest.mark.parametrize("env, extra, expected", ENV_FAULTS, ids=["step", "step-async", "reset"])
def test_an_exception_inside_an_env_is_an_env_fault_naming_it(tmp_path, monkeypatch, capsys, env, extra, expected):
    monkeypatch.chdir(tmp_path)
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *NO_LOGGER, f"--model.init_args.env={__name__}:{env}",
                     "--model.init_args.check_env=false", *extra)
    assert code == 1 and f"env='{__name__}:{env}'" in line
    for words in expected:
        assert words in line


def test_an_env_fault_keeps_the_envs_own_traceback():
    envs = make_vector_env(StepRaises, num_envs=2)
    envs.reset(seed=0)
    for _ in range(4):
        envs.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(EnvironmentFault, match="sub-env 0 raised ZeroDivisionError") as raised:
        envs.step(np.zeros(2, dtype=np.int64))
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    envs.close()


SETUP_ERRORS = [
    (["--model.init_args.env=os:getcwd"], ["env='os:getcwd' returned a str", "not a Gymnasium env"]),
    (["--model.init_args.env=collections:OrderedDict"], ["class collections.OrderedDict, not a Gymnasium env"]),
    ([f"--model.init_args.wrappers=[{__name__}:RefusingWrapper]"],
     [f"wrappers entry '{__name__}:RefusingWrapper' failed to wrap the env: ValueError: this wrapper refuses"]),
    (["--model.init_args.wrappers=[no_such_module:Wrapper]"], ["'no_such_module:Wrapper' could not be imported"]),
    (["--trainer.logger.class_path=lightning.pytorch.loggers.WandbLogger"],
     ["WandbLogger needs a package that is not installed", "wandb"]),
]


@pytest.mark.parametrize("args, expected", SETUP_ERRORS, ids=["function", "class", "wrapper", "wrapper-path",
                                                                "logger"])
def test_what_is_not_an_env_or_cannot_be_built_is_one_line(tmp_path, monkeypatch, capsys, args, expected):
    if any("WandbLogger" in a for a in args) and _installed("wandb"):
        pytest.skip("wandb is installed")
    monkeypatch.chdir(tmp_path)
    base = QUICK if any("logger" in a for a in args) else NO_LOGGER
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *base, *args)
    assert code == 2
    for words in expected:
        assert words in line
    assert list(tmp_path.iterdir()) == []


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_missing_optional_package_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if not _installed("cv2"):
        code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *NO_LOGGER,
                         "--model.init_args.wrappers=[gymnasium.wrappers.AtariPreprocessing]")
        assert code == 2 and "AtariPreprocessing' needs a package that is not installed" in line
        assert "pip install" in line
    if not _installed("ale_py"):
        code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *NO_LOGGER, "--model.init_args.env=ALE/Pong-v5")
        assert code == 2 and "env='ALE/Pong-v5'" in line and "pip install ale-py" in line
        with pytest.raises(ConfigurationError, match="pip install ale-py"):
            PPO(env="ALE/Pong-v5")


def test_a_function_that_returns_no_env_fails_in_python_too():
    with pytest.raises(ConfigurationError, match="returned a str"):
        make_vector_env(os.getcwd)


# ---------------------------------------------------------------------- config files, trainer and settings
@pytest.mark.parametrize("text, expected", [("", "is empty"), ("- a\n- b\n", "holds a YAML list"),
                                            ("model: [open\n", "is not valid YAML at line 2")],
                         ids=["empty", "list", "broken"])
def test_a_config_file_without_settings_is_named(tmp_path, monkeypatch, capsys, text, expected):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    code, line = run(capsys, "fit", "--config", str(config))
    assert code == 2 and f"config file '{config}' {expected}" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_accelerator_without_a_gpu_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, line = run(capsys, "fit", "--config", PPO_CARTPOLE, *NO_LOGGER, "--trainer.accelerator=gpu")
    assert code == 2 and "trainer.accelerator='gpu'" in line and "use --trainer.accelerator cpu" in line


@pytest.mark.parametrize("config, setting, expected", [
    ("ppo_cartpole.yaml", "optimizer_eps=-1", "optimizer_eps: -1 must be > 0"),
    ("a2c_cartpole.yaml", "rmsprop_alpha=-0.5", "rmsprop_alpha: -0.5 must lie in [0, 1)"),
    ("sac_pendulum.yaml", "ent_coef=abc", "ent_coef='abc'"),
    ("discrete_sac_cartpole.yaml", "ent_coef=auto_abc", "ent_coef='auto_abc'"),
], ids=["optimizer_eps", "rmsprop_alpha", "ent_coef", "ent_coef-auto"])
def test_settings_torch_would_refuse_are_refused_by_name(tmp_path, monkeypatch, capsys, config, setting, expected):
    monkeypatch.chdir(tmp_path)
    code, line = run(capsys, "fit", "--config", str(CONFIGS / config), *NO_LOGGER, f"--model.init_args.{setting}")
    assert code == 2 and expected in line and "nan" not in line
