"""Inference speed of LRRNet: frames/s at batch 1 against the release's plain path, in one process.

    python benchmarks/bench_model.py                       # CPU (and CUDA when present), all sizes
    python benchmarks/bench_model.py --sizes 512x512 --repeats 5 --compile

Paths, all with the same weights:
  reference  the release's way: explicit softmax(QK^T)V attention, contiguous tensors, float32
  fp32       get_model("LRRNet") in eval: channels_last, scaled_dot_product_attention
  fp32+compile  the same through torch.compile (--compile)
  bf16       utils.runtime.Predictor(dtype="bf16"): the whole network in bfloat16
  bf16+compile  (--compile)
The paths are timed round-robin (one frame each in turn, median of the repeats) so
that the load of a shared machine hits them alike; speed-up = reference time / path time.
Peak memory: the process's peak resident set (CPU, reset before each path through
/proc/self/clear_refs) or torch.cuda.max_memory_allocated (CUDA).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import get_model  # noqa: E402
from utils.runtime import Predictor  # noqa: E402


def peak_reset(device: torch.device) -> None:
    """Reset the peak-memory counter of the device (CPU: the process's peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_gb(device: torch.device) -> float:
    """Return the peak memory since the last reset, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2 ** 20
    return float("nan")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_paths(device: torch.device, compile_: bool, state: dict) -> dict:
    """Return {name: callable(x) -> (D, T)} for every path measured, all with the same weights."""
    def load(net):
        net.load_state_dict(state)
        return net

    ref = load(get_model("LRRNet", attention="explicit", channels_last=False)).to(device).eval()
    paths = {"reference": Predictor(ref, device, "fp32"),
             "fp32": Predictor(load(get_model("LRRNet")), device, "fp32"),
             "bf16": Predictor(load(get_model("LRRNet")), device, "bf16")}
    if compile_:
        paths["fp32+compile"] = Predictor(load(get_model("LRRNet")), device, "fp32", compile=True)
        paths["bf16+compile"] = Predictor(load(get_model("LRRNet")), device, "bf16", compile=True)
    return paths


def run(device: torch.device, sizes: list[tuple[int, int]], repeats: int, compile_: bool) -> list[dict]:
    """Time every path at every size; return one row per (size, path)."""
    torch.manual_seed(0)
    state = get_model("LRRNet").state_dict()
    paths = build_paths(device, compile_, state)
    rows = []
    for h, w in sizes:
        x = torch.rand(1, 1, h, w)
        times = {name: [] for name in paths}
        peaks, outputs = {}, {}
        for name, fn in paths.items():          # warm-up (and compilation), peak memory, outputs
            peak_reset(device)
            outputs[name] = fn(x)[1]
            sync(device)
            fn(x)
            sync(device)
            peaks[name] = peak_gb(device)
        for _ in range(repeats):
            for name, fn in paths.items():
                sync(device)
                start = time.perf_counter()
                fn(x)
                sync(device)
                times[name].append(time.perf_counter() - start)
        ref_t = statistics.median(times["reference"])
        for name in paths:
            t = statistics.median(times[name])
            diff = (outputs[name] - outputs["reference"]).abs().max().item()
            rows.append({"device": device.type, "size": f"{h}x{w}", "path": name, "s_per_frame": t,
                         "fps": 1 / t, "speedup": ref_t / t, "peak_gb": peaks[name], "max_abs_diff_T": diff})
    return rows


def machine(device: torch.device) -> str:
    """Return a one-line description of the machine."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark and print a markdown table; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256x256", "512x512", "1024x1280"], help="HxW")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile paths")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for name in devices:
        device = torch.device(name)
        print(f"# {name}: {machine(device)}", flush=True)
        rows += run(device, sizes, args.repeats, args.compile)
    print("| device | size | path | s/frame | frames/s | speed-up | peak memory GiB | max abs diff T |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['size']} | {r['path']} | {r['s_per_frame']:.3f} | {r['fps']:.2f} | "
              f"{r['speedup']:.2f}x | {r['peak_gb']:.2f} | {r['max_abs_diff_T']:.1e} |")
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
