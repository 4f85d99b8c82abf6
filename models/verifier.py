"""A small second-stage network that scores LRRNet's candidate targets: real target or clutter.

LRRNet marks every pixel; its detections are the connected components of p > t. On real
scenes most of its false alarms are confident, compact blobs (window lights, lamps, branch
tips) that no threshold removes without losing dim targets (docs/results.md, "A general model").
This network looks at each candidate once more, in a PATCH x PATCH window around its centroid,
and returns the logit that it is a target. It is not part of the published LRRNet; it is
trained afterwards on LRRNet's own candidates (``python -m utils.verify``, docs/verifier.md)
and stored beside LRRNet's weights in the same checkpoint.

Inputs per candidate: three PATCH x PATCH channels (the frame in [0, 1], LRRNet's
probabilities, the candidate's own pixels as 0/1) and five numbers (area px, peak and mean
probability, box width and height px). The frame channel is normalised inside ``forward``
(minus the patch median, over the patch standard deviation + 0.02), and the patch's mean and
10 x its standard deviation join the five numbers, so the caller passes raw values.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

N_FEATURES = 5   # area, peak probability, mean probability, box width, box height (raw)


@dataclass(frozen=True)
class VerifierConfig:
    """Hyper-parameters of the candidate verifier (39,697 parameters at width 16)."""

    patch: int = 48     # px: the window around a candidate's centroid (context for clutter, room for 30 px targets)
    width: int = 16     # channels of the first stage; x2 and x4 deeper

    def __post_init__(self):
        if self.patch < 16 or self.patch % 8:
            raise ValueError(f"verifier patch {self.patch} must be a multiple of 8 and at least 16 (px)")
        if self.width < 1:
            raise ValueError(f"verifier width {self.width} must be at least 1")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CandidateVerifier(nn.Module):
    """``forward(patches N x 3 x P x P, features N x 5) -> N logits`` (target vs clutter)."""

    def __init__(self, config: VerifierConfig = VerifierConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(_block(3, w), _block(w, w), nn.MaxPool2d(2),
                                  _block(w, 2 * w), nn.MaxPool2d(2),
                                  _block(2 * w, 2 * w), nn.MaxPool2d(2),
                                  _block(2 * w, 4 * w))
        self.head = nn.Sequential(nn.Linear(8 * w + N_FEATURES + 2, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

    def hparams(self) -> dict:
        """Return the constructor's hyper-parameters as a plain dict (stored in checkpoints)."""
        return asdict(self.config)

    def forward(self, patches: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        image, maps = patches[:, :1], patches[:, 1:]
        median = image.flatten(1).median(1).values[:, None, None, None]
        std = image.flatten(1).std(1)[:, None, None, None]
        x = torch.cat([(image - median) / (std + 0.02), maps], 1)
        area, peak, mean, box_w, box_h = features.unbind(1)
        numbers = torch.stack([torch.log1p(area), peak, mean, torch.log(box_w.clamp(min=1)),
                               torch.log(box_h.clamp(min=1)), image.mean((1, 2, 3)), 10 * std.flatten()], 1)
        h = self.body(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3)), numbers], 1))[:, 0]
