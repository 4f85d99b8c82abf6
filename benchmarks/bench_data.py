"""Data loading speed: shows that loading never limits a CPU training step.

Times a DataLoader (batch 8, 256 x 256 training crops with TrainTransform) in frames per
second: first the plain reference (decode every frame from disk on each access, no cache),
then the cached dataset with 0 and 2 workers. A CPU training step of LRRNet on 8 x 256 x 256
takes about 4-6 s on this project's 2-core machine, i.e. it consumes about 1.6 frames/s;
loading must be far faster than that. Workers run torch with one thread each; with 0 workers
the transform's small tensor ops share the training process's threads, which is slower on a
busy 2-core machine (still far above the need).

    python benchmarks/bench_data.py                      # synthetic 320 x 400 frames in a temp folder
    python benchmarks/bench_data.py --data-root SIRSTv1        # a release name (datasets/SIRSTv1) or any path
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.data import IRSTDDataset  # noqa: E402
from utils.data.synthetic import write_dataset  # noqa: E402
from utils.data.transforms import TrainTransform  # noqa: E402

TRAIN_STEP_S = 5.0  # a CPU training step of 8 x 256 x 256 here (4-6 s)
BATCH = 8


def frames_per_second(dataset: IRSTDDataset, workers: int, batches: int) -> float:
    """Return frames/s delivered by a shuffled DataLoader over ``batches`` batches (after one warm-up batch)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=False
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up is paid once per epoch, not per step
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    """Print a table of loading speeds in frames/s; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None, help="dataset folder (default: synthetic frames in a temp folder)")
    parser.add_argument("--split", default="trainval")
    parser.add_argument("--batches", type=int, default=30, help="batches timed per row")
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or write_dataset(Path(tmp) / "syn", n_trainval=128, n_test=1, size=(320, 400), seed=0)
        transform = TrainTransform(crop_size=args.crop)
        rows = []
        uncached = IRSTDDataset(root, args.split, transform=transform, cache=False)
        rows.append(("reference: decode from disk, no cache", 0, frames_per_second(uncached, 0, args.batches)))
        start = time.perf_counter()
        cached = IRSTDDataset(root, args.split, transform=transform, cache=True)
        setup = time.perf_counter() - start
        for workers in (0, 2):
            rows.append(("cached", workers, frames_per_second(cached, workers, args.batches)))
    need = BATCH / TRAIN_STEP_S
    print(
        f"data: {args.data_root or 'synthetic 400x320'} / {args.split}: {len(cached)} frames; "
        f"cached dataset built (index + check + decode) in {setup:.1f} s; batch {BATCH}, crop {args.crop}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'loader':<40} {'workers':>7} {'frames/s':>9} {'x training need':>16}")
    for name, workers, fps in rows:
        print(f"{name:<40} {workers:>7} {fps:>9.0f} {fps / need:>16.0f}")
    print(f"a CPU training step of {BATCH} frames takes ~{TRAIN_STEP_S:.0f} s: it needs {need:.1f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
