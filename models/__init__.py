"""LRRNet and its loaders.

    from models import get_model, load_model
    net = get_model("LRRNet")                        # a new network with the release's hyper-parameters
    net, meta = load_model("checkpoints/lrrnet_sirst_v1.pt")   # ours, or the authors' raw state_dict
"""
from __future__ import annotations

from .load import MODELS, CheckpointError, get_model, load_checkpoint, load_model
from .lrrnet import LRRNet, LRRNetConfig

__all__ = ["MODELS", "CheckpointError", "LRRNet", "LRRNetConfig", "get_model", "load_checkpoint", "load_model"]
