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

import importlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17  # the oldest opset with every op the network needs (GroupNormalization is not used: it decomposes)
META_KEY = "lrrnet"  # the metadata_props key holding the checkpoint's metadata as JSON
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
    the interface of ``utils.infer.device.Predictor``, so the export path of inference.py is the same for both backends."""

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
