"""Custom metrics from a Unity build's StatsRecorder: aggregated by the env, reduced over ranks, logged as unity/<key>.

The build is the project's player serving ``toy_envs:StatsEnv`` (which reports stats with each aggregation in
a known pattern), driven by the real ``mlagents_envs.UnityEnvironment``.
"""

import json
import os
import sysconfig
from pathlib import Path

import lightning as L
import numpy as np
import pytest

import stats_ranks
from two_ranks import run_two_ranks
from test_unity_player import vector_env  # noqa: F401 (fixture)
from rl_lightning import A2C
from rl_lightning.plotting import read_scalars
from rl_lightning.unity.player import env_stats_messages
from rl_lightning.unity.stats import MOST_RECENT, SUM

PLAYER = str(Path(sysconfig.get_path("scripts")) / "rl-lightning-unity-player")
TESTS = str(Path(__file__).resolve().parent)
WORKER_ID = 600  # this file's players use worker ids 600-609 (ports 5605-5614)


@pytest.fixture
def stats_env(vector_env):  # noqa: F811
    """A UnityVectorEnv on the player serving ``StatsEnv``; closed afterwards."""

    def open_env(agents=2, worker_id=WORKER_ID, **env_kwargs):
        return vector_env("--env", "toy_envs:StatsEnv", "--env-kwargs", json.dumps(env_kwargs), "--agents", str(agents),
                          worker_id=worker_id)

    return open_env


def test_read_stats_gives_each_aggregation_over_the_steps_since_the_last_read(stats_env):
    env = stats_env(agents=2, truncate_at=5)
    first = env.read_stats()  # the reset done when the env was built: each agent's first episode
    assert {k: (s.value, s.method) for k, s in first.items()} == {"toy/resets": (2.0, SUM)}
    actions = np.zeros(2, dtype=np.int64)
    for _ in range(3):  # steps n = 1, 2, 3 of both agents
        env.step(actions)
    stats = env.read_stats()
    assert stats["toy/average"].value == 2.0 and stats["toy/average"].count == 6
    assert stats["toy/most_recent"].value == 3.0 and stats["toy/most_recent"].method == MOST_RECENT
    assert stats["toy/sum"].value == 6.0
    assert (stats["toy/histogram"].value, stats["toy/histogram"].low, stats["toy/histogram"].high) == (4.0, 2.0, 6.0)
    assert "toy/resets" not in stats
    for _ in range(4):  # n = 4 .. 7; both agents' episodes are truncated at their 5th step and reset
        env.step(actions)
    stats = env.read_stats()
    assert {k: s.value for k, s in stats.items()} == {
        "toy/average": 5.5, "toy/most_recent": 7.0, "toy/sum": 8.0, "toy/histogram": 11.0, "toy/resets": 2.0}
    env.reset()  # stats sent with a reset are read too
    assert {k: s.value for k, s in env.read_stats().items()} == {"toy/resets": 2.0}
    assert env.read_stats() == {}


@pytest.mark.one_id_regime_in_quick_suite
def test_the_stats_channel_is_emptied_at_every_step_so_memory_stays_flat(stats_env):
    env = stats_env(agents=4, extra_keys=20)
    actions = np.zeros(4, dtype=np.int64)
    for _ in range(200):
        env.step(actions)
        # mlagents' StatsSideChannel keeps every message in a list per key until it is read
        assert sum(len(v) for channel in env._stats_channels() for v in channel.stats.values()) == 0
    assert len(env._stats) == 24 + 1  # one running aggregate per key, however many steps
    stats = env.read_stats()
    assert stats["toy/sum"].value == 800.0 and stats["toy/extra_7"].value == 7.0


