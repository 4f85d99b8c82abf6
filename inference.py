"""Export LRRNet predictions: a probability map, a reconstruction and a target list for every frame.

    python inference.py --checkpoint best.pt --dataset NUDT-SIRST     # ./datasets/NUDT-SIRST -> results/NUDT-SIRST
    python inference.py --checkpoint best.pt --data-root DIR --split test --out DIR --score
    python inference.py --checkpoint LRRNet.pkl --images frames/ --out out/ --overlay

CKPT is a checkpoint written by run_configs.py or the release's raw state_dict (.pkl).
Every frame is run at its native size (the network pads to a multiple of 8 inside and
crops back) and written, atomically (NAME.tmp, then os.replace), as

- OUT/mat/STEM.mat: 'T' float32 probability map sigmoid(logits), H x W; 'D' float32 reconstruction, H x W;
- OUT/img/STEM.png: 8-bit round(255 * T) (what cal_from_mask.py reads when no .mat is there);
- OUT/overlay/STEM.png (--overlay): the frame with ground-truth contours in green, detections in red
  (yellow where the two coincide), and D beside it;
- OUT/detections.csv and OUT/detections.json: one row per detected target (8-connected components of
  T > 0.5): frame, target (1, 2, ... in raster order of the first pixel), centroid x, y and bounding box
  x, y, w, h in pixels (x = column, y = row, origin at the centre of the top-left pixel), area in
  pixels, peak and mean probability over the component. The JSON lists every frame, with or without
  targets, and every error (a skipped frame, a mask the overlay could not read).

Input is scaled as the release scales it: 8-bit frames / 255 exactly (utils.data.read_frame). Frames
of one size are batched; frames with more than --tile-above pixels are run as overlapping tiles
(--tile, --overlap) blended with a linear-ramp window (see ``predict_tiled``). float32 is the default
because the exported maps are what gets scored; --dtype bf16 (CPU or CUDA) and fp16 (CUDA) are faster.

An unreadable frame is named and skipped, the others are still written, and the exit code is 1;
errors that stop the run (bad checkpoint, missing data root, bad options) exit with 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import cv2
import numpy as np
import scipy.io
import scipy.ndimage
import torch
from tqdm import tqdm

from models import load_model
from utils.files import atomic_write_bytes
from utils.data import (
    IMAGE_EXTENSIONS,
    LAYOUTS,
    SIXTEEN_BIT_MODES,
    SPLITS,
    DataError,
    Sample,
    fit_mask,
    _index,
    list_images,
    read_frame,
    read_mask,
    resolve_data_root,
    size_batches,
)
from utils.metrics import CONNECTIVITY, THRESHOLD
from utils.runtime import DTYPES, Predictor, select_device

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
EXIT_SKIPPED = 1  # some frames could not be read or written; the others were
EXIT_ERROR = 2  # nothing (or not everything asked for) could be done: bad options, checkpoint or data root
TILE_ABOVE_PX = 1024 * 1024  # frames with more pixels than this are tiled (a 1024 x 1024 frame still runs whole)
TILE_PX = 512  # tile side: the size the release trains NUDT-SIRST and IRSTD-1k at
OVERLAP_PX = 64  # tile overlap: the blend ramp's width
# Default batch sizes. On the CPU a batch is slower per frame than single frames (measured at 512 x 512,
# one thread: fp32 0.8 s/frame alone vs 1.2 s/frame in fours; bf16 0.4 vs 0.65): the activations of
# one frame fit the caches, four do not. On a GPU batches fill the device.
CPU_BATCH, CUDA_BATCH = 1, 8
READ_AHEAD = 2  # batches decoded ahead of the network
WRITE_QUEUE = 16  # frames waiting to be written before the network waits for the writers
OVERLAY_GAP_PX = 4  # white gap between the overlay and D
GT_BGR, DET_BGR, BOTH_BGR = (0, 255, 0), (0, 0, 255), (0, 255, 255)  # green, red, yellow
CSV_FIELDS = ("frame", "target", "x", "y", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area_px", "peak_prob",
              "mean_prob")


# ----------------------------------------------------------------------------- tiles


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Return tile start offsets (px) covering 0..length: stride tile - overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def ramp(size: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """Return a 1-D blend weight (float32, in (0, 1]): linear ramps of `overlap` px on sides that meet another tile."""
    weight = np.ones(size, np.float32)
    if overlap <= 0:
        return weight
    n = min(overlap, size)
    up = (np.arange(n, dtype=np.float32) + 0.5) / np.float32(overlap)  # never 0: every pixel keeps some weight
    if rise:
        weight[:n] = np.minimum(weight[:n], up)
    if fall:
        weight[size - n:] = np.minimum(weight[size - n:], up[::-1])
    return weight


def predict_tiled(predictor: Predictor, frame: torch.Tensor, tile: int, overlap: int,
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (D, T logits), each H x W float32 on the CPU, for a 1 x 1 x H x W frame run as blended tiles.

    Tiles of tile x tile px overlap by at least `overlap` px; each tile's outputs are weighted
    by the outer product of two linear ramps that rise over the overlap on every side that
    meets another tile (weight 1 at the frame's own borders), and the weighted sums are
    divided by the summed weights. The network normalises (GroupNorm) and attends over
    whatever it is given, so a tile's statistics are the tile's, not the frame's: tiled maps
    are close to, not equal to, whole-frame maps (tests/test_inference.py measures it).
    """
    _, _, h, w = frame.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    weights = {}
    d_sum = torch.zeros(h, w)
    t_sum = torch.zeros(h, w)
    w_sum = torch.zeros(h, w)
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k:k + batch_size]
        x = torch.cat([frame[..., y:y + th, x0:x0 + tw] for y, x0 in chunk])  # B x 1 x th x tw
        d, t = predictor(x)
        d, t = d[:, 0].cpu(), t[:, 0].cpu()
        for i, (y, x0) in enumerate(chunk):
            key = (y > 0, y + th < h, x0 > 0, x0 + tw < w)
            if key not in weights:
                weights[key] = torch.from_numpy(np.outer(ramp(th, overlap, key[0], key[1]),
                                                         ramp(tw, overlap, key[2], key[3])))
            wt = weights[key]
            d_sum[y:y + th, x0:x0 + tw] += wt * d[i]
            t_sum[y:y + th, x0:x0 + tw] += wt * t[i]
            w_sum[y:y + th, x0:x0 + tw] += wt
    return d_sum / w_sum, t_sum / w_sum


