"""A detectability map: how faint and how small a target the model still finds, on real target-free backgrounds.

    python -m utils.detectability --checkpoint checkpoints/lrrnet_general.pt --out results/detectability --real-check
    python -m utils.detectability --checkpoint best.pt --data-root NUDT-SIRST --out DIR --quick

Backgrounds are the val frames of the sources (the checkpoint's own ``--sources`` by default, or
``--sources`` / ``--data-root``; never a test split): every ``VIDEO_EVERY``-th labelled frame of each
val video of a box-labelled video source, every val frame of a mask source. Each background runs
once untouched (the model's false alarms: detections outside every label box + 2 px) and then in
``rounds`` copies with up to ``TARGETS_PER_FRAME`` targets pasted (``utils.data.paste``: exact masks,
no clipping) at random positions at least ``LABEL_MARGIN_PX`` from every label and ``GAP_PX`` from
each other. Each target takes the next cell (shape x peak contrast x polarity) of a shuffled deck,
so cells get equal numbers; its background kind and SCR (contrast / std of the 8 px ring around it)
come from the untouched frame. A target is detected when a detection's centroid lies in its box
grown by 2 px (``utils.eval.boxes``, the rule of ``cal_from_mask.py --boxes``). The model runs
exactly as inference.py runs it (``predict_frame`` with the checkpoint's verifier; ``--no-verify``:
LRRNet alone). The matched filter and the top-hat (``utils.eval.detectability``) run on the same
frames, their thresholds set for the model's false alarms per frame on the untouched backgrounds.

``--real-check``: on the video source's frames with a labelled target, the real target's peak
contrast, polarity and half-maximum area are measured (``utils.data.paste.measure_target``), and
in the first pasted copy a Gaussian twin of the same polarity, peak contrast and half-maximum area,
with a box of the label's size, is pasted too; Pd of the real targets (untouched frames) and of the
twins is compared by size and contrast. Deterministic by ``--seed``. Writes OUT/detectability.csv
(one row per detector x shape x polarity x kind x contrast), OUT/detectability.json and
OUT/detectability.png (the heat map); prints the faintest contrast at Pd 0.9 per shape and kind.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from models import CheckpointError, load_model
from utils.cli import (
    BoolFlag,
    add_device,
    add_log_level,
    add_verify,
    fail,
    non_negative_int,
    positive_int,
    setup_logging,
)
from utils.data import SPLITS, DataError, IRSTDDataset, VideoFrameDataset, is_video_root, resolve_data_root
from utils.data.paste import (
    BACKGROUND_KINDS,
    RING_PX,
    KindMaps,
    Shape,
    fits,
    gaussian_profile,
    kind_maps,
    kinds,
    measure_target,
    paste,
    quantised_increment,
    ring_stats,
)
from utils.data.video import box_slices
from utils.eval.detectability import (
    DETECTORS,
    LIMIT,
    PEAKS_KEPT,
    any_inside,
    cell_rows,
    detected_boxes,
    faintest,
    format_faintest,
    format_real_check,
    limit_rows,
    matched_filter,
    noise_threshold,
    peaks,
    plot_heatmap,
    plot_side_by_side,
    real_check_rows,
    threshold_for,
    top_hat,
)
from utils.eval.metrics import find_components
from utils.eval.selection import DETECT_CONTRASTS, DETECT_SHAPES, detectability_term
from utils.files import OutputError, atomic_write_text, check_output, write_json
from utils.infer.device import Predictor, select_device
from utils.infer.predict import component_table, predict_frame
from utils.train.config import SOURCES_PATH_HINT, ArgumentParser, ConfigError, parse_sources
from utils.verify.apply import describe_verification, load_verification

log = logging.getLogger(__name__)

TARGETS_PER_FRAME = 6
LABEL_MARGIN_PX = 24  # a pasted target's support keeps this far from every label box
GAP_PX = 24  # and from every other pasted support (more than the 8 px ring and the 2 px box growth)
TRIES = 40  # random positions tried per target before its cell waits for the next frame
TWIN_TRIES = 200  # positions tried for a real target's twin on the real target's background kind
VIDEO_EVERY, VIDEO_START = 50, 25  # val frames of each video: every 50th labelled frame from frame 25
REAL_SIZE_EDGES = (0.0, 2.0, 4.0, 8.0)  # sqrt of the half-maximum area, px
REAL_CONTRAST_EDGES = (0.0, 5.0, 10.0, 20.0, 40.0)  # grey levels


@dataclass(frozen=True)
class Grid:
    """The cells of the map (shapes x peak contrasts in grey levels x polarities) and how many pasted copies of each
    background (rounds) carry them."""

    shapes: tuple[Shape, ...]
    contrasts: tuple[float, ...]
    polarities: tuple[int, ...] = (1, -1)
    rounds: int = 3
    video_every: int = VIDEO_EVERY


POINTS = tuple(Shape("point", s) for s in (1, 2, 3, 5, 7, 9))
DEFAULT_GRID = Grid(POINTS + (Shape("blob", 16), Shape("blob", 40), Shape("drone", 16), Shape("drone", 40)),
                    (1, 2, 3, 5, 8, 12, 20, 30, 40))
QUICK_GRID = Grid((Shape("point", 1), Shape("point", 3), Shape("point", 9), Shape("drone", 16)), (4, 12, 40),
                  rounds=1, video_every=300)


@dataclass
class Background:
    """A real frame (H x W uint8) and its label boxes (N x 4, x, y, w, h px, edge coordinates); real_box: the
    labelled target of a video frame (for --real-check), None elsewhere."""

    name: str
    source: str
    grey: np.ndarray
    labels: np.ndarray
    real_box: tuple | None = None


@dataclass
class Placement:
    """One pasted target: its cell, where it went (top, left, px), its increment, box, kind and SCR."""

    shape: str
    size: int
    polarity: int
    contrast: float
    top: int
    left: int
    increment: np.ndarray
    box: tuple
    profile: np.ndarray
    kind: str = ""
    scr: float = 0.0
    twin_of: int | None = None


Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # uint8 frame -> centroids x, y (centre coords, px)


def model_detector(predictor: Predictor) -> Detector:
    """Return the model as a Detector: predict_frame as inference.py runs it (the predictor's verifier included)."""
    def detect(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = predict_frame(predictor, grey).detections
        return (np.array([d["x"] for d in found], np.float64), np.array([d["y"] for d in found], np.float64))
    return detect


# ----------------------------------------------------------------------------- backgrounds


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Return the N x 4 edge-coordinate boxes (x, y, w, h px) of the 8-connected components of a mask."""
    comps = find_components(np.asarray(mask) > 0)
    if comps.n == 0:
        return np.zeros((0, 4))
    t = component_table(np.asarray(mask, np.float32), comps)
    return np.stack([t["left"], t["top"], t["width"], t["height"]], 1).astype(np.float64)


def load_backgrounds(roots: Sequence[tuple[str, Path]], split: str, config: dict, video_every: int,
                     progress: bool = True) -> list[Background]:
    """Return the backgrounds of each (name, root) source's split: video sources every ``video_every``-th labelled
    frame of each video from VIDEO_START, mask sources every frame (val carved with the checkpoint's own
    val_fraction and val_seed); DataError naming a bad source."""
    out: list[Background] = []
    for name, root in roots:
        if is_video_root(root):
            data = VideoFrameDataset(root, split, every=video_every, start=VIDEO_START, progress=progress)
            for grey, (stem, frame, box) in zip(data.frames, data.entries):
                labels = np.zeros((0, 4)) if box is None else np.asarray([box], np.float64)
                out.append(Background(f"{stem}_{frame:05d}", name, grey, labels, box))
        else:
            data = IRSTDDataset(root, split, val_fraction=config.get("val_fraction", 0.1),
                                val_seed=config.get("val_seed", 0), sixteen_bit=config.get("sixteen_bit", "range"))
            for i in range(len(data)):
                item = data[i]
                grey = np.rint(item["image"][0].numpy() * 255).astype(np.uint8)  # 8-bit frames: exact
                out.append(Background(item["name"], name, grey, mask_boxes(item["mask"][0].numpy())))
    return out


# ----------------------------------------------------------------------------- placing targets


class Deck:
    """The grid's cells in a shuffled order, reshuffled when used up; a cell that found no room waits at the end."""

    def __init__(self, cells: list[tuple[Shape, float, int]], rng: np.random.Generator):
        self.cells, self.rng, self.order = cells, rng, []

    def peek(self) -> tuple[Shape, float, int]:
        if not self.order:
            self.order = [self.cells[i] for i in self.rng.permutation(len(self.cells))]
        return self.order[0]

    def take(self) -> None:
        self.order.pop(0)

    def defer(self) -> None:
        self.order.append(self.order.pop(0))


def free(blocked: np.ndarray, top: int, left: int, h: int, w: int) -> bool:
    """Return True when no pixel of the h x w window at (top, left) is blocked (blocked: a summed-area table)."""
    return blocked[top + h, left + w] - blocked[top, left + w] - blocked[top + h, left] + blocked[top, left] == 0


def block(taken: np.ndarray, top: int, left: int, h: int, w: int, margin: int) -> None:
    """Mark the h x w window at (top, left), grown by margin px, as taken."""
    taken[max(top - margin, 0):top + h + margin, max(left - margin, 0):left + w + margin] = True


def label_taken(shape: tuple[int, int], labels: np.ndarray) -> np.ndarray:
    """Return the H x W bool map of pixels within LABEL_MARGIN_PX of a label box."""
    taken = np.zeros(shape, bool)
    for x, y, w, h in labels:
        top, left = int(math.floor(y)), int(math.floor(x))
        block(taken, max(top, 0), max(left, 0), int(math.ceil(y + h)) - max(top, 0),
              int(math.ceil(x + w)) - max(left, 0), LABEL_MARGIN_PX)
    return taken


def place(grey: np.ndarray, taken: np.ndarray, rng: np.random.Generator, increment: np.ndarray,
          extent: tuple[int, int] | None = None, accept: Callable[[int, int], bool] | None = None,
          tries: int = TRIES) -> tuple[int, int] | None:
    """Return a random (top, left) where the increment fits without clipping, its support (or a centred extent,
    h x w px, when larger) touches no taken pixel and accept(centre row, centre column) holds, or None after ``tries``;
    marks the support + GAP_PX as taken."""
    h, w = increment.shape
    eh, ew = max(extent[0], h) if extent else h, max(extent[1], w) if extent else w
    H, W = grey.shape
    if eh + 2 > H or ew + 2 > W:
        return None
    table = np.zeros((H + 1, W + 1), np.int64)
    table[1:, 1:] = taken.cumsum(0).cumsum(1)
    for _ in range(tries):
        top, left = int(rng.integers(1, H - eh)), int(rng.integers(1, W - ew))   # extent's corner, 1 px from edges
        if not free(table, top, left, eh, ew):
            continue
        st, sl = top + (eh - h) // 2, left + (ew - w) // 2
        if fits(grey, st, sl, increment) and (accept is None or accept(st + h // 2, sl + w // 2)):
            block(taken, top, left, eh, ew, GAP_PX)
            return st, sl
    return None


def plan_frame(bg: Background, deck: Deck, rng: np.random.Generator, twin: dict | None = None,
               maps: KindMaps | None = None) -> list[Placement]:
    """Return up to TARGETS_PER_FRAME placements in this background (a twin of its real target first when given:
    on the real target's background kind where one of TWIN_TRIES positions has it, else anywhere)."""
    taken = label_taken(bg.grey.shape, bg.labels)
    out: list[Placement] = []
    if twin is not None:
        sigma = math.sqrt(twin["area"] / (2 * math.pi * math.log(2)))   # a Gaussian's half-maximum area is
        size = 2 * math.ceil(3 * sigma) + 1                               # 2 pi ln2 sigma^2
        profile = gaussian_profile(sigma, size)
        increment = quantised_increment(profile, twin["contrast"], twin["polarity"])
        bw, bh = twin["box"][2], twin["box"][3]
        extent = (math.ceil(bh), math.ceil(bw))
        at = None
        if maps is not None:
            at = place(bg.grey, taken, rng, increment, extent, lambda r, c: kinds(maps, [r], [c])[0] == twin["kind"],
                       TWIN_TRIES)
        if at is None:
            at = place(bg.grey, taken, rng, increment, extent)
        if at is not None:
            top, left = at
            box = (left + size / 2 - bw / 2, top + size / 2 - bh / 2, bw, bh)   # the label's size, on the twin
            out.append(Placement("twin", size, twin["polarity"], twin["contrast"], top, left, increment, box,
                                 profile, twin_of=0))
    while len(out) < TARGETS_PER_FRAME:
        shape, contrast, polarity = deck.peek()
        profile = shape.profile()
        increment = quantised_increment(profile, contrast, polarity)
        at = place(bg.grey, taken, rng, increment)
        if at is None:
            deck.defer()
            break
        deck.take()
        top, left = at
        out.append(Placement(shape.name, shape.size, polarity, contrast, top, left, increment,
                             (float(left), float(top), float(shape.size), float(shape.size)), profile))
    return out


# ----------------------------------------------------------------------------- measuring


def reference_peaks(grey: np.ndarray, shape_profile: np.ndarray, size: int, polarity: int
                    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Return {"matched filter": peaks, "top-hat": peaks} of a frame for one shape and polarity ((x, y, value))."""
    return {"matched filter": peaks(matched_filter(grey, shape_profile, polarity), size),
            "top-hat": peaks(top_hat(grey, size, polarity), size)}


def measure(detector: Detector, backgrounds: Sequence[Background], grid: Grid, seed: int = 0,
            real_check: bool = False, progress: bool = True) -> dict:
    """Return the map's report: cell rows (n, Pd and Wilson interval per detector), false alarms, thresholds, the
    faintest contrasts at Pd 0.9, background-kind counts, and the real check when asked (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cells = [(s, c, p) for s in grid.shapes for c in grid.contrasts for p in grid.polarities]
    deck = Deck(cells, rng)
    ref_shapes = {(s.name, p): (s.profile(), s.size) for s in grid.shapes for p in grid.polarities}
    bar = tqdm(total=len(backgrounds) * (1 + grid.rounds), desc="detectability", unit="frame",
               disable=None if progress else True, file=sys.stderr)
    fa_values = {(d, key): [] for d in DETECTORS[1:] for key in ref_shapes}   # peaks outside labels, untouched
    model_fa = 0
    records, real = [], []
    pasted_fa, pasted_frames = 0, 0
    for bg in backgrounds:
        x, y = detector(bg.grey)
        model_fa += int((~any_inside(x, y, bg.labels)).sum())
        maps = kind_maps(bg.grey)
        real_entry = None
        if real_check and bg.real_box is not None:
            rows, cols = box_slices(bg.real_box, bg.grey.shape)
            polarity, contrast, area = measure_target(bg.grey, rows, cols)
            if contrast >= 1 and area >= 1:
                hit = bool(detected_boxes(x, y, np.asarray([bg.real_box]))[0])
                filled = bg.grey.copy()   # the kind of the background behind the target: the box filled with the
                filled[rows, cols] = np.uint8(round(ring_stats(bg.grey, rows.start, cols.start, rows.stop - rows.start,
                                                               cols.stop - cols.start, 4)[0]))   # ring's median
                kind = kinds(kind_maps(filled), [(rows.start + rows.stop) // 2], [(cols.start + cols.stop) // 2])[0]
                real_entry = {"frame": bg.name, "size": math.sqrt(area), "contrast": contrast, "polarity": polarity,
                              "area": area, "box": bg.real_box, "kind": kind, "real": hit, "twin": None}
                real.append(real_entry)
        for (name, polarity), (profile, size) in ref_shapes.items():
            for d, (px, py, value) in reference_peaks(bg.grey, profile, size, polarity).items():
                outside = value[~any_inside(px, py, bg.labels)]
                fa_values[(d, (name, polarity))].append(np.sort(outside)[::-1][:PEAKS_KEPT])
        bar.update(1)
        for r in range(grid.rounds):
            twin = real_entry if (r == 0 and real_entry is not None) else None
            plan = plan_frame(bg, deck, rng, twin, maps)
            grey = bg.grey
            for p in plan:
                grey, _ = paste(grey, p.top, p.left, p.increment)
            x, y = detector(grey)
            boxes = np.asarray([p.box for p in plan], np.float64).reshape(-1, 4)
            hits = detected_boxes(x, y, boxes)
            pasted_fa += int((~any_inside(x, y, np.concatenate([bg.labels.reshape(-1, 4), boxes]))).sum())
            pasted_frames += 1
            centres_r = np.array([p.top + p.increment.shape[0] // 2 for p in plan], np.int64)
            centres_c = np.array([p.left + p.increment.shape[1] // 2 for p in plan], np.int64)
            where = kinds(maps, centres_r, centres_c)
            for p, hit, kind in zip(plan, hits, where):
                if p.twin_of is not None:
                    rows, cols = box_slices(p.box, grey.shape)
                    _, contrast, area = measure_target(grey, rows, cols)
                    real_entry.update(twin=bool(hit), twin_size=math.sqrt(max(area, 0)), twin_contrast=contrast,
                                      twin_kind=kind)
                    continue
                _, std = ring_stats(bg.grey, p.top, p.left, p.size, p.size, RING_PX)
                rec = {"shape": p.shape, "size": p.size, "polarity": p.polarity, "kind": kind,
                       "contrast": p.contrast, "scr": p.contrast / std, "model": bool(hit)}
                for d, (px, py, value) in reference_peaks(grey, p.profile, p.size, p.polarity).items():
                    inside = detected_boxes_values(px, py, value, p.box)
                    rec[d] = inside
                records.append(rec)
            bar.update(1)
    bar.close()
    n_frames = len(backgrounds)
    thresholds = {key: threshold_for(values, model_fa) for key, values in fa_values.items()}
    ref_fa = {key: int(sum(int((v > thresholds[key]).sum()) for v in values)) for key, values in fa_values.items()}
    for rec in records:
        for d in DETECTORS[1:]:
            rec[d] = bool(rec[d] > thresholds[(d, (rec["shape"], rec["polarity"]))])
    rows = cell_rows(records)
    pixels = float(np.mean([bg.grey.size for bg in backgrounds])) if backgrounds else 1.0
    h = noise_threshold(max(model_fa, 1) / max(n_frames, 1), pixels)
    rows += limit_rows(rows, {s.name: float(np.linalg.norm(s.profile())) for s in grid.shapes}, h)
    kinds_count = {k: sum(1 for r in records if r["kind"] == k) for k in BACKGROUND_KINDS}
    report = {
        "n_backgrounds": n_frames, "backgrounds_by_source": _count(bg.source for bg in backgrounds),
        "n_pasted_frames": pasted_frames, "n_targets": len(records), "targets_by_kind": kinds_count,
        "model_false_alarms": model_fa, "white_noise_threshold_sigma": h, "mean_pixels_per_frame": pixels, "fa_per_frame": model_fa / n_frames if n_frames else None,
        "fa_per_frame_pasted": pasted_fa / pasted_frames if pasted_frames else None,
        "reference_thresholds": {f"{d} | {name} | {'hot' if p > 0 else 'cold'}": t
                                 for (d, (name, p)), t in thresholds.items()},
        "reference_false_alarms": {f"{d} | {name} | {'hot' if p > 0 else 'cold'}": n
                                   for (d, (name, p)), n in ref_fa.items()},
        "rows": rows,
        "faintest": [{"detector": k[0], "shape": k[1], "polarity": k[2], "kind": k[3], **v}
                     for k, v in faintest(rows).items()],
    }
    if real_check:
        report["real_check"] = real_check_rows(real, REAL_SIZE_EDGES, REAL_CONTRAST_EDGES)
        report["real_targets"] = [{k: v for k, v in r.items() if k != "box"} for r in real]
        report["twins_on_the_real_kind"] = sum(1 for r in real if r.get("twin_kind") == r["kind"])
        report["twins"] = sum(1 for r in real if r.get("twin") is not None)
    return report


def detected_boxes_values(px: np.ndarray, py: np.ndarray, value: np.ndarray, box: tuple) -> float:
    """Return the largest peak value inside the box grown by the box rule's 2 px (-inf when none)."""
    inside = any_inside(px, py, np.asarray([box], np.float64))
    return float(value[inside].max()) if inside.any() else -math.inf


def _count(items) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


# ----------------------------------------------------------------------------- outputs


CSV_FIELDS = ("detector", "shape", "size_px", "polarity", "kind", "contrast", "n", "detected", "pd", "pd_low",
              "pd_high", "median_scr")
OUTPUTS = ("detectability.csv", "detectability.json", "detectability.png")


def rows_csv(rows: Sequence[dict]) -> str:
    """Return the cell rows as CSV text (CSV_FIELDS; polarity hot/cold; rates as fractions)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        def rate(v):
            return "" if v is None else f"{v:.4f}"
        writer.writerow({**{k: r[k] for k in CSV_FIELDS}, "polarity": "hot" if r["polarity"] > 0 else "cold",
                         "detected": "" if r["detected"] is None else r["detected"], "pd": rate(r["pd"]),
                         "pd_low": rate(r["pd_low"]), "pd_high": rate(r["pd_high"]),
                         "median_scr": f"{r['median_scr']:.3f}"})
    return buffer.getvalue()


def summary_text(report: dict, grid: Grid) -> str:
    """Return the printed summary: false alarms, the faintest contrast at Pd 0.9 per shape and kind (model; hot and
    cold), the references beside the model over all kinds, and the real check."""
    table = {(f["detector"], f["shape"], f["polarity"], f["kind"]): f for f in report["faintest"]}
    shapes = [s.name for s in grid.shapes]
    kinds_present = [k for k in BACKGROUND_KINDS if report["targets_by_kind"].get(k)]
    parts = [f"{report['n_backgrounds']} backgrounds, {report['n_pasted_frames']} pasted frames, "
             f"{report['n_targets']} targets; targets by kind: "
             + ", ".join(f"{k} {n}" for k, n in report["targets_by_kind"].items() if n),
             f"model false alarms per frame on the untouched backgrounds: {report['fa_per_frame']:.3f} "
             f"({report['model_false_alarms']} in {report['n_backgrounds']}); on the pasted frames: "
             f"{report['fa_per_frame_pasted']:.3f}"]
    for polarity in grid.polarities:
        word = "hot" if polarity > 0 else "cold"
        parts.append(f"\nfaintest peak contrast (grey levels) at Pd >= 0.9, model, {word} targets:")
        parts.append(format_faintest(table, shapes, ["all", *kinds_present], polarity))
        parts.append(f"\nthe same over all kinds, model against the references ({word}):")
        lines = ["| shape | " + " | ".join((*DETECTORS, LIMIT)) + " |", "|---|" + "---|" * (len(DETECTORS) + 1)]
        for s in shapes:
            cells = []
            for d in (*DETECTORS, LIMIT):
                e = table.get((d, s, polarity, "all"))
                cells.append("" if e is None else f"never (n={e['n']})" if e["contrast"] is None
                             else f"{e['contrast']:g} (SCR {e['scr']:.1f})")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    if "real_check" in report:
        parts.append(f"\nreal targets against pasted twins (IR-Drone-Video val; same size, contrast, polarity, box; "
                     f"{report['twins_on_the_real_kind']} of {report['twins']} twins on the real target's kind):")
        parts.append(format_real_check(report["real_check"]))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(prog="python -m utils.detectability", description=__doc__.split("\n\n")[0])  # errors: one
    # line (ConfigError), not argparse's usage and exit
    parser.add_argument("--checkpoint", type=Path, help="run_configs.py checkpoint or release state_dict")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for detectability.csv / .json / .png (with --compare: the .png to write)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="LABEL=JSON",
                        help="instead of measuring: draw the model's maps of these detectability.json reports side by "
                             "side in the PNG --out (e.g. v2=detect_v2/detectability.json v3=detect_v3/...)")
    parser.add_argument("--sources", default=None,
                        help="NAME[:WEIGHT],... as run_configs.py takes them (weights ignored; default: the "
                             "checkpoint's own --sources)")
    parser.add_argument("--data-root", default=None, help="one dataset folder or release name instead of --sources")
    parser.add_argument("--split", default="val", choices=SPLITS,
                        help="the split whose frames are the backgrounds (default val; test is refused)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="positions and cells (default 0)")
    parser.add_argument("--quick", action=BoolFlag, help="a small grid and few frames (for tests and a first look)")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help=f"pasted copies of each background (default {DEFAULT_GRID.rounds}, --quick "
                             f"{QUICK_GRID.rounds}): more targets per cell, one forward pass each")
    parser.add_argument("--video-every", type=positive_int, default=None,
                        help=f"backgrounds of a video source: every N-th labelled frame of each val video from frame "
                             f"{VIDEO_START} (default {DEFAULT_GRID.video_every}, --quick {QUICK_GRID.video_every})")
    parser.add_argument("--real-check", action=BoolFlag,
                        help="compare real labelled targets of the video source with pasted twins")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace the outputs already in --out")
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    add_verify(parser)
    add_device(parser, default="cpu")
    add_log_level(parser)
    args = parser.parse_args(argv)
    if args.compare is None and args.checkpoint is None:
        parser.error("the following arguments are required: --checkpoint (or --compare to draw reports side by side)")
    if args.compare is not None and any("=" not in item for item in args.compare):
        parser.error(f"--compare {' '.join(args.compare)}: give each report as LABEL=PATH, e.g. v2=detectability.json")
    if args.split == "test":
        parser.error("--split test: a detectability map never measures on a test split; use val (default) or train")
    if args.sources and args.data_root:
        parser.error("give --sources or --data-root, not both")
    return args


def resolve_sources(args: argparse.Namespace, meta: dict) -> list[tuple[str, Path]]:
    """Return [(name, folder)] of the backgrounds' sources; DataError/ConfigError naming a bad one."""
    if args.data_root:
        return [(Path(args.data_root).name, resolve_data_root(args.data_root))]
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    text = args.sources or config.get("sources")
    if not text:
        raise ConfigError(f"{args.checkpoint} was trained on one dataset (no --sources in its config): pass "
                          "--sources NAME,... or --data-root DIR")
    return [(name, resolve_data_root(name, SOURCES_PATH_HINT)) for name, _ in parse_sources(text)]


def compare(items: Sequence[str], out: Path, overwrite: bool) -> int:
    """Draw the reports LABEL=PATH side by side in the PNG out; return 0, or 2 on an error."""
    try:
        if out.suffix.lower() != ".png":
            raise ConfigError(f"--out {out}: with --compare give the .png file to write")
        pairs = [item.split("=", 1) for item in items]
        check_output(out, overwrite, [("--compare", Path(p)) for _, p in pairs])
        reports = [(label, json.loads(Path(p).read_text())) for label, p in pairs]
        plot_side_by_side(out, reports)
    except (ConfigError, OutputError, ValueError, KeyError, OSError) as error:
        return fail(f"--compare: {error}")
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the map; print the tables, write OUT/detectability.{csv,json,png}; return 0, or 2 on an error."""
    try:
        args = parse_args(argv)
    except ConfigError as error:
        return fail(str(error))
    setup_logging(args.log_level)
    if args.compare is not None:
        return compare(args.compare, args.out, args.overwrite)
    grid = QUICK_GRID if args.quick else DEFAULT_GRID
    grid = replace(grid, rounds=args.rounds or grid.rounds, video_every=args.video_every or grid.video_every)
    existing = [args.out / name for name in OUTPUTS if (args.out / name).exists()]
    if existing and not args.overwrite:
        return fail(f"{existing[0]} exists: pass --overwrite to replace it, or another --out")
    if args.out.exists() and not args.out.is_dir():
        return fail(f"--out {args.out} is a file: pass a folder")
    try:
        net, meta = load_model(args.checkpoint)
        roots = resolve_sources(args, meta)
        if args.real_check and not any(is_video_root(root) for _, root in roots):
            raise ConfigError("--real-check needs a box-labelled video source (IR-Drone-Video) among the sources")
        device = select_device(args.device)
        predictor = Predictor(net, device, "fp32")
        if args.verify:
            predictor.verification = load_verification(meta, device)
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        backgrounds = load_backgrounds(roots, args.split, config, grid.video_every, progress=not args.quiet)
    except (CheckpointError, ConfigError, DataError, ValueError) as error:
        return fail(str(error))
    start = time.perf_counter()
    report = measure(model_detector(predictor), backgrounds, grid, args.seed, args.real_check,
                     progress=not args.quiet)
    report = {"checkpoint": str(args.checkpoint), "sources": [str(r) for _, r in roots], "split": args.split,
              "seed": args.seed, "grid": "quick" if args.quick else "default",
              "shapes": [s.name for s in grid.shapes], "contrasts": list(grid.contrasts),
              "polarities": ["hot" if p > 0 else "cold" for p in grid.polarities], "rounds": grid.rounds,
              "video_every": grid.video_every,
              "verifier": describe_verification(predictor), "seconds": round(time.perf_counter() - start, 1),
              **report}
    if not args.quick:          # the term a candidate general model is selected by (utils.eval.selection)
        report["detectability_term"] = detectability_term(report)
    atomic_write_text(args.out / "detectability.csv", rows_csv(report["rows"]))
    write_json(args.out / "detectability.json", report)
    plot_heatmap(args.out / "detectability.png", report["rows"], report["shapes"], grid.contrasts, grid.polarities,
                 report["fa_per_frame"], f"{args.checkpoint.name} ({'verifier on' if report['verifier'] else 'LRRNet alone'})")
    print(summary_text(report, grid))
    if "detectability_term" in report:
        print(f"detectability term (selection): {report['detectability_term']:.4f} = Pd of hot {' and '.join(DETECT_SHAPES)} "
              f"points at {', '.join(f'{c:g}' for c in DETECT_CONTRASTS)} grey levels - false alarms per frame")
    print(f"wrote {args.out / 'detectability.csv'}, .json and .png in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
