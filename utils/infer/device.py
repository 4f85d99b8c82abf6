"""Device choice and the fast inference paths (bf16 / fp16, torch.compile), chosen once and passed down."""
from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Return True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX); False means emulated (slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return False


def select_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name`` ("auto" picks CUDA when present, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> str:
    """Return the dtype name to run: "auto" is "bf16" on a CPU that computes bfloat16 natively, else "fp32"."""
    if name != "auto":
        return name
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def parse_dtype(name: str) -> torch.dtype:
    """Return the torch dtype for "fp32", "bf16" or "fp16"."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is unknown; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


@contextlib.contextmanager
def fixed_algorithms():
    """Turn cuDNN's autotuning (benchmark mode) off inside the block: for frames of many sizes, such as validation
    and mining on native frames, where timing every new shape costs far more than it saves."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Return an autocast context for a low-precision dtype, or a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class Predictor(nn.Module):
    """Wraps a network for inference; ``forward(x float32) -> (D, T)`` in float32 whatever the compute dtype.

    bf16 runs the whole network in bfloat16 (weights cast once): on this project's
    2-core CPU that is 2.5x faster than autocast, which casts around every GroupNorm.
    fp16 uses autocast, which keeps GroupNorm and softmax in float32 (fp16 overflows there).
    """

    def __init__(self, net: nn.Module, device: torch.device, dtype: str = "fp32", compile: bool = False):
        super().__init__()
        self.device, self.dtype = device, parse_dtype(dtype)
        if self.dtype == torch.float16 and device.type == "cpu":
            raise ValueError("fp16 on the CPU is slower than fp32 and not supported here; use --dtype fp32 "
                             "(or bf16 on a CPU with AVX512-BF16 or AMX)")
        if self.dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            logging.getLogger(__name__).warning(
                "this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 is emulated and about 10x slower than "
                "fp32 here (measured on an AVX2 EPYC); use --dtype fp32")
        net = net.to(device).eval()
        self.weight_dtype = torch.bfloat16 if self.dtype == torch.bfloat16 else torch.float32
        self.net = net.to(self.weight_dtype)
        self.run = torch.compile(self.net) if compile else self.net
        self.verification = None  # utils.verify.Verification: set to re-score candidates after the network

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, self.weight_dtype, non_blocking=True)
        with autocast(self.device, self.dtype if self.dtype == torch.float16 else torch.float32):
            d, t = self.run(x)
        return d.float(), t.float()
