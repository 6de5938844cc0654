"""Every numeric setting's range, as its annotation declares it (rl_lightning.setting_ranges), enforced everywhere.

The cases are generated from the algorithms' signatures: each algorithm ``rl_lightning`` exports, each of its
``__init__`` parameters (over its bases) annotated with a range, values just outside that range, and NaN and the
infinities for floats. A setting added with a range is covered without touching this file.
"""

import math
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch

import rl_lightning
from rl_lightning import ConfigurationError, RLModule
from rl_lightning.guards import NonFiniteAction, NonFiniteLoss, divergence_suspects
from rl_lightning.setting_ranges import Range, check_settings, declared_ranges

ALGORITHMS = [getattr(rl_lightning, name) for name in rl_lightning.__all__
              if isinstance(getattr(rl_lightning, name), type) and issubclass(getattr(rl_lightning, name), RLModule)
              and getattr(rl_lightning, name) is not RLModule]


def outside(span: Range) -> list:
    """Values the range refuses: just past each bound, a fraction for an int, NaN and the infinities for a float."""
    step = 1 if span.kind is int else 0.5
    values = []
    if span.low is not None:
        values.append(span.kind(span.low) if span.low_open else span.kind(span.low - step))
    if span.high is not None:
        values.append(span.kind(span.high) if span.high_open else span.kind(span.high + step))
    if span.kind is int:
        values += [1.5, True]
    else:
        values += [math.nan, math.inf, -math.inf]
    return values


def at_bounds(span: Range) -> list:
    """The closed bounds: the extreme values the range accepts."""
    return [span.kind(b) for b, is_open in ((span.low, span.low_open), (span.high, span.high_open))
            if b is not None and not is_open]


def cases(values_of):
    found = []
    for cls in ALGORITHMS:
        for name, (span, _, _, is_list) in declared_ranges(cls).items():
            for value in values_of(span):
                found.append(pytest.param(cls, name, [value] if is_list else value,
                                          id=f"{cls.__name__}-{name}={value!r}"))
    return found


def test_every_algorithm_declares_ranges_for_its_numeric_settings():
    assert {c.__name__ for c in ALGORITHMS} == {"A2C", "DDPG", "DQN", "DiscreteSAC", "PPO", "SAC", "TD3"}
    for cls in ALGORITHMS:
        declared = declared_ranges(cls)
        for name in ("num_envs", "gamma", "reward_scale", "total_steps", "hidden_sizes"):
            assert name in declared, (cls.__name__, name)
    assert declared_ranges(rl_lightning.PPO)["learning_rate"][0].name == "finite float > 0"
    assert declared_ranges(rl_lightning.PPO)["num_envs"][0].name == "int in [1, 4096]"


@pytest.mark.parametrize("cls, name, value", cases(outside))
def test_python_refuses_a_value_outside_the_declared_range_naming_the_setting(cls, name, value):
    with pytest.raises(ConfigurationError, match=rf"^{name}=") as error:
        cls(**{name: value})
    assert " must " in str(error.value)


@pytest.mark.parametrize("cls, name, value", cases(at_bounds))
def test_the_declared_bounds_themselves_are_accepted(cls, name, value):
    check_settings(cls, {name: value})  # the range itself; a relation to other settings may still refuse it


def test_a_model_at_many_bounds_at_once_is_built():
    model = rl_lightning.PPO(gamma=0.0, gae_lambda=1.0, num_envs=4096, eval_num_envs=1, eval_episodes=0,
                             ent_coef=0.0, vf_coef=10_000.0, log_std_init=-20.0, n_epochs=10_000, seed=0,
                             rmsprop_alpha=0.0, hidden_sizes=[1, 16_384], normalization_epsilon=1.0, learning_rate=1)
    assert model.hparams.hidden_sizes == [1, 16_384] and model.hparams.num_envs == 4096
    rl_lightning.SAC(env="Pendulum-v1", tau=1.0, ent_coef=10_000.0, target_entropy=-1e9, learning_starts=1,
                     batch_size=1, gradient_steps=10_000)
    rl_lightning.DDPG(env="Pendulum-v1", critic_action_layer=0, noise_sigma=0.0, ou_theta=0.0)
    rl_lightning.DQN(exploration_initial_eps=0.0, exploration_final_eps=1.0, eval_epsilon=1.0, tau=1.0)


