"""The map from Unity agents to a ``UnityVectorEnv``'s sub-envs, kept as agents end, restart, spawn and leave."""

from __future__ import annotations

import bisect

import numpy as np


class AgentSlots:
    """Which Unity agent holds which sub-env (slot), re-mapped at every message.

    Unity's agent ``id`` is ``AgentInfo.episodeId`` (what ``Runtime/Communicator/GrpcExtensions.cs``,
    ``ToAgentInfoProto``, sends as the proto's ``id``). In com.unity.ml-agents 2.x (``Runtime/Agent.cs``)
    ``m_EpisodeId`` comes from ``EpisodeIdCounter.GetEpisodeId()`` only in ``LazyInitialize`` (when the agent is
    enabled), so an agent that ends an episode is in TerminalSteps and in DecisionSteps under the same id; in
    early-2020 packages ``NotifyAgentDone`` drew a new one, so it was in DecisionSteps under a new id (and a build
    that disables and re-enables its agents at every episode still does). A disabled or destroyed agent sends one
    last done step (``OnDisable`` -> ``NotifyAgentDone(Disabled)``: done, not max-step) and is gone; a spawned
    agent appears under an id never seen. Slots are keyed by ``(process, id)``: a terminal frees its slot, an
    unknown id (or the same id, deciding again) takes a free slot, preferring one its own process freed in the
    same message (so an agent that ends and restarts keeps its sub-env, in either regime).
    """

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self.slot: dict[tuple[int, int], int] = {}
        self.free: list[int] = list(range(num_slots))  # kept sorted: the lowest free slot is taken first

    def release(self, key: tuple[int, int]) -> int | None:
        i = self.slot.pop(key, None)
        if i is not None:
            bisect.insort(self.free, i)
        return i

    def place(self, key: tuple[int, int], preferred: list[int]) -> int | None:
        """The slot of ``key``; a new agent takes the first free slot of ``preferred``, else the lowest free one
        (``None`` when no slot is free)."""
        i = self.slot.get(key)
        if i is not None:
            return i
        for j in preferred:
            if j in self.free:
                break
        else:
            if not self.free:
                return None
            j = self.free[0]
        self.free.remove(j)
        self.slot[key] = j
        return j

    def occupied(self) -> np.ndarray:
        held = np.zeros(self.num_slots, bool)
        held[list(self.slot.values())] = True
        return held
