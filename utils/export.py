"""Export LRRNet to ONNX, check the export against PyTorch with onnxruntime, and run exports.

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
import importlib
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models import CheckpointError, load_model
from utils.cli import add_log_level, fail, finite_float, positive_int, setup_logging
from utils.files import file_sha256

log = logging.getLogger("export")
OPSET = 17  # the oldest opset with every op the network needs (GroupNormalization is not used: it decomposes)
META_KEY = "lrrnet"  # the metadata_props key holding the checkpoint's metadata as JSON
CHECK_SIZES = ("1x256x256", "2x97x131", "1x512x640")  # batch x H x W: a multiple of 8, an odd size, a wide frame
# largest |dp| (p = sigmoid(T), what is exported and scored) or |dD| accepted. Not logits: a trained network's
# logits reach tens, and float32 kernels summing in another order move them by ~4e-3 (lrrnet_general.pt)
TOLERANCE = 2e-3
DYNAMIC = {name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "D", "T")}


class ExportError(ValueError):
    """An export that cannot be made or run (missing onnx/onnxruntime, a file that is not an export)."""


def require(name: str):
    """Return the module onnx or onnxruntime, or raise ExportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"{name} is not installed: pip install {name} (it is in requirements.txt)") from None


def export_onnx(net: nn.Module, path: Path, meta: dict | None = None, opset: int = OPSET) -> Path:
    """Write the network (eval, float32) to path as ONNX with dynamic batch, height and width; return path.

    The file is written to a temporary name next to path and renamed, so path is whole or absent.
    """
    onnx = require("onnx")
    net = net.float().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():  # the tracer warns about the shape arithmetic it records
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.rand(1, 1, 64, 96),), tmp, input_names=["image"],
                              output_names=["D", "T"], dynamic_axes=DYNAMIC, opset_version=opset, dynamo=False)
        model = onnx.load(tmp)
        prop = model.metadata_props.add()
        prop.key, prop.value = META_KEY, json.dumps(meta or {}, default=str)  # tuples as lists, the rest as text
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxPredictor:
    """Runs an ONNX export with onnxruntime; ``__call__(x float32 N x 1 x H x W) -> (D, T)`` as torch tensors,
    the interface of ``utils.runtime.Predictor``, so the export path of inference.py is the same for both backends."""

    def __init__(self, path: str | Path, device: torch.device = torch.device("cpu")):
        ort = require("onnxruntime")
        self.verification = None  # the export holds LRRNet alone, not a checkpoint's verifier (utils.verify)
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"ONNX model {path} does not exist; write one with python -m utils.export "
                              f"--checkpoint CKPT --onnx {path}")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ExportError("--device cuda with --backend onnxruntime needs onnxruntime-gpu "
                                  "(pip install onnxruntime-gpu); or use --device cpu, or the PyTorch backend")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for any unreadable or foreign file
            raise ExportError(f"ONNX model {path} could not be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]}); re-export it with python -m utils.export") from None
        names = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        if names != (["image"], ["D", "T"]):
            raise ExportError(f"ONNX model {path} has inputs {names[0]} and outputs {names[1]}, not an LRRNet export "
                              "(image -> D, T); write one with python -m utils.export")
        self.device, self.dtype = device, torch.float32
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get(META_KEY, "{}"))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        d, t = self.session.run(["D", "T"], {"image": image})
        return torch.from_numpy(d), torch.from_numpy(t)


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
    parser = argparse.ArgumentParser(description="Export an LRRNet checkpoint to ONNX (dynamic batch, height, width) "
                                                 "and check it against PyTorch with onnxruntime.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint (.pt) or the authors' raw state_dict (.pkl/.pth)")
    parser.add_argument("--onnx", required=True, type=Path, help="the .onnx file to write")
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
