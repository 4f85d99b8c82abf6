"""Frames/s of inference.py's pipeline against a release-like plain loop, in one run, on the CPU.

    python benchmarks/bench_inference.py                      # 4 frames of 512 x 512, 3 rounds
    python benchmarks/bench_inference.py --frames 8 --rounds 5 --size 512 --threads 2

Paths, all with the same (random) weights and the same synthetic frames:
  release-like  what the release's test script does: get_model("LRRNet", attention="explicit",
                channels_last=False) (its softmax(QK^T)V attention, contiguous tensors), float32, one
                frame at a time: read, /255, forward under no_grad, sigmoid, np.save of T and D and
                an 8-bit PNG of T
  ours fp32     inference.main(): channels_last + scaled_dot_product_attention, batches of equal-size
                frames, reads ahead and writes (.mat, .png, detections) on threads behind the network
  ours bf16     the same with --dtype bf16 (the whole network in bfloat16)
Each round runs every path once, in turn (round-robin, so the load of a shared machine hits them
alike); a path's time is its median over rounds, for the whole job (model load, reads, writes
included). ratio = release-like time / path time.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import inference  # noqa: E402
from benchmarks.timing import print_table, round_robin  # noqa: E402
from models import get_model  # noqa: E402
from utils.checkpoint import atomic_save  # noqa: E402
from utils.data.synthetic import write_dataset  # noqa: E402

TARGET_BIAS = -2.0  # logit offset of the random network's target head (see main)


def release_like(checkpoint: Path, images: Path, out: Path) -> int:
    """Run the plain per-frame loop over images; write OUT/STEM_T.npy, STEM_D.npy, STEM.png; return frames done."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    net = get_model("LRRNet", attention="explicit", channels_last=False)
    net.load_state_dict(state)
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(images.glob("*.png"))
    with torch.no_grad():
        for path in paths:
            frame = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
            d, t = net(torch.from_numpy(frame)[None, None])
            prob = torch.sigmoid(t)[0, 0].numpy()
            np.save(out / f"{path.stem}_T.npy", prob)
            np.save(out / f"{path.stem}_D.npy", d[0, 0].numpy())
            cv2.imwrite(str(out / f"{path.stem}.png"), np.round(prob * 255).astype(np.uint8))
    return len(paths)


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the paths; print a markdown table; return its rows (seconds for all frames, frames/s, ratio)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4, help="frames in the job (default 4)")
    parser.add_argument("--size", type=int, default=512, help="frame side in px (default 512)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds; the median is reported")
    parser.add_argument("--batch-size", type=int, default=None, help="inference.py --batch-size (default its own)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = write_dataset(tmp / "data", n_trainval=1, n_test=args.frames, size=(args.size, args.size), seed=0)
        torch.manual_seed(0)
        net = get_model("LRRNet")
        with torch.no_grad():  # random weights put p near 0.5 and thousands of noise blobs in every map; a
            net.out_conv.bias.fill_(TARGET_BIAS)  # trained map has a handful of targets: shift the logits down
        ckpt = tmp / "random.pt"
        atomic_save({"model": net.state_dict(), "model_name": "LRRNet", "model_hparams": net.hparams()}, ckpt)
        images = root / "test" / "images"

        def ours(dtype: str):
            batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
            return lambda out: inference.main(["--checkpoint", str(ckpt), "--images", str(images), "--out", str(out),
                                               "--dtype", dtype, "--quiet", *batch])

        paths = {"release-like fp32": lambda out: release_like(ckpt, images, out),
                 "ours fp32": ours("fp32"), "ours bf16": ours("bf16")}
        with torch.no_grad():  # warm-up: one frame through each network kind, so no path pays first-call costs
            for kind in ({"attention": "explicit", "channels_last": False}, {}):
                get_model("LRRNet", **kind).eval()(torch.rand(1, 1, args.size, args.size))
        times = round_robin(paths, args.rounds, tmp)
    ref = statistics.median(times["release-like fp32"])
    rows = []
    for name, values in times.items():
        t = statistics.median(values)
        rows.append({"path": name, "seconds": t, "fps": args.frames / t, "ratio": ref / t})
    cpu = platform.processor() or platform.machine()
    print(f"# CPU {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.frames} frames of {args.size} x {args.size}, median of {args.rounds} rounds")
    print_table([{**r, "ratio": f"{r['ratio']:.2f}x"} for r in rows],
                [("path", "path", ""), ("s for all frames", "seconds", ".2f"), ("frames/s", "fps", ".3f"),
                 ("ratio to release-like", "ratio", "")])
    return rows


if __name__ == "__main__":
    main()
