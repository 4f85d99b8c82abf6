"""Frames/s of ``inference.py --video`` against a plain per-frame loop, in one run, on the CPU.

    python benchmarks/bench_video.py                          # a 300-frame 320 x 256 clip, 3 rounds
    python benchmarks/bench_video.py --frames 150 --rounds 5 --checkpoint checkpoints/lrrnet_sirst_v1.pt

The clip is generated (synthetic sky/terrain scene, sensor noise, a small target moving across
it) and written as a 3-channel grey mp4, like the IR-Drone-Video files. Paths, same weights:
  plain DTYPE   the obvious loop: cv2.VideoCapture.read, grey, / 255, one forward per frame
                (utils.infer.device.Predictor, same dtype), sigmoid, utils.infer.predict.detect_targets
  ours DTYPE    inference.main(["--video", ...]): decoding on a thread ahead of the network,
                detections.csv/json written at the end; with a checkpoint that holds a verifier
                (utils.verify) also "ours DTYPE --no-verify", the same job without that second stage
Each round runs every path once, in turn; a path's time is its median over rounds, for the
whole job (model load included). ratio = plain time of the same dtype / path time.

With --clip a real video is timed instead (make bench: the 320 x 256 clip of datasets/samples); with
--onnx also "ours onnxruntime fp32" and "ours onnxruntime int8": inference.py --backend onnxruntime on
the checkpoint's float32 export and on its int8 export (calibrated here on 4 of the clip's frames: its
speed is measured, not its accuracy), with the checkpoint's verifier as the PyTorch job has it; their
ratio is to plain fp32.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import inference  # noqa: E402
from benchmarks.bench_model import cpu_flags, cpu_name  # noqa: E402
from benchmarks.timing import print_table, round_robin  # noqa: E402
from models.load import load_checkpoint, load_model  # noqa: E402
from utils import ROOT  # noqa: E402
from utils.data import count_frames, iter_video_frames  # noqa: E402
from utils.data.synthetic import make_scene  # noqa: E402
from utils.export import export_meta  # noqa: E402
from utils.infer.device import Predictor, cpu_has_native_bf16  # noqa: E402
from utils.infer.predict import detect_targets  # noqa: E402

DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "lrrnet_sirst_v1.pt"


def write_clip(path: Path, n: int, height: int = 256, width: int = 320, seed: int = 0) -> Path:
    """Write an n-frame grey mp4: one synthetic scene, fresh sensor noise per frame, a 3 px target moving right."""
    scene, _ = make_scene(seed, height, width)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    for i in range(n):
        frame = scene.astype(np.float32) + rng.normal(0, 2, scene.shape)
        col = 10 + (i * 2) % (width - 20)
        frame[height // 3:height // 3 + 3, col:col + 3] += 60
        writer.write(cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def plain_loop(checkpoint: Path, video: Path, dtype: str) -> int:
    """Run the per-frame loop over the video; return the number of detections (so nothing is optimised away)."""
    net, _ = load_model(checkpoint)
    predictor = Predictor(net, torch.device("cpu"), dtype)
    capture = cv2.VideoCapture(str(video))
    found = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        grey = frame[..., 0].astype(np.float32) / 255.0
        _, t = predictor(torch.from_numpy(grey)[None, None])
        found += len(detect_targets(torch.sigmoid(t)[0, 0].numpy()))
    capture.release()
    return found


def write_exports(checkpoint: Path, video: Path, tmp: Path) -> dict[str, Path]:
    """Write the checkpoint's float32 and int8 ONNX exports (with its verifier) under tmp; return {name: path}."""
    from utils.infer.onnx import export_onnx, quantize_onnx  # optional: onnx, onnxruntime

    net, meta = load_model(checkpoint)
    verifier = meta.get("verifier") if isinstance(meta.get("verifier"), dict) else None
    fp32 = export_onnx(net, tmp / "fp32.onnx", export_meta(checkpoint, meta), verifier=verifier)
    frames = [frame.astype(np.float32) / 255 for _, frame in iter_video_frames(video, every=25)][:4]
    return {"fp32": fp32, "int8": quantize_onnx(fp32, tmp / "int8.onnx", frames)}


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the paths; print a markdown table; return its rows (seconds, frames/s, ratio to plain)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames in the clip (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds; the median is reported")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="weights (default the shipped "
                        "SIRST v1 checkpoint)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--clip", type=Path, default=None, help="time this video instead of a generated one")
    parser.add_argument("--onnx", action="store_true", help="also time the onnxruntime backend, fp32 and int8")
    args = parser.parse_args(argv)
    has_verifier = isinstance(load_checkpoint(args.checkpoint).get("verifier"), dict)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = args.clip if args.clip is not None else write_clip(tmp / "clip.mp4", args.frames)
        n_frames = count_frames(video)
        paths = {}

        def ours(dtype: str, *extra: str, checkpoint: Path = args.checkpoint):
            return lambda out: inference.main(["--checkpoint", str(checkpoint), "--video", str(video), "--out",
                                               str(out), *(["--dtype", dtype] if dtype in ("fp32", "bf16") else []),
                                               *extra, "--quiet", "--log-level", "warning"])

        for dtype in args.dtypes:
            paths[f"plain {dtype}"] = lambda out, d=dtype: plain_loop(args.checkpoint, video, d)
            paths[f"ours {dtype}"] = ours(dtype)
            if has_verifier:   # the second stage's cost: the same job without it
                paths[f"ours {dtype} --no-verify"] = ours(dtype, "--no-verify")
        if args.onnx:
            for name, path in write_exports(args.checkpoint, video, tmp).items():
                paths[f"ours onnxruntime {name}"] = ours(name, "--backend", "onnxruntime", checkpoint=path)
        plain_loop(args.checkpoint, video, args.dtypes[0])  # warm-up: first-call costs paid by nobody
        times = round_robin(paths, args.rounds, tmp)
    rows = []
    for name, values in times.items():
        t = statistics.median(values)
        ref = statistics.median(times.get("plain " + name.split()[1], times[f"plain {args.dtypes[0]}"]))
        rows.append({"path": name, "seconds": t, "fps": n_frames / t, "ratio": ref / t})
    print(f"# CPU {cpu_name()}, {os.cpu_count()} cores, native bf16: {'yes' if cpu_has_native_bf16() else 'no'}, "
          f"flags: {' '.join(cpu_flags())}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{n_frames} frames of {video.name if args.clip else 'a generated clip'} (320 x 256), median of "
          f"{args.rounds} rounds, whole job incl. model load")
    print_table([{**r, "ratio": f"{r['ratio']:.2f}x"} for r in rows],
                [("path", "path", ""), ("s for all frames", "seconds", ".2f"), ("frames/s", "fps", ".1f"),
                 ("ratio to plain, same dtype", "ratio", "")])
    return rows


if __name__ == "__main__":
    main()
