"""The map from Unity agents to a ``UnityVectorEnv``'s sub-envs, kept as agents end, restart, spawn and leave."""

from __future__ import annotations

import bisect

import numpy as np


class AgentSlots:
    """Which Unity agent holds which sub-env (slot), re-mapped at every message.

    Unity's agent ``id`` is an *episode* id (com.unity.ml-agents ``Runtime/Agent.cs``: ``m_EpisodeId`` comes from
    ``EpisodeIdCounter.GetEpisodeId()`` when the agent is initialised and again at every ``_AgentReset``, and
    ``AgentInfo.episodeId`` is what ``Runtime/Communicator/GrpcExtensions.cs`` sends as the proto's ``id``). So an
    agent that ends an episode is in TerminalSteps under its old id and in DecisionSteps under a new one; a
    disabled or destroyed agent sends one last done step (``OnDisable`` -> ``NotifyAgentDone(Disabled)``: done, not
    max-step) and is gone; a spawned agent appears under an id never seen. Slots are keyed by
    ``(process, id)``: a terminal frees its slot, an unknown id takes a free slot, preferring one its own
    process freed in the same message (so an agent that ends and restarts keeps its sub-env).
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
