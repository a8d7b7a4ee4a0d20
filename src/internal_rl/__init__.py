"""internal-rl: hierarchical RL inside autoregressive models (Kobayashi et al. 2025, arXiv 2512.20605).

Importing the package is light: heavy and optional parts (transformers, MuJoCo, ALE, minigrid)
are imported only when used.
"""

__version__ = "0.1.0"
