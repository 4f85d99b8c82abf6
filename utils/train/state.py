"""What a training run carries from one iteration to the next, saved and restored as one dict.

The keys of ``TrainState.state_dict()`` are those of a checkpoint (last.pt and best.pt add
metadata beside them, see ``utils.train.loop.checkpoint``), so a run saved by any earlier version
of this code resumes.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from utils.checkpoint import unwrap
from utils.train.config import TrainConfig


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """Return the autocast dtype of --dtype: "auto" is bf16 on CUDA where supported, else fp16, and fp32 on the CPU."""
    if name == "fp32" or (name == "auto" and device.type == "cpu"):
        return torch.float32
    if name == "fp16" or (name == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int):
    """Return a per-iteration LambdaLR: linear warm-up, then poly (the release), cosine or constant."""
    def factor(it: int) -> float:
        if it < cfg.warmup_iters:
            return (it + 1) / cfg.warmup_iters
        progress = min(1.0, (it - cfg.warmup_iters) / max(1, total_iters - cfg.warmup_iters))
        if cfg.schedule == "poly":
            return (1 - progress) ** cfg.poly_power
        if cfg.schedule == "cosine":
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def encode_points(points: dict[int, np.ndarray]) -> dict[str, torch.Tensor]:
    """Return mined false alarms {frame: K x 2} as two tensors (frame per point, N x 2 points): checkpoint-safe."""
    frames = [np.full(len(v), k, np.int64) for k, v in sorted(points.items())]
    coords = [np.asarray(v, np.float32).reshape(-1, 2) for _, v in sorted(points.items())]
    return {"frame": torch.from_numpy(np.concatenate(frames) if frames else np.zeros(0, np.int64)),
            "point": torch.from_numpy(np.concatenate(coords) if coords else np.zeros((0, 2), np.float32))}


def decode_points(encoded: dict[str, torch.Tensor] | None) -> dict[int, np.ndarray]:
    """Return what encode_points encoded ({} for None: checkpoints without mining)."""
    if not encoded or len(encoded["frame"]) == 0:
        return {}
    frame, point = encoded["frame"].numpy(), encoded["point"].numpy()
    return {int(k): point[frame == k] for k in np.unique(frame)}


class TrainState:
    """The network (raw weights), its EMA, Adam, the schedule, the fp16 loss scaler and the run's progress.

    ``net`` must already be on its device; ``steps_per_epoch`` sizes the schedule (cfg.epochs of them).
    """

    def __init__(self, cfg: TrainConfig, net: nn.Module, steps_per_epoch: int, dtype: torch.dtype = torch.float32):
        self.net = net
        self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg, cfg.epochs * steps_per_epoch)
        device = next(net.parameters()).device
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.epoch = 0                # epochs completed
        self.best, self.best_epoch = -1.0, -1   # best val IoU of the selected weights, and its epoch
        self.history: list[dict] = []           # one record per epoch: train means, lr, frames/s, val scores
        self.nonfinite_in_row = 0     # steps skipped in a row for a non-finite loss or gradient
        self.hard_points: dict[int, np.ndarray] = {}   # mined false alarms: frame -> K x 2 (row, col)

    @property
    def lr(self) -> float:
        """Return the current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    def record(self, stats: dict, val: dict | None) -> bool:
        """Append this epoch's record to the history; return True when the val selection score improved on the best.

        The score is val IoU for one source and the declared combination under --sources
        (``utils.train.loop.selection_score``); records of older runs hold only "selected_iou".
        """
        record = {"epoch": self.epoch, **stats}
        score = None if val is None else val.get("selected_score", val["selected_iou"])
        improved = score is not None and score > self.best
        if val is not None:
            record["val"] = val
        if improved:
            self.best, self.best_epoch = score, self.epoch
        self.history.append(record)
        return improved

    def state_dict(self) -> dict[str, Any]:
        """Return every tensor and number needed to continue: the checkpoint keys of the training state."""
        return {
            "model": unwrap(self.net).state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_n_averaged": int(self.ema.n_averaged) if self.ema else 0,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "best_metric": self.best, "best_epoch": self.best_epoch,
            "history": list(self.history), "nonfinite_in_row": self.nonfinite_in_row,
            "hard_points": encode_points(self.hard_points),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned (or a last.pt, which holds the raw weights under "model")."""
        unwrap(self.net).load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(state["ema_n_averaged"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best, self.best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
        self.history = list(state["history"])
        self.nonfinite_in_row = state.get("nonfinite_in_row", 0)   # absent from checkpoints of older versions
        self.hard_points = decode_points(state.get("hard_points"))
