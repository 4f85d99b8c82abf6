"""Export LRRNet to ONNX and check the export against PyTorch with onnxruntime (the backend: ``utils.infer.onnx``).

    python -m utils.export --checkpoint checkpoints/lrrnet_general.pt --onnx lrrnet_general.onnx
    python inference.py --backend onnxruntime --checkpoint lrrnet_general.onnx --video clip.mp4 --out out/

The exported graph takes ``image`` (N x 1 x H x W float32 in [0, 1]) and returns ``D`` (the
reconstruction) and ``T`` (target logits), both N x 1 x H x W: batch, height and width are
dynamic, and the padding to a multiple of 8 and the crop back are inside the graph, so any size
runs, as with the PyTorch network. Attention is exported as its explicit matrix form (ONNX has
no fused attention at the opset used), which costs memory above ~1 MP frames; inference.py
tiles those by default. The checkpoint's metadata (training config, epoch, selected weights,
code revision, the checkpoint's sha256) travels in the model's metadata, so ``inference.py``
records the same manifest with either backend.

After writing (atomically), the export is run on frames of several sizes and batch sizes
(``--check-sizes``) and compared with the PyTorch network: the largest |dT| (logits), |dp|
(probabilities) and |dD| are printed, and the command exits 1 when |dp| or |dD| exceeds
``--tolerance`` (default 2e-3).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from models import CheckpointError, load_model
from utils.cli import ArgumentParser, BoolFlag, add_log_level, fail, finite_float, positive_int, setup_logging
from utils.files import check_output, file_sha256
from utils.infer.onnx import OPSET, ExportError, OnnxPredictor, export_onnx, require

log = logging.getLogger("export")
CHECK_SIZES = ("1x256x256", "2x97x131", "1x512x640")  # batch x H x W: a multiple of 8, an odd size, a wide frame
# largest |dp| (p = sigmoid(T), what is exported and scored) or |dD| accepted. Not logits: a trained network's
# logits reach tens, and float32 kernels summing in another order move them by ~4e-3 (lrrnet_general.pt)
TOLERANCE = 2e-3


def parse_size(text: str) -> tuple[int, int, int]:
    """Return (N, H, W) from "NxHxW" or "HxW"; raise ValueError naming the text."""
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) == 2:
        values = (1, *values)
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"size {text!r} is not NxHxW or HxW with positive integers, e.g. 2x97x131")
    return values


def check_export(net: nn.Module, path: Path, sizes: Sequence[tuple[int, int, int]], seed: int = 0) -> list[dict]:
    """Run the export and the PyTorch network (float32) on random frames of each size; return the differences."""
    session = OnnxPredictor(path)
    net = net.float().eval()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n, h, w in sizes:
        x = torch.rand(n, 1, h, w, generator=generator)
        with torch.inference_mode():
            d_ref, t_ref = net(x)
        d, t = session(x)
        rows.append({"size": f"{n}x{h}x{w}", "max_abs_dT": (t - t_ref).abs().max().item(),
                     "max_abs_dP": (torch.sigmoid(t) - torch.sigmoid(t_ref)).abs().max().item(),
                     "max_abs_dD": (d - d_ref).abs().max().item()})
    return rows


def export_meta(checkpoint: Path, meta: dict) -> dict:
    """Return the metadata stored in an export: the checkpoint's name, sha256 and its own metadata (no history)."""
    kept = {k: meta[k] for k in ("config", "epoch", "selected_weights", "code_revision", "source", "model_hparams",
                                  "val", "test") if k in meta}
    return {"checkpoint": checkpoint.name, "checkpoint_sha256": file_sha256(checkpoint), **kept}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(prog="python -m utils.export", description="Export an LRRNet checkpoint to ONNX (dynamic batch, height, width) "
                                                 "and check it against PyTorch with onnxruntime.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint (.pt) or the authors' raw state_dict (.pkl/.pth)")
    parser.add_argument("--onnx", required=True, type=Path, help="the .onnx file to write (new, or --overwrite)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --onnx (never the checkpoint)")
    parser.add_argument("--opset", type=positive_int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--check-sizes", nargs="*", default=list(CHECK_SIZES), metavar="NxHxW",
                        help="frames run through both to compare (default: %(default)s); none: no check")
    parser.add_argument("--tolerance", type=finite_float, default=TOLERANCE,
                        help=f"largest |dp| (p = sigmoid(T)) or |dD| accepted (default {TOLERANCE:g}); above it the exit "
                             "code is 1")
    add_log_level(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Export, check and print the differences; return 0, 1 (a difference above --tolerance) or 2 (an error)."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        sizes = [parse_size(s) for s in args.check_sizes]
        if args.onnx.suffix.lower() != ".onnx":
            raise ValueError(f"--onnx {args.onnx} should end in .onnx (inference.py --backend onnxruntime reads it)")
        if args.onnx.is_dir():
            raise ValueError(f"--onnx {args.onnx} is a folder; pass a file name such as {args.onnx / 'lrrnet.onnx'}")
        check_output(args.onnx, args.overwrite, [("--checkpoint", args.checkpoint)], option="--onnx")
        net, meta = load_model(args.checkpoint)
        if isinstance(meta.get("verifier"), dict):
            log.warning("%s holds a second stage (utils.verify); the export holds LRRNet alone, so --backend "
                        "onnxruntime runs without it", args.checkpoint)
        require("onnxruntime")  # the check needs it: missing, it is named before the export is written
        export_onnx(net, args.onnx, export_meta(args.checkpoint, meta), args.opset)
    except (CheckpointError, ExportError, ValueError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write {args.onnx} ({error.strerror or error}): pass a writable path")
    print(f"wrote {args.onnx} ({args.onnx.stat().st_size / 2 ** 20:.1f} MiB, opset {args.opset}, dynamic batch, "
          f"height and width)")
    if not sizes:
        return 0
    rows = check_export(net, args.onnx, sizes)
    print("| frames (NxHxW) | max abs dT (logits) | max abs dp (probability) | max abs dD |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['size']} | {row['max_abs_dT']:.2e} | {row['max_abs_dP']:.2e} | {row['max_abs_dD']:.2e} |")
    worst = max(max(r["max_abs_dP"], r["max_abs_dD"]) for r in rows)
    if worst > args.tolerance:
        print(f"the export differs from PyTorch by {worst:.2e}, above --tolerance {args.tolerance:g}", file=sys.stderr)
        return 1
    print(f"onnxruntime matches PyTorch within {worst:.2e} (tolerance {args.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
