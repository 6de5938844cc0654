"""Python stand-ins for the Unity games of the seed programs, each also a plain Gymnasium env.

Registered ids: ``rl_lightning/GridWorld-v0``, ``rl_lightning/Drone-v0``, ``rl_lightning/Dodge-v0``.
"""

import gymnasium as gym

if "rl_lightning/GridWorld-v0" not in gym.registry:
    gym.register("rl_lightning/GridWorld-v0", entry_point="rl_lightning.games.gridworld:GridWorld")
if "rl_lightning/Drone-v0" not in gym.registry:
    gym.register("rl_lightning/Drone-v0", entry_point="rl_lightning.games.drone:Drone")
if "rl_lightning/Dodge-v0" not in gym.registry:
    gym.register("rl_lightning/Dodge-v0", entry_point="rl_lightning.games.dodge:Dodge")
