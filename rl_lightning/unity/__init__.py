"""Unity ML-Agents: the project's own Unity-side player (and, next, the UnityVectorEnv adapter)."""
