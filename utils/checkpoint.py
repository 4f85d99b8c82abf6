"""Checkpoints: written atomically with RNG states and code revision; slim copies for shipping.

Reading them (ours or the authors' raw state_dicts) is ``models.load_checkpoint`` / ``models.load_model``.
"""
from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from models import CheckpointError, load_checkpoint, load_model
from utils import ROOT
from utils.cli import ArgumentParser
from utils.files import atomic_write

__all__ = ["CheckpointError", "atomic_save", "code_revision", "export", "load_checkpoint", "load_model", "rng_state",
           "set_rng_state", "unwrap"]
FORMAT_VERSION = 1


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends: it then lands between writes, not inside torch.save, whose zip
    writer, interrupted, raises a second error that hides the run's one-line message. The handler is swapped for
    one that only notes the signal (a signal mask would not do: the kernel hands the signal to any thread that does
    not block it, torch's own threads included), and the noted signal goes to the previous handler after the block.
    Main thread only (where Python runs signal handlers); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            if callable(previous):
                previous(signal.SIGINT, None)          # Python's default handler raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


def atomic_save(obj: Any, path: Path) -> None:
    """Write obj with torch.save to path through PATH.tmp, fsync and a rename (never half-written); a Ctrl-C during
    the write takes effect once it is done (``interrupts_deferred``)."""
    with interrupts_deferred():
        atomic_write(path, lambda f: torch.save(obj, f), fsync=True)


def code_revision() -> str:
    """Return the git commit of this code ('+dirty' when it has uncommitted changes), or 'unknown'."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def unwrap(net: nn.Module) -> nn.Module:
    """Return the plain network inside DDP and torch.compile wrappers (its state_dict has the release's names)."""
    while True:
        if hasattr(net, "_orig_mod"):
            net = net._orig_mod
        elif isinstance(net, nn.parallel.DistributedDataParallel):
            net = net.module
        else:
            return net


def rng_state() -> dict:
    """Return the RNG states of torch (CPU and CUDA), numpy and random, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore RNG states saved by rng_state()."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


SHIPPED_KEYS = ("model", "selected_weights", "model_name", "model_hparams", "epoch", "best_metric", "best_epoch",
                "history", "config", "code_revision", "val_names", "saved_at", "torch", "device", "world_size")


def export(source: Path, dest: Path, summary: Path | None = None) -> dict:
    """Write a slim copy of a run's checkpoint (weights + metadata, no optimiser state) to dest; return it.

    With the run's summary.json, the test scores of its best and last checkpoints are stored as well.
    """
    ckpt = load_checkpoint(source)
    slim = {k: ckpt[k] for k in SHIPPED_KEYS if k in ckpt}
    slim["format_version"] = FORMAT_VERSION
    slim["val"] = ckpt.get("val")
    if summary is not None:
        slim["summary"] = json.loads(Path(summary).read_text())
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    atomic_save(slim, Path(dest))
    return slim


def main(argv=None) -> int:
    """``python -m utils.checkpoint RUN/best.pt checkpoints/NAME.pt --summary RUN/summary.json``: export; 0."""
    parser = ArgumentParser(prog="python -m utils.checkpoint", description="Export a run's checkpoint for shipping: "
                                     "python -m utils.checkpoint RUN/best.pt checkpoints/NAME.pt --summary RUN/summary.json")
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--summary", type=Path, default=None)
    args = parser.parse_args(argv)
    out = export(args.source, args.dest, args.summary)
    print(f"wrote {args.dest}: epoch {out['epoch']}, {out['selected_weights']} weights, "
          f"{args.dest.stat().st_size / 2 ** 20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
