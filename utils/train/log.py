"""What a run reports after each epoch: one line in train.log, TensorBoard scalars and image grids (rank 0 only)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from utils.data import IRSTDDataset
from utils.train.state import TrainState

log = logging.getLogger(__name__)
GRID_FRAMES, GRID_SIZE = 4, 192   # TensorBoard grid: 4 val frames, each cropped/padded to 192 px
VAL_KEYS = ("iou", "niou", "pd", "fa", "f1", "auc")


def image_grid(net: nn.Module, dataset: IRSTDDataset, device: torch.device) -> torch.Tensor:
    """Return a 3 x H x W grid, one row per val frame: frame | mask | sigmoid(T) | D."""
    from torchvision.utils import make_grid
    tiles = []
    with torch.no_grad():
        for i in range(min(GRID_FRAMES, len(dataset))):
            item = dataset[i]
            d, t = net(item["image"][None].to(device))
            row = [item["image"], item["mask"], torch.sigmoid(t.float())[0].cpu(), d.float()[0].clamp(0, 1).cpu()]
            for tile in row:
                canvas = torch.zeros(1, GRID_SIZE, GRID_SIZE)
                h, w = min(GRID_SIZE, tile.shape[-2]), min(GRID_SIZE, tile.shape[-1])
                canvas[:, :h, :w] = tile[:, :h, :w]
                tiles.append(canvas)
    return make_grid(tiles, nrow=4, padding=2, pad_value=1.0)


class EpochLog:
    """Writes each epoch's record to the log and to TensorBoard (RUN/tb); does nothing on ranks other than 0."""

    def __init__(self, run_dir: Path, epochs: int, image_every: int, enabled: bool):
        self.epochs, self.image_every = epochs, image_every
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def __call__(self, state: TrainState, val_set: IRSTDDataset, device: torch.device) -> None:
        """Log the last record of state.history (train losses, lr, frames/s and, when validated, val scores)."""
        if self.writer is None:
            return
        record, step, w = state.history[-1], state.history[-1]["epoch"], self.writer
        msg = (f"epoch {step}/{self.epochs} loss {record['loss']:.4f} (softiou {record['softiou']:.4f} "
               f"mse {record['mse']:.5f}) lr {record['lr']:.2e} {record['fps']:.1f} frames/s")
        for k in ("loss", "softiou", "l1", "mse", "lr", "fps"):
            w.add_scalar(f"train/{k}", record[k], step)
        if "val" in record:
            val = record["val"]
            for name in ("raw", "ema"):
                if name in val:
                    m = val[name]
                    msg += (f" | val[{name}] IoU {m['iou']:.4f} nIoU {m['niou']:.4f} Pd {m['pd']:.4f} "
                            f"Fa {m['fa'] * 1e6:.1f}e-6")
                    for k in VAL_KEYS:
                        w.add_scalar(f"val_{name}/{k}", m[k], step)
                    for source, sm in m.get("sources", {}).items():   # --sources: each source's own val
                        msg += f" [{source} " + (f"IoU {sm['iou']:.4f}]" if "iou" in sm else
                                                 f"Pd {sm['pd'] if sm['pd'] is not None else math.nan:.4f} "
                                                 f"FA/frame {sm['fa_per_frame']:.3f}]")
                        for k in ("iou", "niou", "pd", "fa", "fa_per_frame", "frames_with_fa", "absent_frames_with_fa"):
                            if sm.get(k) is not None:
                                w.add_scalar(f"val_{name}/{source}/{k}", sm[k], step)
                    if "sources" in m:
                        msg += f" score {m['score']:.4f}"
                        w.add_scalar(f"val_{name}/score", m["score"], step)
            msg += f" | best {state.best:.4f} @ {state.best_epoch}"
            n_val = sum("val" in r for r in state.history)
            if (n_val - 1) % self.image_every == 0:
                net = state.ema.module if state.ema is not None and val["selected"] == "ema" else state.net
                w.add_image("val/frame|mask|sigmoid(T)|D", image_grid(net, val_set, device), step)
        w.flush()
        log.info(msg)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
