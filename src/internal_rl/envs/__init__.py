"""Environments (gymnasium), registered under the ``internal_rl/`` namespace on import."""

import gymnasium

from internal_rl.envs.pinpad import (
    POST_TRAINING_TASK,
    PRETRAINING_TASKS,
    SUBGOALS,
    BatchedPinPad,
    PinPadConfig,
    PinPadEnv,
    parse_task,
)

if "internal_rl/GridPinPad-v0" not in gymnasium.registry:
    gymnasium.register(id="internal_rl/GridPinPad-v0", entry_point="internal_rl.envs.pinpad:PinPadEnv")

__all__ = [
    "BatchedPinPad",
    "PinPadConfig",
    "PinPadEnv",
    "parse_task",
    "PRETRAINING_TASKS",
    "POST_TRAINING_TASK",
    "SUBGOALS",
]
