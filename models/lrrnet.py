"""LRRNet: deep patch-free low-rank representation for infrared small-target detection.

Zhang, Xu, Chen, Wang, Zhang, "It's Not the Target, It's the Background: Rethinking
Infrared Small-Target Detection via Deep Patch-Free Low-Rank Representations",
IEEE TGRS 2025, doi:10.1109/TGRS.2025.3608239.

Written from the published description (docs/network.md in this repository); parameter
names match the authors' release, so their state_dicts load with ``strict=True``.
An encoder-decoder reconstructs the low-rank background in feature space; it is
subtracted from shallow image features and what is left is decoded into target
logits T, beside a reconstruction D of the input.

Differences from the release, none of which change the weights:
- any H x W: the frame is padded to a multiple of 8 inside ``forward`` and both
  outputs are cropped back (the release raises an error instead);
- attention through ``F.scaled_dot_product_attention`` (no HW x HW matrix);
- channels_last memory format by default (faster convolutions on CPU and GPU).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GROUPS, Downsample, ResidualBlock, Upsample, conv3x3

PAD_MODES = ("replicate", "reflect", "constant")


@dataclass(frozen=True)
class LRRNetConfig:
    """Hyper-parameters of the network; the defaults are the release's (3,454,994 parameters)."""

    in_channels: int = 1
    base_width: int = 16
    width_mults: tuple[int, ...] = (1, 2, 4, 8)   # level widths 16, 32, 64, 128
    blocks_per_level: int = 2                     # encoder; the decoder uses one more
    dropout: float = 0.2
    groups: int = GROUPS
    attention: str = "sdpa"                       # "sdpa" or "explicit" (the release's reference path)
    channels_last: bool = True
    pad_mode: str = "replicate"                   # see LRRNet._pad


class LRRNet(nn.Module):
    """Returns (D, T): the reconstruction of the input and the target logits, both N x 1 x H x W."""

    def __init__(self, **kwargs):
        super().__init__()
        valid = [f.name for f in fields(LRRNetConfig)]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ValueError(f"LRRNet got unknown option(s) {unknown}; valid: {valid}")
        cfg = LRRNetConfig(**{k: tuple(v) if k == "width_mults" else v for k, v in kwargs.items()})
        if cfg.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode {cfg.pad_mode!r} is unknown; choose one of {PAD_MODES}")
        self.config = cfg
        self.pad_multiple = 2 ** (len(cfg.width_mults) - 1)   # one stride-2 Down per level but the last
        widths = [cfg.base_width * m for m in cfg.width_mults]
        rb = dict(dropout=cfg.dropout, groups=cfg.groups, attention_kind=cfg.attention)
        self.init_conv = conv3x3(cfg.in_channels, cfg.base_width)
        self.second_conv = conv3x3(cfg.base_width, cfg.base_width)

        # encoder: per level, blocks_per_level RBs, then a Down except at the last level
        downs, skip_widths, ch = [], [cfg.base_width], cfg.base_width
        for level, width in enumerate(widths):
            for _ in range(cfg.blocks_per_level):
                downs.append(ResidualBlock(ch, width, **rb))
                ch = width
                skip_widths.append(ch)
            if level < len(widths) - 1:
                downs.append(Downsample(ch))
                skip_widths.append(ch)
        self.downs = nn.ModuleList(downs)

        self.mid = nn.ModuleList([ResidualBlock(ch, ch, attention=True, **rb), ResidualBlock(ch, ch, **rb)])

        # decoder: per level (deepest first), blocks_per_level + 1 RBs on concat(x, skip), then an Up
        ups = []
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(cfg.blocks_per_level + 1):
                ups.append(ResidualBlock(ch + skip_widths.pop(), width, **rb))
                ch = width
            if level > 0:
                ups.append(Upsample(ch))
        self.ups = nn.ModuleList(ups)

        self.out_resblock = ResidualBlock(cfg.base_width, cfg.base_width, **rb)
        self.out_norm = nn.GroupNorm(cfg.groups, cfg.base_width)   # target head
        self.out_conv = conv3x3(cfg.base_width, 1)
        self.out_norm1 = nn.GroupNorm(cfg.groups, cfg.base_width)  # reconstruction head
        self.out_conv1 = conv3x3(cfg.base_width, 1)
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Return x padded at the bottom and right to a multiple of 8 (2 ** downsamplings).

        Replicate padding continues the background without the step edge that zero
        padding would put at the border (a bright step can look like a target to the
        subtraction head), works for any size down to 1 x 1 (reflect needs pad < size),
        and, applied only at the bottom/right, leaves frames that already fit untouched.
        """
        h, w = x.shape[-2:]
        ph, pw = -h % self.pad_multiple, -w % self.pad_multiple
        if ph == 0 and pw == 0 and not torch.onnx.is_in_onnx_export():  # an export records the pad for any size
            return x
        return F.pad(x, (0, pw, 0, ph), mode=self.config.pad_mode)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"LRRNet expects N x {self.config.in_channels} x H x W, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self._pad(x)

        u = self.init_conv(x)                       # shallow features, N x 16 x H x W
        x = self.second_conv(u)
        skips = [x]
        for block in self.downs:
            x = block(x)
            skips.append(x)
        for block in self.mid:
            x = block(x)                            # N x 128 x H/8 x W/8
        for block in self.ups:
            if isinstance(block, ResidualBlock):
                x = torch.cat((x, skips.pop()), dim=1)
            x = block(x)                            # background features, N x 16 x H x W

        y = self.out_resblock(u - x)                # target features
        d = y + x
        t = self.out_conv(F.relu(self.out_norm(y), inplace=True))
        d = self.out_conv1(F.relu(self.out_norm1(d), inplace=True))
        return d[..., :h, :w], t[..., :h, :w]

    def hparams(self) -> dict:
        """Return the constructor keyword arguments that rebuild this network (stored in checkpoints)."""
        return asdict(self.config)
