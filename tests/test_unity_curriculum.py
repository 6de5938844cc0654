"""Environment parameters in ML-Agents' schema, and curricula that move on during training (through the player)."""

import os
import sysconfig
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rl_lightning.errors import ConfigurationError
from rl_lightning.unity.parameters import (CompletionCriteria, Curriculum, Lesson, ParameterValue, parse_parameters)

PLAYER = str(Path(sysconfig.get_path("scripts")) / "rl-lightning-unity-player")
TESTS = str(Path(__file__).resolve().parent)
WORKER_IDS = iter(range(550, 600))  # this file's Unity ports: 5005 + 550 ...


def constant(v: float) -> ParameterValue:
    return ParameterValue("constant", (float(v),))


# ---------------------------------------------------------------------- parsing
def test_both_schemas_parse_to_the_same_values():
    ours = parse_parameters({"speed": 4, "radius": {"sampler": "uniform", "min": 6, "max": 8, "seed": 7},
                             "mass": {"sampler": "gaussian", "mean": 2, "std": 0.3, "seed": 7},
                             "length": {"sampler": "multirange", "intervals": [[7, 10], [15, 20]], "seed": 7}})
    theirs = parse_parameters({
        "speed": 4.0,
        "radius": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 6, "max_value": 8, "seed": 7}},
        "mass": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 2, "st_dev": 0.3, "seed": 7}},
        "length": {"sampler_type": "multirange_uniform", "sampler_parameters": {"intervals": [[7, 10], [15, 20]]},
                   "seed": 7}})
    assert ours.values == theirs.values
    assert theirs.values["length"] == ParameterValue("multirange", (((7.0, 10.0), (15.0, 20.0)),), 7)
    assert not ours.curricula and not theirs.curricula


def test_mlagents_samplers_without_seed_get_the_run_seed_plus_their_place():
    # As EnvironmentParameterManager._set_sampler_seeds: constants take a place too.
    parsed = parse_parameters({"a": 1.0, "b": {"sampler_type": "uniform",
                                               "sampler_parameters": {"min_value": 0, "max_value": 1}},
                               "c": {"sampler_type": "constant", "sampler_parameters": {"value": 3}}}, run_seed=100)
    assert parsed.values["b"].seed == 101 and parsed.values["c"] == ParameterValue("constant", (3.0,), 102)


def test_values_are_sent_through_the_environment_parameters_channel():
    channel = EnvironmentParametersChannel()
    parsed = parse_parameters({"k": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 1, "st_dev": 2,
                                                                                         "seed": 5}}})
    parsed.values["k"].send(channel, "k")
    expected = EnvironmentParametersChannel()
    expected.set_gaussian_sampler_parameters("k", 1.0, 2.0, 5)
    assert channel.message_queue == expected.message_queue


CURRICULUM = {"wall": {"curriculum": [
    {"name": "Low", "value": 1.0,
     "completion_criteria": {"measure": "reward", "behavior": "Agent", "threshold": 0.5, "min_lesson_length": 3}},
    {"name": "Mid", "value": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 2, "max_value": 4}},
     "completion_criteria": {"measure": "progress", "threshold": 0.6, "require_reset": True}},
    {"name": "High", "value": 8.0}]}}


def test_a_curriculum_parses_into_lessons_starting_at_the_first():
    parsed = parse_parameters(CURRICULUM, run_seed=10)
    lessons = parsed.curricula["wall"]
    assert [lesson.name for lesson in lessons] == ["Low", "Mid", "High"]
    assert parsed.values["wall"] == constant(1.0)
    assert lessons[1].value == ParameterValue("uniform", (2.0, 4.0), 11)
    assert lessons[0].completion_criteria == CompletionCriteria("reward", "Agent", 0.5, 3, True, False)
    assert lessons[1].completion_criteria.require_reset and lessons[2].completion_criteria is None