# ----------------------------------------------------------------------------- detections


def detect_targets(prob: np.ndarray, threshold: float = THRESHOLD) -> list[dict]:
    """Return one dict per 8-connected component of prob > threshold: target (1.. in raster order), x, y (centroid,
    px), bbox_x, bbox_y, bbox_w, bbox_h (px), area_px, peak_prob and mean_prob (probabilities over the component)."""
    binary = (np.asarray(prob) > threshold).astype(np.uint8)
    n_plus_1, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=CONNECTIVITY,
                                                                          ltype=cv2.CV_32S)
    n = n_plus_1 - 1
    if n == 0:
        return []
    # Number the components by their first pixel in raster order (as utils.metrics and skimage do),
    # whatever order OpenCV's (parallel) labeller produced.
    foreground = labels.ravel()
    index = np.flatnonzero(foreground)
    ids, first = np.unique(foreground[index], return_index=True)
    order = ids[np.argsort(index[first], kind="stable")]  # OpenCV labels in raster order of their first pixel
    peak = scipy.ndimage.maximum(prob, labels, order)
    mean = scipy.ndimage.mean(prob, labels, order)
    rows = []
    for k, label in enumerate(order):
        x, y, w, h, area = (int(v) for v in stats[label])
        rows.append({"target": k + 1, "x": float(centroids[label, 0]), "y": float(centroids[label, 1]),
                     "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h, "area_px": area,
                     "peak_prob": float(peak[k]), "mean_prob": float(mean[k])})
    return rows


# ----------------------------------------------------------------------------- files


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an 8-bit grey or BGR image as PNG, atomically."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, data.tobytes())


