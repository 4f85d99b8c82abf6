"""The ONNX backend: writing an export of LRRNet (``export_onnx``) and running one with onnxruntime
(``OnnxPredictor``, the interface of ``utils.infer.device.Predictor``). The command that writes and checks an
export is ``python -m utils.export``.

The exported graph takes ``image`` (N x 1 x H x W float32 in [0, 1]) and returns ``D`` (the
reconstruction) and ``T`` (target logits), both N x 1 x H x W: batch, height and width are dynamic,
and the padding to a multiple of 8 and the crop back are inside the graph. The checkpoint's metadata
travels in the model's metadata (``META_KEY``). onnx and onnxruntime are optional dependencies,
imported when used (``require``).
"""
from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

OPSET = 17  # the oldest opset with every op the network needs (GroupNormalization is not used: it decomposes)
OPSET_MAX = 20  # the newest opset torch's TorchScript exporter (dynamo=False) writes
META_KEY = "lrrnet"  # the metadata_props key holding the checkpoint's metadata as JSON
VERIFIER_KEY = "lrrnet_verifier"  # the checkpoint's verifier (utils.verify): torch.save bytes of it, base64
QUANT_KEY = "lrrnet_quantization"  # an int8 export: how it was quantised and calibrated, as JSON
DYNAMIC = {name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "D", "T")}


class ExportError(ValueError):
    """An export that cannot be made or run (missing onnx/onnxruntime, a file that is not an export)."""


def require(name: str):
    """Return the module onnx, onnxruntime or one of theirs (onnxruntime.quantization), or raise ExportError saying
    which package to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        package = name.split(".")[0]       # onnxruntime.quantization ships in the onnxruntime package
        raise ExportError(f"{name} is not installed: pip install {package} (it is in requirements.txt)") from None


def check_opset(opset: int) -> int:
    """Return opset, or raise ExportError naming it and the range the export supports."""
    if not OPSET <= opset <= OPSET_MAX:
        raise ExportError(f"--opset {opset} is outside the range this export supports, {OPSET} to {OPSET_MAX} "
                          f"({OPSET}: the oldest with every op LRRNet needs; {OPSET_MAX}: the newest torch's exporter "
                          f"writes); pass one of them or leave the default {OPSET}")
    return opset


def encode_verifier(entry: dict) -> str:
    """Return a checkpoint's verifier entry (hparams, tau, state_dict) as text for the export's metadata."""
    buffer = io.BytesIO()
    torch.save({k: entry[k] for k in ("hparams", "tau", "state_dict")}, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_verifier(text: str) -> dict:
    """Return the verifier entry that ``encode_verifier`` wrote (tensors and plain values only)."""
    return torch.load(io.BytesIO(base64.b64decode(text)), map_location="cpu", weights_only=True)


def write_model(model, path: Path) -> Path:
    """Save an onnx ModelProto to path through a temporary file beside it, so path is whole or absent; return path."""
    onnx = require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def set_metadata(model, values: dict[str, str]) -> None:
    """Set (or replace) metadata_props entries of an onnx ModelProto."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def export_onnx(net: nn.Module, path: Path, meta: dict | None = None, opset: int = OPSET,
                verifier: dict | None = None) -> Path:
    """Write the network (eval, float32) to path as ONNX with dynamic batch, height and width; return path.

    ``verifier``: a checkpoint's verifier entry, stored in the metadata (``VERIFIER_KEY``) so that inference.py
    applies it after the exported network as it does after the PyTorch one. The file is written to a temporary
    name next to path and renamed, so path is whole or absent.
    """
    onnx = require("onnx")
    check_opset(opset)
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
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    values = {META_KEY: json.dumps(meta or {}, default=str)}  # tuples as lists, the rest as text
    if verifier is not None:
        values[VERIFIER_KEY] = encode_verifier(verifier)
    set_metadata(model, values)
    return write_model(model, path)


class FrameReader:
    """onnxruntime's calibration data reader over frames (each H x W float32 in [0, 1]), one a batch."""

    def __init__(self, frames: Iterable[np.ndarray]):
        self.frames = iter(frames)

    def get_next(self) -> dict | None:
        frame = next(self.frames, None)
        return None if frame is None else {"image": np.ascontiguousarray(frame, np.float32)[None, None]}


def quantize_onnx(src: Path, dst: Path, frames: Iterable[np.ndarray], method: str = "minmax",
                  exclude: Sequence[str] = (), op_types: Sequence[str] = ("Conv",), info: dict | None = None) -> Path:
    """Write a statically quantised (int8) copy of the float32 export src to dst; return dst.

    QDQ format, weights int8 per output channel, activations uint8 per tensor (the pairing onnxruntime's
    x86 kernels run fastest), scales from ``frames`` by ``method`` ("minmax" or "percentile"). Only the ops
    in ``op_types`` are quantised, and none of the nodes named in ``exclude``: those stay float32. The
    metadata of src (checkpoint, verifier) is kept, and QUANT_KEY records how dst was made (``info``).
    """
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    methods = {"minmax": quantization.CalibrationMethod.MinMax,
               "percentile": quantization.CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"calibration method {method!r} is unknown; choose one of {sorted(methods)}")
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.is_dir() else None) as tmp:
        quantized = Path(tmp) / "int8.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)  # its advice to pre-process, through the root logger, on every call
            try:
                quantization.quantize_static(
                    str(src), str(quantized), FrameReader(frames), quant_format=quantization.QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), per_channel=True, nodes_to_exclude=list(exclude),
                    activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
                    calibrate_method=methods[method], calibration_providers=["CPUExecutionProvider"])
            finally:
                logging.disable(logging.NOTSET)
        model = onnx.load(str(quantized))
    source = onnx.load(str(src), load_external_data=False)
    values = {p.key: p.value for p in source.metadata_props}
    values[QUANT_KEY] = json.dumps({"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
                                    "method": method, "op_types": list(op_types), "float_nodes": list(exclude),
                                    **(info or {})}, default=str)
    set_metadata(model, values)
    return write_model(model, dst)


class OnnxPredictor:
    """Runs an ONNX export with onnxruntime; ``__call__(x float32 N x 1 x H x W) -> (D, T)`` as torch tensors,
    the interface of ``utils.infer.device.Predictor``, so the export path of inference.py is the same for both backends."""

    def __init__(self, path: str | Path, device: torch.device = torch.device("cpu"), threads: int | None = None):
        ort = require("onnxruntime")
        self.verification = None  # utils.verify.Verification: set to re-score candidates after the network
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
        options.intra_op_num_threads = threads or torch.get_num_threads()  # as many as PyTorch uses here
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
        custom = self.session.get_modelmeta().custom_metadata_map
        self.meta = json.loads(custom.get(META_KEY, "{}"))
        self.quantization = json.loads(custom[QUANT_KEY]) if QUANT_KEY in custom else None
        self.dtype_name = "int8" if self.quantization is not None else "fp32"  # what a run's manifest records
        try:  # the checkpoint's verifier, when the export carries one (inference.py applies it unless --no-verify)
            self.verifier_entry = decode_verifier(custom[VERIFIER_KEY]) if VERIFIER_KEY in custom else None
        except (ValueError, RuntimeError, EOFError) as err:
            raise ExportError(f"ONNX model {path}: its verifier entry does not load ({str(err).splitlines()[0]}); "
                              "re-export it with python -m utils.export") from None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        d, t = self.session.run(["D", "T"], {"image": image})
        return torch.from_numpy(d), torch.from_numpy(t)
