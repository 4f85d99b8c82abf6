"""Load a network from a file: a checkpoint written by run_configs.py or the authors' raw state_dict.

Files are read with ``map_location="cpu"`` and ``weights_only=True`` (no code runs on load).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .lrrnet import LRRNet

TRAINING_STATE = ("model", "optimizer", "scheduler", "scaler", "ema", "rng")  # not metadata
MODELS = {"LRRNet": LRRNet}
RUNTIME_HPARAMS = ("attention", "channels_last")  # speed choices of this machine, not part of the weights
N_NAMED = 3  # tensor names shown when a checkpoint does not fit


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the network; the message names the file and fix."""


def get_model(name: str = "LRRNet", **kwargs) -> nn.Module:
    """Return a new network of the named architecture; keyword arguments override its defaults."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Return the dict stored in a checkpoint file, loaded on the CPU with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass a file in it, e.g. {path / 'best.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .pt written by run_configs.py "
                              "or the authors' .pkl/.pth state_dict")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle of ours at all: a corrupt or foreign file
            raise CheckpointError(f"checkpoint {path} could not be read (not a PyTorch pickle); is it a PyTorch "
                                  "file, fully written?") from None
        # weights_only=True met an object it will not build; never pass on torch's advice to turn it off
        raise CheckpointError(f"checkpoint {path} holds Python objects besides tensors and plain containers, which "
                              "are not loaded (no code runs on load): save the weights as a state_dict, "
                              "torch.save(model.state_dict(), path), and pass that file") from None
    except Exception as err:  # torch raises many kinds for a corrupt or foreign file; its advice is not ours
        reason = str(err).split("\n")[0][:200]
        raise CheckpointError(f"checkpoint {path} could not be read ({type(err).__name__}: {reason}); "
                              "is it a PyTorch file, fully written?") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a state_dict or checkpoint dict")
    return ckpt


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Return (network in eval mode on the CPU, metadata) from our checkpoint or the authors' raw state_dict.

    The metadata of our checkpoints holds the resolved training config ("config"), the epoch,
    the selected weights ("raw" or "ema"), val/test scores and history; for a raw state_dict it
    is {"source": "release state_dict"}. CheckpointError (one line naming the file) when the weights do not fit the
    network (``check_fit``) or hold NaN or Inf (``check_finite``).
    """
    ckpt = load_checkpoint(path)
    if isinstance(ckpt.get("model"), dict):
        hparams = {k: v for k, v in ckpt.get("model_hparams", {}).items() if k not in RUNTIME_HPARAMS}
        try:
            net = get_model(ckpt.get("model_name", "LRRNet"), **hparams)
        except (TypeError, ValueError) as err:   # hyperparameters this code does not know, or out of range
            raise CheckpointError(f"checkpoint {path} has model_name {ckpt.get('model_name', 'LRRNet')!r} and "
                                  f"model_hparams {hparams} that this code cannot build ({err}); pass a checkpoint "
                                  "written by run_configs.py") from None
        state = ckpt["model"]
        meta = {k: v for k, v in ckpt.items() if k not in TRAINING_STATE}
    else:  # a raw state_dict, as the authors publish
        net, state, meta = get_model("LRRNet"), ckpt, {"source": "release state_dict"}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from a DataParallel/DDP wrapper
        meta["note"] = "stripped the 'module.' prefix of a DataParallel/DDP state_dict"
    check_fit(net, state, path)
    check_finite(state, path)
    net.load_state_dict(state, strict=True)
    return net.eval(), meta


def check_fit(net: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """Raise CheckpointError, summarised in one line (counts and the first few names), when ``state`` does not fit
    ``net``: keys missing or unexpected, or tensors of another shape."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if not (missing or unexpected or reshaped):
        return
    parts = [f"{len(names)} {what} (e.g. {', '.join(names[:N_NAMED])}{', ...' if len(names) > N_NAMED else ''})"
             for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
             if names]
    raise CheckpointError(f"checkpoint {path} does not fit {type(net).__name__}: of its {len(state)} tensors, "
                          f"{'; '.join(parts)}; pass a checkpoint of this network")


def check_finite(state: dict[str, Any], path: str | Path) -> None:
    """Raise CheckpointError naming the file and the first tensor that holds NaN or Inf (a diverged run's weights)."""
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights (NaN or Inf in {len(bad)} tensor(s), "
                              f"first {bad[0]}): give weights saved before the run diverged, e.g. its best.pt")