# ---------------------------------------------------------------------- the command
def cli_cases():
    """Each setting once (in the first algorithm that has it), with every value outside its range."""
    found, seen = [], set()
    for cls in ALGORITHMS:
        for name, (span, _, _, is_list) in declared_ranges(cls).items():
            if name in seen:
                continue
            seen.add(name)
            for value in outside(span):
                if value is True:
                    continue  # YAML's true is a bool for jsonargparse too, refused as "Expected an int" by name
                text = {math.nan: ".nan", math.inf: ".inf", -math.inf: "-.inf"}.get(value, repr(value)) \
                    if not (isinstance(value, float) and math.isnan(value)) else ".nan"
                found.append(pytest.param(cls, name, f"[{text}]" if is_list else text,
                                          id=f"{cls.__name__}-{name}={text}"))
    return found


@pytest.mark.parametrize("cls, name, text", cli_cases())
def test_the_command_refuses_it_with_status_2_and_one_line_naming_the_setting(cls, name, text, capsys):
    from rl_lightning.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", f"--model={cls.__name__}", f"--model.init_args.{name}={text}"])
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rl-lightning: error: ")]
    assert len(lines) == 1, lines
    assert f"model.init_args.{name}: " in lines[0] or f"{name}=" in lines[0], lines[0]
    assert " must " in lines[0] or "give 'auto'" in lines[0], lines[0]


def test_a_yaml_nan_in_a_config_file_is_refused_by_the_command(tmp_path):
    config = tmp_path / "nan.yaml"
    config.write_text("model:\n  class_path: rl_lightning.DDPG\n  init_args:\n    env: Pendulum-v1\n"
                      "    noise_sigma: .nan\n    reward_scale: 1.0\n")
    proc = subprocess.run([sys.executable, "-m", "rl_lightning", "fit", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rl-lightning: error: ")]
    assert lines == ["rl-lightning: error: model.init_args.noise_sigma: nan must be a finite number >= 0 "
                     "(rl_lightning.DDPG)"], proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == [config]


def test_a_unity_env_kwarg_outside_its_range_is_refused_by_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rl_lightning", "fit", "--model=PPO", "--model.env=unity",
                           "--model.env_kwargs={worker_id: 70000}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rl-lightning: error: ")]
    assert lines == ["rl-lightning: error: env_kwargs.worker_id=70000 must be an integer in [0, 60530]"], proc.stderr


def test_model_help_shows_the_ranges(capsys):
    from rl_lightning.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "PPO"])
    text = " ".join(capsys.readouterr().out.split())  # help wraps its lines
    assert "--model.learning_rate LEARNING_RATE" in text
    for shown in ("(type: finite float > 0, default: 0.0003)", "(type: int in [1, 10000], default: 10)",
                  "(type: finite float in [0, 1], default: 0.99)", "(type: list[int in [1, 16384]], default: [64, 64])",
                  "(type: finite float > 0 | null, default: null)"):
        assert shown in text, shown


def test_a_parsed_setting_is_a_plain_number_that_checkpoints_load_with_weights_only(tmp_path):
    # jsonargparse's own restricted types would leave instances of their class in hparams, which a checkpoint
    # pickles by a name torch.load(weights_only=True) refuses.
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(rl_lightning.PPO, "model")
    config = parser.parse_args(["--model.learning_rate=0.001", "--model.hidden_sizes=[8]", "--model.num_envs=2"])
    model = rl_lightning.PPO(**config.model.as_dict())
    hparams = dict(model.hparams)
    assert type(hparams["learning_rate"]) is float and type(hparams["num_envs"]) is int
    assert [type(h) for h in hparams["hidden_sizes"]] == [int]
    torch.save(hparams, tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True)["learning_rate"] == 0.001