@pytest.mark.parametrize("parameters, message", [
    ({"ballNums": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 1}}},
     r"parameters\.ballNums\.sampler_parameters: missing max_value; a uniform sampler takes min_value, max_value"),
    ({"b": {"sampler_type": "beta", "sampler_parameters": {}}},
     r"parameters\.b\.sampler_type: 'beta' is not one of uniform, gaussian, multirangeuniform, constant"),
    ({"b": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 3, "max_value": 1}}},
     r"parameters\.b\.sampler_parameters: min_value 3 is greater than max_value 1"),
    ({"b": {"sampler_type": "gaussian", "sampler_parameters": {"mean": 0, "stdev": 1}}},
     r"parameters\.b\.sampler_parameters: unknown key\(s\) stdev; a gaussian sampler takes mean, st_dev, seed"),
    ({"b": {"sampler": "uniform", "min": 0}}, r"parameters\.b: missing max; a uniform sampler takes min, max"),
    ({"b": {"sampler": "poisson"}}, r"parameters\.b\.sampler: 'poisson' is not one of uniform, gaussian, multirange"),
    ({"b": "fast"}, r"parameters\.b: 'fast' is not a number, a sampler or a curriculum"),
    ({"b": {"sampler_type": "multirangeuniform", "sampler_parameters": {"intervals": [[1, 2, 3]]}}},
     r"parameters\.b\.sampler_parameters\.intervals\[0\]: \[1, 2, 3\] is not an interval"),
    ({"w": {"curriculum": [{"name": "A", "value": 1}, {"name": "B", "value": 2}]}},
     r"parameters\.w\.curriculum\[0\]\.completion_criteria: missing; every lesson but the last needs"),
    ({"w": {"curriculum": [{"name": "A", "value": 1, "completion_criteria": {"measure": "elo"}},
                           {"name": "B", "value": 2}]}},
     r"parameters\.w\.curriculum\[0\]\.completion_criteria\.measure: 'elo' is not one of reward, progress"),
    ({"w": {"curriculum": [{"name": "A", "value": 1, "completion_criteria": {"measure": "progress", "threshold": 2}},
                           {"name": "B", "value": 2}]}},
     r"completion_criteria\.threshold: 2 must be in \[0, 1\] for measure progress"),
    ({"w": {"curriculum": [{"name": "A", "value": {"sampler_type": "uniform", "sampler_parameters": {}},
                            "completion_criteria": {}}, {"name": "B", "value": 2}]}},
     r"parameters\.w\.curriculum\[0\]\.value\.sampler_parameters: missing min_value"),
    ({"w": {"curriculum": [{"value": 1}]}}, r"parameters\.w\.curriculum\[0\]: missing name"),
])
def test_bad_parameters_name_the_key_path_and_what_is_accepted(parameters, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_parameters(parameters)


def test_a_criteria_for_another_behavior_is_refused():
    curriculum = Curriculum(parse_parameters(CURRICULUM).curricula)
    curriculum.check_behavior("Agent")
    with pytest.raises(ConfigurationError, match=r"parameters\.wall\.curriculum\[0\]\.completion_criteria\.behavior: "
                                                 r"'Agent' is not the behavior this env trains \('Walker'\)"):
        curriculum.check_behavior("Walker")


# ---------------------------------------------------------------------- the curriculum
def reward_curriculum(smoothing: bool, min_lesson_length: int = 0) -> Curriculum:
    criteria = CompletionCriteria("reward", threshold=1.0, min_lesson_length=min_lesson_length,
                                  signal_smoothing=smoothing)
    return Curriculum({"p": [Lesson("A", constant(0), criteria), Lesson("B", constant(5))]})


def test_reward_measure_is_smoothed_as_mlagents_does():
    # Without smoothing, the mean of the buffer (size 1 here: the latest return) passes as soon as it is above 1.
    plain = reward_curriculum(smoothing=False)
    assert plain.update([0.9], 0.0) == {} and plain.update([1.05], 0.0) == {"p": constant(5)}
    # Smoothed = 0.25 * previous + 0.75 * mean, once per check, starting from 0.
    smoothed = reward_curriculum(smoothing=True)
    assert smoothed.update([0.9], 0.0) == {} and smoothed.smoothed["p"] == pytest.approx(0.675)
    assert smoothed.update([1.05], 0.0) == {} and smoothed.smoothed["p"] == pytest.approx(0.95625)
    assert smoothed.update([], 0.0) == {"p": constant(5)}  # 0.25 * 0.95625 + 0.75 * 1.05 = 1.027
    assert smoothed.smoothed["p"] == pytest.approx(1.0265625)


def test_min_lesson_length_counts_episodes_and_the_mean_is_over_the_last_ones():
    curriculum = reward_curriculum(smoothing=False, min_lesson_length=3)
    assert curriculum.update([5.0, 5.0], 0.0) == {}  # two episodes: too few whatever their returns
    assert curriculum.update([-10.0], 0.0) == {}  # three, mean 0
    assert curriculum.update([5.0], 0.0) == {}  # the last three: -10, 5, 5 -> mean 0 (the first 5 fell out)
    assert list(curriculum.reward_buffer) == [5.0, -10.0, 5.0]
    assert curriculum.update([5.0], 0.0) == {}  # 5, 5, -10 -> mean 0
    assert curriculum.update([5.0], 0.0) == {"p": constant(5)}  # 5, 5, 5
    assert curriculum.lesson_numbers == {"p": 1} and len(curriculum.reward_buffer) == 0


def test_progress_measure_moves_on_after_the_threshold_and_the_last_lesson_stays():
    criteria = CompletionCriteria("progress", threshold=0.5)
    curriculum = Curriculum({"p": [Lesson("A", constant(0), criteria), Lesson("B", constant(1), criteria),
                                   Lesson("C", constant(2))]})
    assert curriculum.update([], 0.5) == {}  # strictly above, as ML-Agents
    assert curriculum.update([], 0.51) == {"p": constant(1)}
    assert curriculum.update([], 0.6) == {"p": constant(2)}  # the next check: the second lesson's criteria hold too
    for progress in (0.7, 1.0):
        assert curriculum.update([100.0], progress) == {} and curriculum.lesson_numbers == {"p": 2}


def test_a_lesson_change_empties_the_buffer_shared_by_all_parameters():
    slow = CompletionCriteria("reward", threshold=1.0, min_lesson_length=2, signal_smoothing=False)
    quick = CompletionCriteria("progress", threshold=0.1, require_reset=True)
    curriculum = Curriculum({"slow": [Lesson("A", constant(0), slow), Lesson("B", constant(1))],
                             "quick": [Lesson("A", constant(0), quick), Lesson("B", constant(1))]})
    assert curriculum.update([5.0], 0.2) == {"quick": constant(1)} and curriculum.reset_required
    assert len(curriculum.reward_buffer) == 0  # so 'slow' needs two new episodes
    assert curriculum.update([5.0], 0.3) == {} and not curriculum.reset_required
    assert curriculum.update([5.0], 0.3) == {"slow": constant(1)}


def test_curriculum_state_round_trips():
    curriculum = reward_curriculum(smoothing=True, min_lesson_length=2)
    curriculum.update([0.5, 0.7], 0.0)
    restored = reward_curriculum(smoothing=True, min_lesson_length=2)
    restored.load_state_dict(curriculum.state_dict())
    assert restored.state_dict() == curriculum.state_dict()
    assert restored.update([3.0], 0.0) == curriculum.update([3.0], 0.0)


# ---------------------------------------------------------------------- through the player
@pytest.fixture
def player_path(monkeypatch, agent_id_regime):
    """The toy envs importable by the players, which run in each agent-id regime (conftest.py)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))


# --echo-settings-as-stats: the player reports the level it draws at each episode start as the stat param/level.
LEVELS = ["--env", "toy_envs:ParameterRewardEnv", "--echo-settings-as-stats"]


def level_curriculum(require_reset: bool = False) -> dict:
    return {"level": {"curriculum": [
        {"name": "Easy", "value": 1.0, "completion_criteria": {
            "measure": "reward", "behavior": "Agent", "threshold": 3.0, "min_lesson_length": 6,
            "require_reset": require_reset}},
        {"name": "Hard", "value": {"sampler_type": "uniform",
                                   "sampler_parameters": {"min_value": 3, "max_value": 3}}}]}}


def test_a_lesson_change_with_require_reset_restarts_every_agent_with_the_new_value(player_path):
    from rl_lightning.unity.vector_env import UnityVectorEnv

    env = UnityVectorEnv(file_name=PLAYER, worker_id=next(WORKER_IDS), timeout_wait=10,
                         additional_args=LEVELS + ["--agents", "3"],
                         parameters=level_curriculum(require_reset=True))
    try:
        obs, _ = env.reset()
        assert obs[:, 0].tolist() == [1.0] * 3 and env.curriculum.lesson_numbers == {"level": 0}
        assert env.advance_curriculum([5.0] * 5, 0.1) == {}  # five episodes: one too few
        assert env.advance_curriculum([5.0], 0.1) == {"level": ParameterValue("uniform", (3.0, 3.0), 1)}
        env.read_stats()
        obs, rewards, terminated, truncated, info = env.step(np.zeros(3, dtype=np.int64))
        # The step was played at the old value, then every agent restarted with the new one.
        assert rewards.tolist() == [1.0] * 3 and truncated.all() and not terminated.any()
        assert [final[0] for final in info["final_obs"]] == [1.0] * 3 and obs[:, 0].tolist() == [3.0] * 3
        drawn = env.read_stats()["param/level"]
        assert (drawn.count, drawn.low, drawn.high) == (3, 3.0, 3.0)
        _, rewards, _, truncated, _ = env.step(np.zeros(3, dtype=np.int64))
        assert rewards.tolist() == [3.0] * 3 and not truncated.any()
    finally:
        env.close()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def fit_on_levels(tmp_path: Path, worker_id: int, total_steps: int, ckpt_path: str | None = None, **kwargs):
    from rl_lightning import A2C

    model = A2C(env="unity", env_kwargs={"file_name": PLAYER, "worker_id": worker_id, "timeout_wait": 10,
                                         "additional_args": LEVELS + ["--agents", "2"],
                                         "parameters": level_curriculum()},
                n_steps=8, rounds_per_batch=1, hidden_sizes=[8], total_steps=total_steps, steps_per_epoch=160,
                **{"eval_episodes": 0, "log_interval": 16, **kwargs})
    trainer = L.Trainer(max_epochs=-1, logger=TensorBoardLogger(tmp_path, name="run"), log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        )
    trainer.fit(model, ckpt_path=ckpt_path)
    return model, trainer


def test_curriculum_moves_on_during_training_and_the_new_value_reaches_unity(player_path, tmp_path):
    fit_on_levels(tmp_path, next(WORKER_IDS), total_steps=320)
    # Easy: every episode returns 5 * 1 = 5 (smoothed at the first check: 0.75 * 5 = 3.75 > 3): it moves on once
    # 6 episodes ended (2 batches of 16 steps with 2 agents); from then on the player draws 3 at its resets.
    tb = scalars(tmp_path)
    drawn = [value for _, value in sorted(tb["unity/param/level"])]  # what the player reported drawing, per point
    assert drawn[0] == 1.0 and drawn[-1] == 3.0
    lessons = [value for _, value in sorted(tb["curriculum/level"])]
    assert lessons[0] == 0.0 and lessons[-1] == 1.0 and sorted(lessons) == lessons
    assert max(step for step, _ in tb["curriculum/level"]) == 320  # against env steps
    assert tb["run/score"][-1][1] == pytest.approx(15.0)  # Unity played the new value: 5 steps x 3


@pytest.mark.one_id_regime_in_quick_suite
def test_a_resumed_run_continues_in_the_saved_lesson(player_path, tmp_path):
    fit_on_levels(tmp_path / "first", next(WORKER_IDS), total_steps=160)
    ckpt = next((tmp_path / "first").rglob("*.ckpt"))
    fit_on_levels(tmp_path / "second", next(WORKER_IDS), total_steps=320, ckpt_path=str(ckpt))
    # The resumed envs start at the first lesson's value (the env's first reset and the module's, 2 agents each);
    # the saved lesson's value reaches the player with the first training step, and every agent restarts with it.
    drawn = [value for _, value in sorted(scalars(tmp_path / "second")["unity/param/level"])]
    assert drawn and set(drawn[1:]) == {3.0} and drawn[0] > 1.0  # the first point: 1.0 at the resets, then 3.0
    lessons = [value for _, value in sorted(scalars(tmp_path / "second")["curriculum/level"])]
    assert lessons and set(lessons) == {1.0}


@pytest.mark.one_id_regime_in_quick_suite
def test_evaluation_during_fit_plays_the_lesson_training_reached(player_path, tmp_path):
    worker_id = next(WORKER_IDS)
    fit_on_levels(tmp_path, worker_id, total_steps=320, eval_episodes=4,
                  eval_env_kwargs={"worker_id": next(WORKER_IDS)})
    evaluations = sorted(scalars(tmp_path)["eval/return_mean"])
    # The lesson moved on after ~32 steps: both evaluations (at 160 and 320 steps) play level 3: 5 steps x 3.
    assert [value for _, value in evaluations] == [pytest.approx(15.0)] * 2
