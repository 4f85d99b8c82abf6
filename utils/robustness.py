"""Noise robustness: score a checkpoint on a split with Gaussian noise of increasing sigma added to the frames.

    python -m utils.robustness --checkpoint best.pt --data-root NUDT-SIRST --split test
    python -m utils.robustness --checkpoint best.pt --data-root DIR --sigmas 5 10 15 20 30 --seed 0 --out DIR

Sigma is in 8-bit grey levels (units of 1/255 of the [0, 1] intensity range), as NoisySIRST
states it. For each frame and each sigma > 0:

    noisy = clip(frame + sigma / 255 * z, 0, 1),   z ~ N(0, 1) per pixel, float32
    noisy = round(255 * noisy) / 255               (re-quantised to 8 bits; --no-quantise skips it)

Re-quantising is the default because NoisySIRST stores its noisy frames as 8-bit PNGs, so the
network sees exactly what it would read from such a file. ``--no-quantise`` keeps the float
frame (use it for 16-bit data, where 8 bits would also lose signal). Sigma 0 is the clean frame
as read (no noise, no re-quantisation), so its row equals the clean scoring of the split.

Noise is deterministic: z of a frame depends only on --seed and the frame's name (a CRC32 of it),
not on the order of the frames, the batch size or which sigmas are asked for; the same z is
scaled for every sigma (common random numbers, so the curve over sigma is not shaken by a new
draw at each level). Each level is scored with utils.eval.metrics.Evaluator (IoU pooled, nIoU per
image, Pd per target, Fa per pixel; threshold 0.5 on sigmoid(T)) at every frame's own size.
Prints a markdown table and writes OUT/robustness.json atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from models import CheckpointError, load_model
from utils import RESULTS_DIR
from utils.cli import (
    ArgumentParser,
    BoolFlag,
    add_device,
    add_dtype,
    add_log_level,
    add_verify,
    fail,
    positive_int,
    setup_logging,
)
from utils.data import LAYOUTS, SPLITS, DataError, IRSTDDataset, resolve_data_root, size_batches
from utils.eval.metrics import THRESHOLD, Evaluator
from utils.files import check_output, write_json
from utils.infer.device import Predictor, select_device
from utils.infer.predict import PredictOptions, default_batch_size, predict_maps
from utils.verify.apply import describe_verification, load_verification

DEFAULT_SIGMAS = (5.0, 10.0, 15.0, 20.0, 30.0)  # grey levels of 255; NoisySIRST's levels are within this range
GREY_LEVELS = 255.0  # sigma units: 1 / 255 of the intensity range
REPORT = "robustness.json"  # written into --out


def unit_noise(name: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Return float32 standard normal noise of the given shape, fixed by (seed, frame name)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    return rng.standard_normal(shape, dtype=np.float32)


def add_noise(frame: np.ndarray, sigma: float, z: np.ndarray, quantise: bool = True) -> np.ndarray:
    """Return the frame (float32 in [0, 1]) plus sigma/255 * z, clipped to [0, 1], re-quantised to 8 bits if asked."""
    if sigma < 0:
        raise ValueError(f"sigma={sigma} must be 0 or more (grey levels of 255)")
    if sigma == 0:
        return frame
    noisy = np.clip(frame + np.float32(sigma / GREY_LEVELS) * z, 0.0, 1.0)
    if quantise:
        noisy = np.rint(noisy * np.float32(GREY_LEVELS)) / np.float32(GREY_LEVELS)
    return noisy.astype(np.float32, copy=False)


def evaluate_noise(predictor: Predictor, dataset: IRSTDDataset, sigmas: Sequence[float], seed: int = 0,
                   quantise: bool = True, batch_size: int = 1, progress: bool = True) -> dict[float, Evaluator]:
    """Return {sigma: Evaluator over every frame of the dataset at that noise level}; sigma 0 is the clean set."""
    levels = sorted(set(float(s) for s in sigmas) | {0.0})
    evaluators = {sigma: Evaluator(THRESHOLD) for sigma in levels}
    batches = size_batches(dataset.sizes, batch_size)
    bar = tqdm(total=len(dataset) * len(levels), desc="robustness", unit="frame",
               disable=None if progress else True, file=sys.stderr)
    for batch in batches:
        items = [dataset[i] for i in batch]
        frames = [item["image"][0].numpy() for item in items]  # H x W float32 in [0, 1]
        masks = [item["mask"][0].numpy() for item in items]
        noise = [unit_noise(item["name"], frame.shape, seed) for item, frame in zip(items, frames)]
        for sigma in levels:
            noisy = [add_noise(f, sigma, z, quantise) for f, z in zip(frames, noise)]
            probs, _ = predict_maps(predictor, noisy, PredictOptions(tile_above=math.inf))  # the checkpoint's
            # second stage (utils.verify) too, when the predictor carries one
            for item, prob, mask in zip(items, probs, masks):
                evaluators[sigma].update(prob, mask, name=f"{item['name']} at sigma {sigma:g}")
            bar.update(len(items))
    bar.close()
    return evaluators


def format_table(rows: Sequence[dict]) -> str:
    """Return a markdown table: sigma (grey levels), IoU and nIoU (%), Pd (%), Fa (x1e-6), F1 (%)."""
    lines = ["| sigma (/255) | IoU % | nIoU % | Pd % | Fa x1e-6 | F1 % |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sigma']:g} | {100 * r['iou']:.2f} | {100 * r['niou']:.2f} | {100 * r['pd']:.2f} | "
                     f"{1e6 * r['fa']:.2f} | {100 * r['f1']:.2f} |")
    return "\n".join(lines)


def _sigma(text: str) -> float:
    value = float(text)
    if not (value >= 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"sigma {text} must be a finite number >= 0 (grey levels of 255)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Score the checkpoint at each noise level; print the table, write robustness.json; return 0, or 2 on an error."""
    parser = ArgumentParser(
        prog="python -m utils.robustness",
        description="Score a checkpoint on a split with Gaussian noise added to the frames.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint or release state_dict")
    parser.add_argument("--data-root", required=True, help="dataset folder, or a release name read from ./datasets/")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to score (default test)")
    parser.add_argument("--layout", default=None, choices=LAYOUTS, help="dataset layout (default: detected)")
    parser.add_argument("--sigmas", nargs="+", type=_sigma, default=list(DEFAULT_SIGMAS),
                        help="noise standard deviations in grey levels of 255 (sigma 0, clean, is always added)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (noise is fixed by seed and frame name)")
    parser.add_argument("--quantise", action=BoolFlag, default=True,
                        help="re-quantise noisy frames to 8 bits as NoisySIRST's PNGs (default); --no-quantise keeps floats")
    parser.add_argument("--out", type=Path, default=None, help="folder for robustness.json (default results/NAME)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing OUT/robustness.json")
    add_dtype(parser)
    add_device(parser)
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="frames of one size per forward (default 1 on the CPU, 8 on CUDA)")
    add_verify(parser)
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    add_log_level(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        root = resolve_data_root(args.data_root)
        out = args.out if args.out is not None else RESULTS_DIR / root.name
        check_output(out / REPORT, args.overwrite, [("--checkpoint", args.checkpoint)], label=str(out / REPORT))
        dataset = IRSTDDataset(root, args.split, args.layout)
        net, meta = load_model(args.checkpoint)
        device = select_device(args.device)
        predictor = Predictor(net, device, args.dtype)
        if args.verify:
            predictor.verification = load_verification(meta, device)
    except (CheckpointError, DataError, ValueError) as error:   # ValueError: also utils.files.OutputError
        return fail(str(error))
    start = time.perf_counter()
    batch_size = args.batch_size or default_batch_size(device)
    evaluators = evaluate_noise(predictor, dataset, args.sigmas, args.seed, args.quantise, batch_size,
                                progress=not args.quiet)
    rows = [{"sigma": sigma, **ev.compute()} for sigma, ev in evaluators.items()]
    report = {"checkpoint": str(args.checkpoint), "data_root": str(root), "split": args.split, "seed": args.seed,
              "quantised_to_8_bits": args.quantise, "sigma_units": "grey levels of 255",
              "dtype": args.dtype, "threshold": THRESHOLD,
              "verifier": describe_verification(predictor),
              "note": "fa is a fraction of pixels (x1e-6 in the table)",
              "levels": rows}
    write_json(out / REPORT, report)
    print(format_table(rows))
    print(f"{len(dataset)} frames x {len(rows)} levels in {time.perf_counter() - start:.1f} s; "
          f"wrote {out / REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
