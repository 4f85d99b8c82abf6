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
``--tolerance`` (default 2e-3; an int8 export only when --tolerance is given).

``--int8`` writes a statically quantised export instead (``utils.infer.onnx.quantize_onnx``: QDQ, int8
weights per channel, uint8 activations, the convolutions only), calibrated on frames of the val split
of the checkpoint's own training data (its config's dataset, or every one of its --sources; never test):
``--calibration-frames`` of them (default 32) spread evenly over the val frames, round-robin over the
sources, at their native sizes, scales by MinMax (the targets are the rare extreme activations, which a
percentile would clip). ``--calibration-data`` points at the folders when they are not where the config
says. How the scores compare with float32: docs/speed.md.

    python -m utils.export --checkpoint checkpoints/lrrnet_general.pt --onnx general.int8.onnx --int8 \
        --calibration-data /data/SIRST-v1 /data/NUDT-SIRST /data/IR-Drone-Video
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models import CheckpointError, load_model
from utils.cli import ArgumentParser, BoolFlag, add_log_level, fail, finite_float, positive_int, setup_logging
from utils.data import DataError, resolve_data_root
from utils.files import check_output, file_sha256
from utils.infer.onnx import (
    OPSET,
    OPSET_MAX,
    ExportError,
    OnnxPredictor,
    check_opset,
    export_onnx,
    quantize_onnx,
    require,
)
from utils.train.config import ConfigError, TrainConfig, from_dict, parse_sources
from utils.train.setup import root_kind, source_dataset, split_options

log = logging.getLogger("export")
CHECK_SIZES = ("1x256x256", "2x97x131", "1x512x640")  # batch x H x W: a multiple of 8, an odd size, a wide frame
# largest |dp| (p = sigmoid(T), what is exported and scored) or |dD| accepted. Not logits: a trained network's
# logits reach tens, and float32 kernels summing in another order move them by ~4e-3 (lrrnet_general.pt)
TOLERANCE = 2e-3
CALIBRATION_FRAMES = 32  # val frames that set the int8 scales; 16 and 64 gave the same SIRST v1 val IoU (docs/speed.md)
# the two output heads (T logits, D) stay float32: 8-bit outputs round T to steps of 1/255 of its calibrated range,
# which near the 0.5 threshold moves p by several hundredths (docs/speed.md)
FLOAT_NODES: tuple[str, ...] = ("/out_conv/Conv", "/out_conv1/Conv")


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


def calibration_sets(config: dict, roots: Sequence[Path] | None) -> list[tuple[str, object]]:
    """Return [(name, val dataset)] of the checkpoint's training data: its config's dataset, or each of its
    --sources; ``roots`` (--calibration-data) replaces the folders the config names, in its order."""
    cfg = from_dict(config) if config else TrainConfig()
    names = [name for name, _ in parse_sources(cfg.sources)] if cfg.sources else [cfg.data_root or cfg.dataset]
    if roots:
        if config and len(roots) != len(names):
            raise ConfigError(f"--calibration-data names {len(roots)} folder(s) but the checkpoint was trained on "
                              f"{len(names)} ({', '.join(names)}): pass one folder for each, in that order")
        names = [str(r) for r in roots]
    elif not config:
        raise ConfigError("the checkpoint holds no training config, so its val split is unknown: pass "
                          "--calibration-data DIR (a dataset folder; its val split calibrates)")
    sets = []
    for name in names:
        root = resolve_data_root(name, "pass its folder with --calibration-data")
        sets.append((root.name, source_dataset(cfg, root, root_kind(root), "val", split_options(cfg))))
    return sets


def calibration_frames(sets: Sequence[tuple[str, object]], count: int) -> list[tuple[str, int]]:
    """Return (set name, item index) of ``count`` val frames: round-robin over the sets, evenly spaced within each."""
    picks = [np.linspace(0, len(data) - 1, min(len(data), count)).round().astype(int).tolist() for _, data in sets]
    order = [(k, i) for row in zip(*[p + [None] * (count - len(p)) for p in picks]) for k, i in enumerate(row)
             if i is not None]
    return [(sets[k][0], i) for k, i in order[:count]]


def common_size(sets: Sequence[tuple[str, object]], chosen: Sequence[tuple[str, int]]) -> tuple[int, int]:
    """Return (H, W): the largest size every chosen frame holds (the smallest height and width among them)."""
    by_name = dict(sets)
    sizes = np.array([by_name[name].sizes[i] for name, i in chosen])
    return int(sizes[:, 0].min()), int(sizes[:, 1].min())