def write_mat(path: Path, prob: np.ndarray, recon: np.ndarray) -> None:
    """Write 'T' (float32 probabilities) and 'D' (float32 reconstruction) to a MATLAB .mat file, atomically."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"T": prob.astype(np.float32, copy=False), "D": recon.astype(np.float32, copy=False)})
    atomic_write_bytes(path, buffer.getvalue())


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Return round(255 * clip(values, 0, 1)) as uint8 (a [0, 1] map as an 8-bit image)."""
    return np.rint(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def overlay_image(frame: np.ndarray, mask: np.ndarray | None, prob: np.ndarray, recon: np.ndarray,
                  threshold: float = THRESHOLD) -> np.ndarray:
    """Return an 8-bit BGR picture: the frame with mask contours (green), detection contours (red, yellow where both
    lie), a white gap, and the reconstruction D (clipped to [0, 1])."""
    h, w = frame.shape
    panel = cv2.cvtColor(to_uint8(frame), cv2.COLOR_GRAY2BGR)
    layers = []
    for binary in (mask, prob > threshold):
        layer = np.zeros((h, w), np.uint8)
        if binary is not None and binary.any():
            contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(layer, contours, -1, 1, thickness=1)
        layers.append(layer.astype(bool))
    gt, det = layers
    panel[gt & ~det] = GT_BGR
    panel[det & ~gt] = DET_BGR
    panel[gt & det] = BOTH_BGR
    gap = np.full((h, OVERLAY_GAP_PX, 3), 255, np.uint8)
    return np.concatenate([panel, gap, cv2.cvtColor(to_uint8(recon), cv2.COLOR_GRAY2BGR)], axis=1)


# ----------------------------------------------------------------------------- the run


@dataclass
class Report:
    """What a run did: frames written, errors per frame (skipped frames and others), detections per frame, warnings."""

    written: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # frame -> error (unreadable frame, failed write, bad mask)
    detections: dict[str, dict] = field(default_factory=dict)  # frame name -> {"size_hw", "targets"}
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """Inference settings that the pipeline needs (pixels for sizes)."""

    batch_size: int = CPU_BATCH
    tile_above: int = TILE_ABOVE_PX
    tile: int = TILE_PX
    overlap: int = OVERLAP_PX
    overlay: bool = False
    sixteen_bit: str = "range"
    threshold: float = THRESHOLD


def _read(sample: Sample, sixteen_bit: str) -> tuple[np.ndarray | None, str | None]:
    """Return (frame float32 H x W in [0, 1], None) or (None, the error naming the file)."""
    try:
        return read_frame(sample.image, sixteen_bit), None
    except DataError as error:
        return None, str(error)


def _read_mask(sample: Sample, shape: tuple[int, int]) -> tuple[np.ndarray | None, list[str], str | None]:
    """Return (mask {0,1} at the frame's size or None, warnings, error) for the overlay."""
    if sample.mask is None:
        return None, [], None
    try:
        mask, notes = fit_mask(read_mask(sample.mask), shape, sample)
    except DataError as error:
        return None, [], f"{error} (overlay drawn without ground truth)"
    return mask, notes, None


def _write_frame(out: Path, sample: Sample, frame: np.ndarray, prob: np.ndarray, recon: np.ndarray,
                 opts: Options) -> tuple[dict, list[str], str | None]:
    """Write one frame's outputs; return (its detections entry, warnings, error or None)."""
    notes: list[str] = []
    error = None
    write_mat(out / "mat" / f"{sample.name}.mat", prob, recon)
    write_png(out / "img" / f"{sample.name}.png", to_uint8(prob))
    if opts.overlay:
        mask, notes, error = _read_mask(sample, frame.shape)
        write_png(out / "overlay" / f"{sample.name}.png", overlay_image(frame, mask, prob, recon, opts.threshold))
    entry = {"size_hw": list(frame.shape), "targets": detect_targets(prob, opts.threshold)}
    return entry, notes, error


def plan(samples: Sequence[Sample], sizes: dict[int, tuple[int, int]], opts: Options) -> list[list[int]]:
    """Return index batches: frames of one size together (utils.data.size_batches), frames to tile alone."""
    whole = [i for i in sizes if sizes[i][0] * sizes[i][1] <= opts.tile_above]
    tiled = [[i] for i in sizes if sizes[i][0] * sizes[i][1] > opts.tile_above]
    groups = size_batches(SimpleNamespace(sizes=[sizes[i] for i in whole]), opts.batch_size)
    return [[whole[k] for k in group] for group in groups] + tiled


def _decoded_batches(pool: ThreadPoolExecutor, samples: Sequence[Sample], batches: list[list[int]],
                     sixteen_bit: str) -> Iterator[tuple[list[int], list[tuple[np.ndarray | None, str | None]]]]:
    """Yield (batch indices, [(frame or None, error or None)]) in order, decoding READ_AHEAD batches ahead."""
    def load(batch):
        return [_read(samples[i], sixteen_bit) for i in batch]

    pending = [(batch, pool.submit(load, batch)) for batch in batches[:READ_AHEAD]]
    for k in range(len(batches)):
        batch, future = pending.pop(0)
        if k + READ_AHEAD < len(batches):
            nxt = batches[k + READ_AHEAD]
            pending.append((nxt, pool.submit(load, nxt)))
        yield batch, future.result()


def run_inference(predictor: Predictor, samples: Sequence[Sample], out: Path, opts: Options,
                  progress: bool = True) -> Report:
    """Run the network on every sample and write its outputs under out; return the Report (frames in sample order)."""
    report = Report()
    for sub in ("mat", "img") + (("overlay",) if opts.overlay else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(samples), desc="inference", unit="frame", disable=None if progress else True, file=sys.stderr)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        # Pass 1: decode every frame once for its size (threaded); unreadable frames are named here.
        sizes: dict[int, tuple[int, int]] = {}
        for i, (frame, error) in enumerate(pool.map(lambda s: _read(s, opts.sixteen_bit), samples)):
            if error is not None:
                report.errors[samples[i].name] = error
                bar.update()
            else:
                sizes[i] = frame.shape
        batches = plan(samples, sizes, opts)
        writes: list[tuple[int, Future]] = []
        done: dict[int, tuple[dict, list[str], str | None] | Exception] = {}

        def drain(limit: int) -> None:
            while len(writes) > limit:
                i, future = writes.pop(0)
                try:
                    done[i] = future.result()
                except OSError as error:
                    done[i] = error
                bar.update()

        # Pass 2: decode again in batches, ahead of the network; write on the pool behind it.
        for batch, loaded in _decoded_batches(pool, samples, batches, opts.sixteen_bit):
            kept = [(i, frame) for i, (frame, error) in zip(batch, loaded) if frame is not None]
            for i, (frame, error) in zip(batch, loaded):
                if frame is None:  # read once, failed now: the file changed under us
                    report.errors[samples[i].name] = error
                    bar.update()
            by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
            for i, frame in kept:
                by_shape.setdefault(frame.shape, []).append((i, frame))
            for shape, items in by_shape.items():
                x = torch.from_numpy(np.stack([frame for _, frame in items]))[:, None]  # N x 1 x H x W
                if shape[0] * shape[1] > opts.tile_above:
                    outputs = [predict_tiled(predictor, x[k:k + 1], opts.tile, opts.overlap, opts.batch_size)
                               for k in range(len(items))]
                    recons = [d.numpy() for d, _ in outputs]
                    probs = [torch.sigmoid(t).numpy() for _, t in outputs]
                else:
                    d, t = predictor(x)
                    recons = list(d[:, 0].cpu().numpy())
                    probs = list(torch.sigmoid(t[:, 0]).cpu().numpy())
                for (i, frame), prob, recon in zip(items, probs, recons):
                    writes.append((i, pool.submit(_write_frame, out, samples[i], frame, prob, recon, opts)))
                drain(WRITE_QUEUE)
        drain(0)
    bar.close()
    for i, sample in enumerate(samples):
        result = done.get(i)
        if result is None:
            continue
        if isinstance(result, Exception):
            report.errors[sample.name] = f"outputs of {sample.name} could not be written: {result}"
            continue
        entry, notes, error = result
        report.written.append(sample.name)
        report.detections[sample.name] = entry
        report.warnings += notes
        if error is not None:
            report.errors[sample.name] = error
    return report


def write_detections(out: Path, report: Report, samples: Sequence[Sample], meta: dict) -> None:
    """Write OUT/detections.csv (one row per target) and OUT/detections.json (every frame), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    frames = []
    for sample in samples:
        entry = report.detections.get(sample.name)
        if entry is None:
            continue
        for row in entry["targets"]:
            writer.writerow({"frame": sample.name, **{k: _rounded(k, v) for k, v in row.items()}})
        frames.append({"frame": sample.name, **entry})
    atomic_write_bytes(out / "detections.csv", buffer.getvalue().encode("utf-8"))
    head = {**meta, "columns": {"x, y": "centroid in pixels (x = column, y = row)",
                                "bbox_x, bbox_y, bbox_w, bbox_h": "bounding box in pixels",
                                "area_px": "pixels", "peak_prob, mean_prob": "probability over the component"},
            "errors": [{"frame": k, "error": v} for k, v in report.errors.items()]}
    # One frame a line: readable, and json's fast C encoder (indent= falls back to pure Python).
    text = "{\n" + "".join(f"{json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    text += '"frames": [\n' + ",\n".join(json.dumps(f) for f in frames) + "\n]\n}\n"
    atomic_write_bytes(out / "detections.json", text.encode("utf-8"))


def _rounded(key: str, value):
    """Return value rounded for the CSV: centroids to 1e-3 px, probabilities to 1e-6."""
    if key in ("x", "y"):
        return round(value, 3)
    if key in ("peak_prob", "mean_prob"):
        return round(value, 6)
    return value


# ----------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed and checked command line."""
    parser = argparse.ArgumentParser(description="Export LRRNet probability maps (.mat, .png), reconstructions "
                                                 "and detected targets for a dataset split or a folder of frames.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint (.pt) or the release's raw state_dict (.pkl)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="release dataset name: reads ./datasets/NAME, writes results/NAME")
    source.add_argument("--data-root", help="dataset folder (or a release name)")
    source.add_argument("--images", type=Path, help="a bare folder of frames (no masks, no scoring)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to run (default test)")
    parser.add_argument("--layout", default=None, choices=LAYOUTS, help="dataset layout (default: detected)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/NAME, NAME = the dataset or folder name)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES),
                        help="compute precision (default fp32; fp16 needs CUDA)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto = CUDA when present, else CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (pays off on many frames)")
    parser.add_argument("--batch-size", type=_positive, default=None,
                        help=f"frames of one size per forward (default {CPU_BATCH} on the CPU, {CUDA_BATCH} on CUDA)")
    parser.add_argument("--tile-above", type=_non_negative, default=TILE_ABOVE_PX,
                        help=f"tile frames with more pixels than this (default {TILE_ABOVE_PX} = 1024 x 1024)")
    parser.add_argument("--no-tiling", action="store_true", help="run every frame whole, whatever its size")
    parser.add_argument("--tile", type=_positive, default=TILE_PX, help=f"tile side in px (default {TILE_PX})")
    parser.add_argument("--overlap", type=_non_negative, default=OVERLAP_PX,
                        help=f"tile overlap in px, the blend ramp's width (default {OVERLAP_PX})")
    parser.add_argument("--sixteen-bit", default="range", choices=SIXTEEN_BIT_MODES,
                        help="16-bit frames: / 65535 (range) or per-frame 0.5-99.5 percentile stretch")
    parser.add_argument("--overlay", action="store_true", help="also write OUT/overlay/STEM.png")
    parser.add_argument("--score", action="store_true",
                        help="then score OUT against the split's masks with cal_from_mask.py")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.overlap >= args.tile:
        parser.error(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    if args.tile % 8:
        parser.error(f"--tile {args.tile} must be a multiple of 8 (the network pads to one; tiles should not need it)")
    if args.score and args.images is not None:
        parser.error("--score needs masks: use --data-root or --dataset, not --images")
    return args


def _samples(args: argparse.Namespace, config: dict) -> tuple[list[Sample], Path, list[str]]:
    """Return (samples to run, the data root or image folder, warnings) without decoding any frame.

    A val split carved from trainval (layouts without one) is carved with the checkpoint's own
    val_fraction and val_seed when its config has them, so --split val is the frames it validated on.
    """
    if args.images is not None:
        by_stem: dict[str, list[Path]] = {}
        for path in list_images(args.images):
            by_stem.setdefault(path.stem, []).append(path)
        samples, warnings = [], []
        for stem, paths in by_stem.items():  # a.png beside a.tif would write the same outputs: keep one
            paths.sort(key=lambda p: IMAGE_EXTENSIONS.index(p.suffix.lower()))
            if len(paths) > 1:
                warnings.append(f"{args.images} holds {', '.join(p.name for p in paths)}: using {paths[0].name} "
                                "(their outputs would share one name); rename the others to run them too")
            samples.append(Sample(stem, paths[0], None))
        return samples, args.images, warnings
    root = resolve_data_root(args.dataset if args.dataset is not None else args.data_root)
    # utils.data.list_split checks every file first and raises on the first bad one; inference
    # must name and skip a bad frame and write the rest, so it indexes the split unchecked.
    indexed = _index(root, args.split, args.layout, config.get("val_fraction", 0.1), config.get("val_seed", 0), None)
    return list(indexed.splits[args.split]), root, list(indexed.warnings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run inference from the command line; return 0, 1 when frames were skipped, 2 on an error that stops the run."""
    args = parse_args(argv)
    try:
        net, meta = load_model(args.checkpoint)
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        samples, source, warnings = _samples(args, config)
        device = select_device(args.device)
        predictor = Predictor(net, device, args.dtype, compile=args.compile)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    name = args.dataset if args.dataset is not None else source.name
    out = args.out if args.out is not None else RESULTS_DIR / name
    batch_size = args.batch_size or (CUDA_BATCH if device.type == "cuda" else CPU_BATCH)
    opts = Options(batch_size=batch_size, tile_above=math.inf if args.no_tiling else args.tile_above,
                   tile=args.tile, overlap=args.overlap, overlay=args.overlay, sixteen_bit=args.sixteen_bit)
    start = time.perf_counter()
    report = run_inference(predictor, samples, out, opts, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    run_meta = {"checkpoint": str(args.checkpoint), "source": str(source),
                "split": None if args.images is not None else args.split, "device": str(device),
                "dtype": args.dtype, "threshold": THRESHOLD, "connectivity": CONNECTIVITY,
                "tile_above_px": None if args.no_tiling else args.tile_above, "tile_px": args.tile,
                "overlap_px": args.overlap, "checkpoint_meta": {k: meta[k] for k in ("epoch", "selected_weights",
                                                                                     "code_revision", "source")
                                                                if k in meta}}
    write_detections(out, report, samples, run_meta)
    for note in warnings + report.warnings:
        print(f"warning: {note}", file=sys.stderr)
    for frame_name, error in report.errors.items():
        what = "error" if frame_name in report.detections else "skipped"
        print(f"{what} {frame_name}: {error}", file=sys.stderr)
    n_targets = sum(len(e["targets"]) for e in report.detections.values())
    print(f"wrote {len(report.written)} of {len(samples)} frames to {out} in {elapsed:.2f} s "
          f"({len(report.written) / elapsed if elapsed > 0 else 0:.2f} frames/s, {device.type} {args.dtype}); "
          f"{n_targets} targets in detections.csv" + (f"; {len(report.errors)} frame(s) with errors (listed above)"
                                                      if report.errors else ""))
    code = EXIT_SKIPPED if report.errors else 0
    if args.score:
        import cal_from_mask

        score_argv = ["--pred", str(out), "--data-root", str(source), "--split", args.split, "--source", "mat"]
        if args.layout is not None:
            score_argv += ["--layout", args.layout]
        if len(report.written) < len(samples):
            score_argv.append("--allow-missing")  # the skipped frames are named above; the exit code stays 1
        code = max(code, cal_from_mask.main(score_argv))
    return code


if __name__ == "__main__":
    sys.exit(main())