# ---------------------------------------------------------------------- unity env kwargs
@pytest.mark.parametrize("kwargs, message", [
    (dict(timeout_wait=0), "env_kwargs.timeout_wait=0 must be a positive integer"),
    (dict(worker_id=-1), r"env_kwargs.worker_id=-1 must be an integer in \[0, 60530\]"),
    (dict(worker_id=60531), r"env_kwargs.worker_id=60531 must be an integer in \[0, 60530\]"),
    (dict(num_processes=0), "env_kwargs.num_processes=0 must be a positive integer"),
])
def test_unity_env_kwargs_outside_their_range_stop_the_model(kwargs, message):
    pytest.importorskip("mlagents_envs")
    with pytest.raises(ConfigurationError, match=message):
        rl_lightning.PPO(env="unity", env_kwargs=kwargs)
    with pytest.raises(ConfigurationError, match="eval_" + message):
        rl_lightning.PPO(env="unity", eval_env_kwargs=kwargs)


def test_a_worker_id_whose_last_process_is_past_the_last_port_is_refused():
    pytest.importorskip("mlagents_envs")
    from rl_lightning.unity.process import start_processes

    with pytest.raises(ConfigurationError, match=r"worker_id=60530 puts process 2 on port 65537 .* past 65535"):
        start_processes("x", 3, 60530, None, [], 0, None)


# ---------------------------------------------------------------------- what a divergence names
def test_a_diverged_policy_is_blamed_for_its_nan_action_not_the_env(tmp_path):
    # NaN weights, as a learning rate of 1e12 can leave them: the action is refused before Pendulum turns it into a
    # NaN observation that would be blamed on the env. The policy acts from the first step, updates come later.
    model = rl_lightning.DDPG(env="Pendulum-v1", actor_learning_rate=1e12, total_steps=512, steps_per_epoch=256,
                              eval_episodes=0, learning_starts=256, random_warmup=False, batch_size=32,
                              rounds_per_batch=1, seed=0)

    class Diverge(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if pl_module.env_steps >= 128:
                with torch.no_grad():
                    pl_module.actor[-2].bias.fill_(math.nan)

    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Diverge()])
    with pytest.raises(NonFiniteAction, match=r"the policy's action for sub-env 0 at env_steps=128 is not finite "
                                              r"\(\[nan\]\) although its observation is: the policy diverged, not "
                                              r"env 'Pendulum-v1'.*actor_learning_rate=1000000000000.0, "
                                              r"critic_learning_rate=0.001, reward_scale=1.0, max_grad_norm=None"):
        trainer.fit(model)


def test_a_diverged_discrete_policy_is_stopped_naming_its_learning_rates_not_the_env(tmp_path):
    # Integer actions cannot be NaN: NaN weights show in the values and log-probabilities the rollout keeps, and the
    # update's loss check names the settings that most often cause them.
    model = rl_lightning.PPO(env="CartPole-v1", n_steps=32, batch_size=32, total_steps=256, steps_per_epoch=128,
                             eval_episodes=0, rounds_per_batch=1, seed=0)

    class Diverge(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if pl_module.env_steps >= 64:
                with torch.no_grad():
                    next(pl_module.policy.parameters()).fill_(math.nan)

    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Diverge()])
    with pytest.raises(NonFiniteLoss, match=r"became NaN or infinite at env step 96.*\(learning_rate=0.0003, "
                                            r"critic_learning_rate=None, reward_scale=1.0, max_grad_norm=0.5\)"):
        trainer.fit(model)


def test_a_non_finite_loss_names_the_models_learning_rates():
    assert divergence_suspects(rl_lightning.SAC(env="Pendulum-v1")) == (
        "actor_learning_rate=0.0003, critic_learning_rate=0.0003, ent_coef_learning_rate=0.0003, reward_scale=1.0, "
        "max_grad_norm=None")
    assert divergence_suspects(rl_lightning.DQN()) == "learning_rate=0.0001, reward_scale=1.0, max_grad_norm=10.0"


def test_an_unreachable_target_entropy_is_refused_when_the_networks_are_built():
    import gymnasium as gym

    model = rl_lightning.SAC(env="Pendulum-v1", target_entropy=1e12)
    box = gym.spaces.Box(-1, 1, (1,), np.float32)
    with pytest.raises(ConfigurationError, match=r"target_entropy=1000000000000.0 is above the most entropy .* "
                                                 r"\(0.6931\)"):
        model.build_networks(box, box)