@pytest.mark.usefixtures("agent_id_regime")
@pytest.mark.one_id_regime_in_quick_suite
def test_training_logs_unity_stats_per_point_with_their_aggregation(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    agents, truncate_at = 4, 10
    model = A2C(env="unity", env_kwargs=dict(
        file_name=PLAYER, worker_id=WORKER_ID + 1, timeout_wait=20,
        additional_args=["--env", "toy_envs:StatsEnv", "--env-kwargs", f'{{"truncate_at": {truncate_at}}}',
                         "--agents", str(agents)]),
        n_steps=8, rounds_per_batch=1, hidden_sizes=[8], total_steps=1024, steps_per_epoch=512, log_interval=96,
        eval_episodes=0, seed=0)
    L.Trainer(max_epochs=-1, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False,
              log_every_n_steps=1, enable_model_summary=False,
              logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run")).fit(model)
    run = tmp_path / "run"
    steps, averages = read_scalars(run, "unity/toy/average")
    assert steps[-1] == 1024 and len(steps) >= 8
    # Agent steps -> academy steps: each point covers the academy steps since the previous one.
    ends = steps // agents
    starts = np.concatenate([[0], ends[:-1]])
    np.testing.assert_allclose(averages, (starts + 1 + ends) / 2)
    np.testing.assert_allclose(read_scalars(run, "unity/toy/most_recent")[1], ends)
    np.testing.assert_allclose(read_scalars(run, "unity/toy/sum")[1], agents * (ends - starts))
    np.testing.assert_allclose(read_scalars(run, "unity/toy/histogram")[1], starts + 1 + ends)
    # Resets: the env's construction and setup's reset (2 per agent), then one per truncated episode.
    reset_steps, resets = read_scalars(run, "unity/toy/resets")
    expected = {int(e * agents): agents * (e // truncate_at - s // truncate_at) for s, e in zip(starts, ends)}
    expected[int(steps[0])] += 2 * agents
    assert dict(zip(reset_steps.tolist(), resets.tolist())) == expected
    assert 0 in expected.values()  # a period without resets: a sum of 0, not the last period's sum


def test_a_served_env_reports_stats_with_their_aggregation():
    records = env_stats_messages({"stats": {"a": 1.5, "b": (2.0, 1), "c": [3, 2], "d": (4.0, 3)}})
    # The record's payload ends with its value (float32) and aggregation (int32).
    assert [np.frombuffer(r[-8:-4], "<f4")[0] for r in records] == [1.5, 2.0, 3.0, 4.0]
    assert [int(np.frombuffer(r[-4:], "<i4")[0]) for r in records] == [0, 1, 2, 3]
    assert env_stats_messages({}) == []
    with pytest.raises(ValueError, match=r"info\[\"stats\"\]\['a'\]: aggregation 7 is not one of 0 \(Average\)"):
        env_stats_messages({"stats": {"a": (1.0, 7)}})


def test_ranks_combine_means_sums_and_most_recent_values_with_one_all_reduce_once_keys_are_known():
    got = dict(run_two_ranks(stats_ranks.run_rank, timeout=60))
    assert got[0] == got[1]  # every rank logs the same values
    first, second, third = got[0]
    # avg: (6 + 4) / (3 + 1); last: the mean of the ranks' last values; sum: summed. New keys: a gather, two reduces.
    assert first == ({"avg": 2.5, "last": 6.0, "sum": 9.0}, 2, 1)
    # Known keys: one all_reduce. An unreported key is left out, but a sum without values is 0.
    assert second == ({"avg": 1.0, "sum": 2.0}, 1, 0)
    assert third == ({"new": 3.0, "sum": 0.0}, 2, 1)


def test_most_recent_values_arriving_together_keep_the_first_processs_latest():
    from mlagents_envs.side_channel import IncomingMessage, OutgoingMessage
    from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

    from rl_lightning.unity.stats import UnityStats

    def channel_with(*records):
        channel = StatsSideChannel()
        for key, value, method in records:
            message = OutgoingMessage()
            message.write_string(key)
            message.write_float32(value)
            message.write_int32(method)
            channel.on_message_received(IncomingMessage(message.buffer))
        return channel

    stats = UnityStats()
    # Process 0 sent 1 then 2; process 1 sent 9 (ML-Agents keeps worker 0's MostRecent values).
    stats.drain([channel_with(("k", 1.0, 1), ("k", 2.0, 1), ("a", 1.0, 0)), channel_with(("k", 9.0, 1), ("a", 3.0, 0))])
    assert {k: s.value for k, s in stats.read().items()} == {"k": 2.0, "a": 2.0}
    stats.drain([channel_with(), channel_with(("k", 9.0, 1))])  # only process 1 sent it this time
    stats.drain([channel_with(("s", 1.0, 2)), channel_with(("s", 2.0, 2))])
    assert {k: s.value for k, s in stats.read().items()} == {"k": 9.0, "s": 3.0}
