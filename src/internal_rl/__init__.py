"""internal-rl: hierarchical RL inside autoregressive models (Kobayashi et al. 2025, arXiv 2512.20605).

Importing the package is light: heavy and optional parts (transformers, MuJoCo, ALE, minigrid)
are imported only when used.
"""

__version__ = "0.1.0"

_LAZY = {"Transformer": "internal_rl.api", "MetaController": "internal_rl.api"}


def __getattr__(name: str):
    """Lazy exports (``from internal_rl import Transformer, MetaController``) so ``import internal_rl`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'internal_rl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
