"""LRRNet's loss: SoftIoU on the target map, a sparsity term, and MSE on the reconstruction (docs/network.md#loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_iou_loss(logits: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0,
                  keep: torch.Tensor | None = None) -> torch.Tensor:
    """Return 1 - mean over samples of the soft IoU of sigmoid(logits) and mask (a scalar in [0, 1]).

    ``keep`` (same shape, {0, 1}): only pixels where it is 1 count (0: "ignore", e.g. the part of a
    labelled box outside its pseudo-mask).
    """
    p = torch.sigmoid(logits)
    if keep is not None:
        p, mask = p * keep, mask * keep
    dims = tuple(range(1, p.ndim))
    inter = (p * mask).sum(dims)
    union = p.sum(dims) + mask.sum(dims) - inter
    return 1 - ((inter + smooth) / (union + smooth)).mean()


class LRRLoss(nn.Module):
    """Total loss from (D, T logits, input image, mask); ``forward`` returns (total, parts dict of floats).

    preset "release" reproduces the release's loss value exactly:
        SoftIoU + [0.8 SoftIoU + 0.2 fraction(T > 0)] + 0.1 MSE(D, I)
    whose "L1" fraction has no gradient, so what trains is 1.8 SoftIoU + 0.1 MSE.
    preset "weighted": w_softiou SoftIoU + w_l1 mean(sigmoid(T)) + w_mse MSE(D, I), all differentiable.
    """

    def __init__(self, preset: str = "release", w_softiou: float = 1.0, w_l1: float = 0.0, w_mse: float = 0.1):
        super().__init__()
        if preset not in ("release", "weighted"):
            raise ValueError(f"loss preset {preset!r} is unknown; choose release or weighted")
        self.preset, self.w_softiou, self.w_l1, self.w_mse = preset, w_softiou, w_l1, w_mse

    def forward(self, d: torch.Tensor, t: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                ignore: torch.Tensor | None = None):
        d, t = d.float(), t.float()
        keep = None if ignore is None else 1.0 - ignore
        soft_iou = soft_iou_loss(t, mask, keep=keep)
        mse = F.mse_loss(d, image)
        if self.preset == "release":
            fraction = (t > 0).float().mean()                # the release's "L1": no gradient
            total = soft_iou + (0.8 * soft_iou + 0.2 * fraction) + 0.1 * mse
            l1 = fraction
        else:
            l1 = torch.sigmoid(t).mean() if keep is None else (torch.sigmoid(t) * keep).mean()
            total = self.w_softiou * soft_iou + self.w_l1 * l1 + self.w_mse * mse
        return total, {"softiou": soft_iou.detach(), "l1": l1.detach(), "mse": mse.detach()}
