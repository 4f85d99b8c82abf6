"""Model registry: ``get_model("LRRNet", **kwargs)`` builds a network by name."""
from __future__ import annotations

from torch import nn

from .lrrnet import LRRNet, LRRNetConfig

MODELS = {"LRRNet": LRRNet}


def get_model(name: str = "LRRNet", **kwargs) -> nn.Module:
    """Return a new network of the named architecture; keyword arguments override its defaults."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "LRRNet", "LRRNetConfig", "get_model"]
