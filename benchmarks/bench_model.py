"""Inference speed of LRRNet: frames/s against the release's plain path, in one process.

    python benchmarks/bench_model.py                       # CPU (and CUDA when present), all sizes, batch 1
    python benchmarks/bench_model.py --sizes 512x512 --repeats 5 --compile --onnx
    python benchmarks/bench_model.py --devices cuda --sizes 512x512 --batches 1 16 --compile --cuda-graphs

Paths, all with the same weights:
  reference     the release's way: explicit softmax(QK^T)V attention, contiguous tensors, float32
  fp32          get_model("LRRNet") in eval: channels_last, scaled_dot_product_attention
  fp32+compile  the same through torch.compile (--compile)
  bf16          utils.infer.device.Predictor(dtype="bf16"): the whole network in bfloat16
  bf16+compile  (--compile)
  bf16+graphs   torch.compile(mode="reduce-overhead"): CUDA graphs replay the whole forward (--cuda-graphs, CUDA)
  onnxruntime   the utils.export ONNX export run by onnxruntime, float32 (--onnx, CPU)
  onnxruntime int8  the same export statically quantised (utils.infer.onnx.quantize_onnx, as utils.export --int8
                does; --int8, CPU), calibrated here on 4 random frames: its speed, not its accuracy, is measured
The paths are timed round-robin (one call each in turn, median of the repeats) so that the
load of a shared machine hits them alike; speed-up = reference time / path time at the same
batch. Peak memory: the process's peak resident set (CPU, reset before each path through
/proc/self/clear_refs) or torch.cuda.max_memory_allocated (CUDA).
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import get_model  # noqa: E402
from utils.files import write_json  # noqa: E402
from utils.infer.device import Predictor, cpu_has_native_bf16  # noqa: E402


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


def build_paths(device: torch.device, compile_: bool, state: dict, cuda_graphs: bool = False,
                onnx: bool = False, int8: bool = False) -> dict:
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
    if cuda_graphs and device.type == "cuda":
        graphs = Predictor(load(get_model("LRRNet")), device, "bf16")
        graphs.run = torch.compile(graphs.net, mode="reduce-overhead")
        paths["bf16+graphs"] = graphs
    if (onnx or int8) and device.type == "cpu":
        from utils.infer.onnx import OnnxPredictor, export_onnx, quantize_onnx  # optional: onnx, onnxruntime
        path = Path(tempfile.mkdtemp()) / "lrrnet.onnx"
        export_onnx(load(get_model("LRRNet")), path)
        if onnx:
            paths["onnxruntime"] = OnnxPredictor(path)
        if int8:
            frames = [np.random.default_rng(k).random((128, 160), np.float32) for k in range(4)]
            paths["onnxruntime int8"] = OnnxPredictor(quantize_onnx(path, path.with_suffix(".int8.onnx"), frames))
    return paths


def run(device: torch.device, sizes: list[tuple[int, int]], repeats: int, compile_: bool, batches: tuple[int, ...] = (1,),
        cuda_graphs: bool = False, onnx: bool = False, on_rows=None, int8: bool = False) -> list[dict]:
    """Time every path at every size and batch; return one row per (size, batch, path).

    on_rows(rows) is called with each (size, batch)'s rows as soon as they are timed, so that a run stopped
    part-way (a time limit) still leaves what it measured."""
    torch.manual_seed(0)
    state = get_model("LRRNet").state_dict()
    paths = build_paths(device, compile_, state, cuda_graphs, onnx, int8)
    rows = []
    for (h, w), n in itertools.product(sizes, batches):
        x = torch.rand(n, 1, h, w)
        times = {name: [] for name in paths}
        peaks, outputs = {}, {}
        for name, fn in paths.items():          # warm-up (and compilation, graph capture), peak memory, outputs
            peak_reset(device)
            outputs[name] = fn(x)[1]
            sync(device)
            for _ in range(3 if device.type == "cuda" else 1):  # CUDA graphs record on the 2nd or 3rd call
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
            rows.append({"device": device.type, "size": f"{h}x{w}", "batch": n, "path": name, "s_per_call": t,
                         "fps": n / t, "speedup": ref_t / t, "peak_gb": peaks[name], "max_abs_diff_T": diff})
        if on_rows is not None:
            on_rows(rows[-len(paths):])
    return rows


TABLE_HEAD = ("| device | size | batch | path | s/call | frames/s | speed-up | peak memory GiB | max abs diff T |\n"
              "|---|---|---|---|---|---|---|---|---|")


def row_lines(rows: list[dict]) -> str:
    """Return the rows as markdown table lines (no header)."""
    return "\n".join(f"| {r['device']} | {r['size']} | {r['batch']} | {r['path']} | {r['s_per_call']:.4f} | "
                     f"{r['fps']:.2f} | {r['speedup']:.2f}x | {r['peak_gb']:.2f} | {r['max_abs_diff_T']:.1e} |"
                     for r in rows)


def machine(device: torch.device) -> str:
    """Return a one-line description of the machine."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}, native bf16: "
            f"{'yes' if cpu_has_native_bf16() else 'no'}; flags: {' '.join(cpu_flags()) or 'unknown'}")


def cpu_name() -> str:
    """Return the CPU's model name (/proc/cpuinfo), or the platform's processor."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Return the CPU flags that decide the fast paths (AVX2, AVX-512, VNNI, BF16, AMX) that /proc/cpuinfo lists."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in have]
    return []


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark and print a markdown table; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["256x256", "512x512", "1024x1280"], help="HxW")
    parser.add_argument("--batches", nargs="+", type=int, default=[1], help="frames per call (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile paths")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time CUDA graphs (bf16, CUDA only)")
    parser.add_argument("--onnx", action="store_true", help="also time the ONNX export with onnxruntime (CPU only)")
    parser.add_argument("--int8", action="store_true", help="also time the int8 ONNX export (CPU only)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for PyTorch and onnxruntime alike (default: PyTorch's; 1 measures the arithmetic "
                             "on a loaded machine, where waiting threads spin)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    if args.threads:
        torch.set_num_threads(args.threads)   # onnxruntime's sessions follow (utils.infer.onnx.OnnxPredictor)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []

    def on_rows(new: list[dict]) -> None:    # each (size, batch) printed and saved as soon as it is timed
        rows.extend(new)
        print(row_lines(new), flush=True)
        if args.json is not None:
            write_json(args.json, {"machine": {d: machine(torch.device(d)) for d in devices}, "rows": rows})

    for name in devices:
        device = torch.device(name)
        print(f"# {name}: {machine(device)}\n{TABLE_HEAD}", flush=True)
        run(device, sizes, args.repeats, args.compile, tuple(args.batches), args.cuda_graphs, args.onnx, on_rows,
            args.int8)
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
