"""Unity ML-Agents: the project's own Unity-side player and the UnityVectorEnv adapter.

``vector_env`` (UnityVectorEnv) stands on ``process`` (Unity processes, their gRPC connection and faults),
``launch`` (a build's start-up output), ``specs`` (behavior specs as Gymnasium spaces), ``agents`` (agents to
sub-envs), ``parameters`` (environment parameters, curricula) and ``stats`` (StatsRecorder metrics).
"""
