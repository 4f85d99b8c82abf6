"""Print a network's parameter count and multiply-adds at a frame size.

    python -m models.summary --size 512 512
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import MODELS, get_model
from .blocks import SelfAttention


def count_parameters(net: torch.nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_macs(net: torch.nn.Module, height: int, width: int) -> dict[str, int]:
    """Return multiply-adds of one forward pass at batch 1: {"conv", "attention", "total"}."""
    attention = 0

    def count_attention(module, inputs):
        nonlocal attention
        _, c, h, w = inputs[0].shape
        attention += 2 * (h * w) ** 2 * c   # q k^T and (softmax) v, each HW x HW x C

    hooks = [m.register_forward_pre_hook(count_attention) for m in net.modules() if isinstance(m, SelfAttention)]
    counter = FlopCounterMode(display=False)  # counts convolutions; the CPU flash-attention kernel is not counted
    try:
        with counter, torch.no_grad():
            net.eval()(torch.zeros(1, 1, height, width))
    finally:
        for hook in hooks:
            hook.remove()
    conv = sum(f for op, f in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)) // 2
    return {"conv": conv, "attention": attention, "total": conv + attention}


def main(argv: list[str] | None = None) -> dict:
    """Print the summary; return the counts."""
    parser = argparse.ArgumentParser(prog="python -m models.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="LRRNet", choices=sorted(MODELS))
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    args = parser.parse_args(argv)
    net = get_model(args.model)
    params = count_parameters(net)
    macs = count_macs(net, *args.size)
    h, w = args.size
    print(f"{args.model}: {params:,} parameters")
    print(f"multiply-adds at {h} x {w}, batch 1: {macs['total'] / 1e9:.2f} G "
          f"(convolutions {macs['conv'] / 1e9:.2f} G, attention {macs['attention'] / 1e9:.2f} G)")
    return {"parameters": params, **macs}


if __name__ == "__main__":
    main()
