"""Training throughput: frames/s of our training step against a plain loop of the same network, in one process.

    python benchmarks/bench_train.py                   # batch 8 at 256 x 256 on the CPU (and CUDA when present)
    python benchmarks/bench_train.py --steps 6 --bf16

plain   the release's way: contiguous tensors, explicit softmax(QK^T)V attention, float32,
        frames decoded from disk for every batch (IRSTDDataset(cache=False))
ours    the engine's way: channels_last, scaled_dot_product_attention, in-place ReLU,
        decoded frames cached in memory; "+bf16" adds bf16 autocast (CUDA: bf16 autocast always)
Steps alternate between the paths (one step each in turn) and the median is reported,
so that the load of a shared machine hits both alike. Data: synthetic 256 x 256 scenes
written to a temporary folder.

    python benchmarks/bench_train.py --loaders --batch-size 16     # the two data paths (docs/gpu.md)

--loaders compares how training batches are made, with ours (fp32 on the CPU, bf16 on CUDA):
dataloader  today's: a DataLoader over the cached frames, TrainTransform on each crop (--workers processes)
device      --loader device: the frames held on the device, crops and turns cut there in batches
each as a whole training step (data, forward, backward, Adam) and as the data alone, in crops/s.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import print_table  # noqa: E402
from models import get_model  # noqa: E402
from utils.data import IRSTDDataset  # noqa: E402
from utils.data.synthetic import write_dataset  # noqa: E402
from utils.data.transforms import TrainTransform  # noqa: E402
from utils.infer.device import autocast  # noqa: E402
from utils.train.feeder import DeviceFeeder  # noqa: E402
from utils.train.losses import LRRLoss  # noqa: E402


def make_path(root: Path, device: torch.device, fast: bool, dtype: torch.dtype, batch: int, state: dict):
    """Return a callable doing one training step (data included) of one path; all paths start from state."""
    train_on = make_step(device, dtype, state, fast)
    data = IRSTDDataset(root, "train", transform=TrainTransform(crop_size=256), cache=fast)
    batches = iter(DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(0)))

    def step():
        nonlocal batches
        try:
            item = next(batches)
        except StopIteration:
            batches = iter(DataLoader(data, batch_size=batch, shuffle=True, drop_last=True))
            item = next(batches)
        train_on(item["image"].to(device), item["mask"].to(device))
    return step


def loader_paths(root: Path, device: torch.device, batch: int, workers: int, dtype: torch.dtype, state: dict):
    """Return {name: (batch maker, training step on a batch)} of the two data paths, both with our network."""
    transform = TrainTransform(crop_size=256, target_prob=0.5)
    data = IRSTDDataset(root, "train", transform=transform)
    feeder = DeviceFeeder(IRSTDDataset(root, "train"), 256, 0.5, True, True, 0.0, 0, device)

    def dataloader():
        return iter(DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                               pin_memory=device.type == "cuda", persistent_workers=workers > 0))

    seeds = itertools.count(1)

    def device_epoch():
        return feeder.epoch(len(feeder) // batch, batch, next(seeds))     # every epoch its own seed

    paths = {}
    for name, epoch in (("dataloader", dataloader), ("device", device_epoch)):
        batches = epoch()

        def next_batch(epoch=epoch, name=name):
            nonlocal batches
            item = next(batches, None)
            if item is None:
                batches = epoch()
                item = next(batches)
            out = item["image"].to(device, non_blocking=True), item["mask"].to(device, non_blocking=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out
        paths[name] = (next_batch, make_step(device, dtype, state))
    return paths


def make_step(device: torch.device, dtype: torch.dtype, state: dict, fast: bool = True):
    """Return a training step on a given batch of our network (fast) or the release's way (explicit attention,
    channels first), from state."""
    net = get_model("LRRNet", attention="sdpa" if fast else "explicit", channels_last=fast)
    net.load_state_dict(state)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = LRRLoss("release")

    def step(image, mask):
        with autocast(device, dtype):
            d, t = net(image)
        loss, _ = loss_fn(d, t, image, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def compare_loaders(root: Path, devices: list, args) -> list[dict]:
    """Time the two data paths, data alone and whole steps, alternating; return the rows."""
    torch.manual_seed(0)
    state = get_model("LRRNet").state_dict()
    rows = []
    for device in devices:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        paths = loader_paths(root, device, args.batch_size, args.workers, dtype, state)
        data_times = {name: [] for name in paths}
        step_times = {name: [] for name in paths}
        for next_batch, step in paths.values():
            batch = next_batch()                    # warm-up
            if not args.data_only:
                step(*batch)
        for _ in range(args.steps):
            for name, (next_batch, step) in paths.items():
                start = time.perf_counter()
                batch = next_batch()
                middle = time.perf_counter()
                if not args.data_only:
                    step(*batch)
                data_times[name].append(middle - start)
                step_times[name].append(time.perf_counter() - start)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}"
        parts = (("data alone", data_times),) if args.data_only else (("whole step", step_times),
                                                                      ("data alone", data_times))
        for name in paths:
            for part, times in parts:
                t = statistics.median(times[name])
                rows.append({"device": where, "path": name, "part": part, "s": t, "cps": args.batch_size / t,
                             "dtype": str(dtype).removeprefix("torch.")})
    print(f"batch {args.batch_size} x 1 x 256 x 256, workers {args.workers}, torch {torch.__version__}, "
          f"median of {args.steps} steps")
    print_table(rows, [("device", "device", ""), ("path", "path", ""), ("part", "part", ""), ("dtype", "dtype", ""),
                       ("s/batch", "s", ".4f"), ("crops/s", "cps", ".1f")])
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the paths and print a markdown table; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bf16", action="store_true", help="also time ours with bf16 autocast on the CPU")
    parser.add_argument("--loaders", action="store_true", help="compare the data paths instead (see above)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of --loaders")
    parser.add_argument("--no-cpu", action="store_true", help="time CUDA only (a GPU window's minutes)")
    parser.add_argument("--data-only", action="store_true", help="--loaders: time the batches alone, no steps")
    args = parser.parse_args(argv)
    devices = ([] if args.no_cpu else [torch.device("cpu")]) + ([torch.device("cuda")] if torch.cuda.is_available()
                                                                 else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "scenes", n_trainval=64, n_test=4, size=(256, 256), seed=0)
        if args.loaders:
            return compare_loaders(root, devices, args)
        torch.manual_seed(0)
        state = get_model("LRRNet").state_dict()
        for device in devices:
            paths = {"plain": make_path(root, device, False, torch.float32, args.batch_size, state),
                     "ours": make_path(root, device, True, torch.float32, args.batch_size, state)}
            if args.bf16 or device.type == "cuda":
                paths["ours+bf16"] = make_path(root, device, True, torch.bfloat16, args.batch_size, state)
            times = {name: [] for name in paths}
            for step in paths.values():
                step()                                  # warm-up
            for _ in range(args.steps):
                for name, step in paths.items():
                    start = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - start)
            plain = statistics.median(times["plain"])
            where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{os.cpu_count()}"
            for name in paths:
                t = statistics.median(times[name])
                rows.append({"device": where, "path": name, "s_per_step": t, "fps": args.batch_size / t,
                             "speedup": plain / t})
    print(f"batch {args.batch_size} x 1 x 256 x 256, torch {torch.__version__}, median of {args.steps} steps")
    print_table([{**r, "speedup": f"{r['speedup']:.2f}x"} for r in rows],
                [("device", "device", ""), ("path", "path", ""), ("s/step", "s_per_step", ".2f"),
                 ("frames/s", "fps", ".2f"), ("speed-up", "speedup", "")])
    return rows


if __name__ == "__main__":
    main()
