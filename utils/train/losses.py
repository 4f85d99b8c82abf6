"""LRRNet's loss: SoftIoU on the target map, a sparsity term, and MSE on the reconstruction (docs/network.md#loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS_PARTS = ("softiou", "l1", "mse", "fa")  # the parts LRRLoss.forward returns beside the total, logged per epoch


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


def false_alarm_loss(logits: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor | None = None, k: int = 16,
                     margin_px: int = 3) -> torch.Tensor:
    """Return the mean over samples of softplus(T) (the BCE of "background") over each sample's k most confident
    background pixels: those farther than margin_px from any target or ignored pixel.

    SoftIoU hardly sees a confident false alarm in a target-free crop: its gradient there is
    1 / (sum of p + 1)^2 for every pixel alike, however sure the network is of the blob. This
    term acts on the blob alone; pixels next to a target are left to SoftIoU (they are its edge).
    """
    busy = mask if keep is None else torch.maximum(mask, 1 - keep)
    near = F.max_pool2d(busy, 2 * margin_px + 1, stride=1, padding=margin_px) > 0
    flat = logits.masked_fill(near, float("-inf")).flatten(1)
    top = flat.topk(min(k, flat.shape[1]), dim=1).values   # -inf where a crop has fewer background pixels
    return F.softplus(top).mean()


class LRRLoss(nn.Module):
    """Total loss from (D, T logits, input image, mask); ``forward`` returns (total, parts dict of floats).

    preset "release" reproduces the release's loss value exactly:
        SoftIoU + [0.8 SoftIoU + 0.2 fraction(T > 0)] + 0.1 MSE(D, I)
    whose "L1" fraction has no gradient, so what trains is 1.8 SoftIoU + 0.1 MSE.
    preset "weighted": w_softiou SoftIoU + w_l1 mean(sigmoid(T)) + w_mse MSE(D, I), all differentiable.
    Either adds w_fa false_alarm_loss (k = fa_topk) when w_fa > 0.
    """

    def __init__(self, preset: str = "release", w_softiou: float = 1.0, w_l1: float = 0.0, w_mse: float = 0.1,
                 w_fa: float = 0.0, fa_topk: int = 16):
        super().__init__()
        if preset not in ("release", "weighted"):
            raise ValueError(f"loss preset {preset!r} is unknown; choose release or weighted")
        self.preset, self.w_softiou, self.w_l1, self.w_mse = preset, w_softiou, w_l1, w_mse
        self.w_fa, self.fa_topk = w_fa, fa_topk

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
        fa = false_alarm_loss(t, mask, keep, self.fa_topk) if self.w_fa > 0 else torch.zeros((), device=t.device)
        total = total + self.w_fa * fa if self.w_fa > 0 else total
        return total, {"softiou": soft_iou.detach(), "l1": l1.detach(), "mse": mse.detach(), "fa": fa.detach()}