def frames_of(sets: Sequence[tuple[str, object]], chosen: Sequence[tuple[str, int]], crop: tuple[int, int] | None = None):
    """Yield the chosen val frames (H x W float32 in [0, 1]) with a progress bar; ``crop`` (H, W): their centres."""
    by_name = dict(sets)
    for name, i in tqdm(chosen, desc="calibration", unit="frame"):
        frame = by_name[name][i]["image"][0].numpy()
        if crop is not None:
            top, left = (frame.shape[0] - crop[0]) // 2, (frame.shape[1] - crop[1]) // 2
            frame = frame[top:top + crop[0], left:left + crop[1]]
        yield frame


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(prog="python -m utils.export", description="Export an LRRNet checkpoint to ONNX (dynamic batch, height, width) "
                                                 "and check it against PyTorch with onnxruntime.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint (.pt) or the authors' raw state_dict (.pkl/.pth)")
    parser.add_argument("--onnx", required=True, type=Path, help="the .onnx file to write (new, or --overwrite)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --onnx (never the checkpoint)")
    parser.add_argument("--opset", type=positive_int, default=OPSET,
                        help=f"ONNX opset, {OPSET} to {OPSET_MAX} (default {OPSET})")
    quant = parser.add_argument_group("int8 (statically quantised; calibrated on the checkpoint's own val frames)")
    quant.add_argument("--int8", action="store_true", help="write an int8 export (QDQ) instead of float32")
    quant.add_argument("--calibration-data", nargs="+", type=Path, default=None, metavar="DIR",
                       help="the training data's folders (one for each of its --sources, in order) when they are "
                            "not where the checkpoint's config says; their val split calibrates")
    quant.add_argument("--calibration-frames", type=positive_int, default=CALIBRATION_FRAMES,
                       help=f"val frames that set the scales (default {CALIBRATION_FRAMES})")
    quant.add_argument("--calibration-method", default="minmax", choices=["minmax", "percentile"],
                       help="minmax (default: keeps the rare extreme activations that targets are) or percentile")
    quant.add_argument("--float-nodes", nargs="*", default=None, metavar="NODE",
                       help="convolutions left in float32 (ONNX node names; default: FLOAT_NODES)")
    parser.add_argument("--check-sizes", nargs="*", default=list(CHECK_SIZES), metavar="NxHxW",
                        help="frames run through both to compare (default: %(default)s); none: no check")
    parser.add_argument("--tolerance", type=finite_float, default=None,
                        help=f"largest |dp| (p = sigmoid(T)) or |dD| accepted (default {TOLERANCE:g}; none for --int8, "
                             "judged by its scores instead); above it the exit code is 1")
    add_log_level(parser)
    return parser.parse_args(argv)


def write_int8(net: nn.Module, path: Path, meta: dict, args: argparse.Namespace, sets: list) -> None:
    """Export the float32 network beside path, quantise it to path (int8) on the chosen val frames."""
    chosen = calibration_frames(sets, args.calibration_frames)
    float_nodes = FLOAT_NODES if args.float_nodes is None else tuple(args.float_nodes)
    # onnxruntime's percentile calibration stacks every frame's activations into one histogram input, so its frames
    # must share a size: their centres at the largest size all of them hold (MinMax takes each at its own size)
    crop = common_size(sets, chosen) if args.calibration_method == "percentile" else None
    info = {"calibration": {"frames": len(chosen), "split": "val", "centre_crop_hw": crop,
                            "sources": {name: sum(1 for n, _ in chosen if n == name) for name, _ in sets}}}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = export_onnx(net, Path(tmp) / "float32.onnx", meta["export"], args.opset, meta["verifier"])
        quantize_onnx(src, path, frames_of(sets, chosen, crop), args.calibration_method, float_nodes, info=info)


def main(argv: Sequence[str] | None = None) -> int:
    """Export, check and print the differences; return 0, 1 (a difference above --tolerance) or 2 (an error)."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        check_opset(args.opset)
        sizes = [parse_size(s) for s in args.check_sizes]
        if args.onnx.suffix.lower() != ".onnx":
            raise ValueError(f"--onnx {args.onnx} should end in .onnx (inference.py --backend onnxruntime reads it)")
        if args.onnx.is_dir():
            raise ValueError(f"--onnx {args.onnx} is a folder; pass a file name such as {args.onnx / 'lrrnet.onnx'}")
        check_output(args.onnx, args.overwrite, [("--checkpoint", args.checkpoint)], option="--onnx")
        net, meta = load_model(args.checkpoint)
        verifier = meta.get("verifier") if isinstance(meta.get("verifier"), dict) else None
        require("onnxruntime")  # the check needs it: missing, it is named before the export is written
        sets = calibration_sets(meta.get("config") or {}, args.calibration_data) if args.int8 else []
        args.onnx.parent.mkdir(parents=True, exist_ok=True)
        if args.int8:
            write_int8(net, args.onnx, {"export": export_meta(args.checkpoint, meta), "verifier": verifier}, args, sets)
        else:
            export_onnx(net, args.onnx, export_meta(args.checkpoint, meta), args.opset, verifier)
    except (CheckpointError, ConfigError, DataError, ExportError, ValueError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write {args.onnx} ({error.strerror or error}): pass a writable path")
    print(f"wrote {args.onnx} ({args.onnx.stat().st_size / 2 ** 20:.1f} MiB, opset {args.opset}, "
          f"{'int8' if args.int8 else 'float32'}, dynamic batch, height and width"
          + (", with the checkpoint's verifier" if verifier is not None else "") + ")")
    if not sizes:
        return 0
    rows = check_export(net, args.onnx, sizes)
    print("| frames (NxHxW) | max abs dT (logits) | max abs dp (probability) | max abs dD |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['size']} | {row['max_abs_dT']:.2e} | {row['max_abs_dP']:.2e} | {row['max_abs_dD']:.2e} |")
    worst = max(max(r["max_abs_dP"], r["max_abs_dD"]) for r in rows)
    tolerance = args.tolerance if args.tolerance is not None or args.int8 else TOLERANCE
    if tolerance is None:
        print("int8 differs from float32 by design: judge it by its scores (inference.py --score; docs/speed.md)")
        return 0
    if worst > tolerance:
        print(f"the export differs from PyTorch by {worst:.2e}, above --tolerance {tolerance:g}", file=sys.stderr)
        return 1
    print(f"onnxruntime matches PyTorch within {worst:.2e} (tolerance {tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
