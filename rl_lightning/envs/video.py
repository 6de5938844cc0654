"""Evaluation episodes as video files: Gymnasium's ``RecordVideo`` with a way to drop an unfinished episode."""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class EvaluationVideo(gym.wrappers.RecordVideo):
    """Records every episode of one evaluation copy as ``<folder>/copy<i>-episode-<k>.mp4``.

    An evaluation stops stepping its envs once it has its episodes, with each copy already inside a new episode
    (the vector env resets a copy in the step that ends its episode). ``RecordVideo`` would write that episode's
    first frames as a video of its own when the recording is next stopped (the next evaluation's reset, or
    ``close``); ``discard_unfinished_video`` drops them instead. ``recording`` and ``recorded_frames`` are
    ``RecordVideo``'s own state (``gymnasium/wrappers/rendering.py``), which its ``stop_recording`` resets the same way.
    """

    def __init__(self, env: gym.Env, video_folder: str, index: int) -> None:
        super().__init__(env, video_folder, episode_trigger=lambda episode: True, name_prefix=f"copy{index}")

    def discard_unfinished_video(self) -> None:
        self.recorded_frames = []
        self.recording = False


def discard_unfinished_videos(envs: Any) -> None:
    """At the end of an evaluation: drop the episodes the copies of ``envs`` started but did not finish."""
    if getattr(envs, "records_video", False):
        envs.unwrapped.call("discard_unfinished_video")  # on each copy (async: in its process)
