"""Building blocks of LRRNet (see models/lrrnet.py for the paper).

Attribute names follow the authors' release so that their state_dicts load with
``strict=True``: ``norm_1``, ``conv_1``, ``norm_2``, ``conv_2`` (a Sequential whose
index 0 is the dropout), ``scale``, ``residual_connection``, ``attention``,
``downsample`` and ``upsample`` (index 1 is the convolution).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 16  # GroupNorm groups everywhere in the release (docs/network.md#building-blocks)
ATTENTION_KINDS = ("sdpa", "explicit")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """Return a 3x3 convolution with padding 1 (keeps H x W at stride 1, halves it at stride 2)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)


class SelfAttention(nn.Module):
    """Single-head self-attention over all H*W positions, added to its input.

    ``kind="sdpa"`` uses ``F.scaled_dot_product_attention`` (flash / memory-efficient
    kernels: the HW x HW matrix is never stored); ``kind="explicit"`` forms
    softmax(q k^T / sqrt(C)) v as the release does, kept as the reference path.
    """

    def __init__(self, channels: int, groups: int = GROUPS, kind: str = "sdpa"):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind {kind!r} is unknown; choose one of {ATTENTION_KINDS}")
        self.kind = kind
        self.norm = nn.GroupNorm(groups, channels)
        self.to_qkv = nn.Conv2d(channels, channels * 3, 1)
        self.to_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x))                      # N x 3C x H x W
        # N x 3C x H x W -> 3 x N x 1 x HW x C (one head); the reshape copies once
        q, k, v = qkv.reshape(n, 3, c, h * w).permute(1, 0, 3, 2).unsqueeze(2)
        if self.kind == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)    # N x 1 x HW x C
        else:
            attn = torch.softmax(q @ k.transpose(-1, -2) * c ** -0.5, dim=-1)  # N x 1 x HW x HW
            out = attn @ v
        out = out.squeeze(1).transpose(1, 2).reshape(n, c, h, w)
        return x + self.to_out(out)


class ResidualBlock(nn.Module):
    """GN-ReLU-conv-GN-ReLU-dropout-conv, scaled per channel, plus a (1x1) shortcut; optional attention."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.2, groups: int = GROUPS,
                 attention: bool = False, attention_kind: str = "sdpa"):
        super().__init__()
        self.norm_1 = nn.GroupNorm(groups, in_ch)
        self.conv_1 = conv3x3(in_ch, out_ch)
        self.norm_2 = nn.GroupNorm(groups, out_ch)
        self.conv_2 = nn.Sequential(nn.Dropout(dropout), conv3x3(out_ch, out_ch))
        self.scale = nn.Parameter(torch.ones(1, out_ch, 1, 1))
        self.residual_connection = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attention = SelfAttention(out_ch, groups, attention_kind) if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in-place ReLU on the fresh GroupNorm output: saves a full-size copy (GN backward needs its input only)
        h = self.conv_1(F.relu(self.norm_1(x), inplace=True))
        h = self.conv_2(F.relu(self.norm_2(h), inplace=True))
        return self.attention(h * self.scale + self.residual_connection(x))


class Downsample(nn.Module):
    """3x3 convolution with stride 2: halves H and W, keeps the channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.downsample = conv3x3(channels, channels, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, then a 3x3 convolution; keeps the channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)
