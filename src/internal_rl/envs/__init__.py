"""Environments (gymnasium), registered under the ``internal_rl/`` namespace on import."""

import gymnasium

from internal_rl.envs.pinpad import (
    ENV_ID,
    POST_TRAINING_TASK,
    PRETRAINING_TASKS,
    SUBGOALS,
    BatchedPinPad,
    PinPadConfig,
    PinPadEnv,
    colour_entries,
    parse_task,
)

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="internal_rl.envs.pinpad:PinPadEnv")

__all__ = [
    "BatchedPinPad",
    "ENV_ID",
    "colour_entries",
    "PinPadConfig",
    "PinPadEnv",
    "parse_task",
    "PRETRAINING_TASKS",
    "POST_TRAINING_TASK",
    "SUBGOALS",
]
