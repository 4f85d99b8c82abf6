"""The summary of a ``video`` layout root for ``python -m utils.data``: videos per split and class, decodable
frames, labels and box sizes (``summarize_video``, ``format_video_summary``), and a picture of the pseudo-masks
the training draws from the boxes (``draw_pseudo_masks``, its ``--pictures PNG``)."""
from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from utils.data.frames import THREADS, DataError
from utils.data.labels import Box, by_video, read_box_labels
from utils.data.layouts import VIDEO_EXTENSION
from utils.data.video import VideoItem, count_frames, index_videos, iter_video_frames, pseudo_mask


def _percentiles(values: list[float]) -> dict | None:
    """Return {"median", "p5", "p95"} of the values (px, rounded to 0.1), None when there are none."""
    if not values:
        return None
    p5, median, p95 = np.percentile(np.asarray(values, np.float64), [5, 50, 95])
    return {"median": round(float(median), 1), "p5": round(float(p5), 1), "p95": round(float(p95), 1)}


def summarize_video(root: str | os.PathLike, progress: bool = True) -> dict:
    """Return a JSON-ready summary of a video root: videos per split and class, decodable frames, labels, box sizes (px).

    Every listed video is decoded (counted) once; ``progress`` shows a tqdm bar on stderr.
    "mismatches" lists [video, label rows, decodable frames] wherever they differ.
    """
    root = Path(root)
    labels = by_video(read_box_labels(root / "labels.csv"))
    splits = {s: index_videos(root, s, labels) for s in ("train", "val")}
    warnings: list[str] = []
    both = sorted({v.stem for v in splits["train"]} & {v.stem for v in splits["val"]})
    if both:
        warnings.append(f"{len(both)} video(s) are in both train.txt and val.txt: {', '.join(both[:10])}")
    items = {v.stem: v for vs in splits.values() for v in vs}
    listed = set(items)
    on_disk = sorted(p.stem for p in (root / "videos").glob(f"*{VIDEO_EXTENSION}"))
    unlisted = [s for s in on_disk if s not in listed]
    if unlisted:
        warnings.append(f"{len(unlisted)} video(s) in videos/ are in no split list: {', '.join(unlisted[:10])}")
    unused = sorted(set(labels) - set(on_disk))
    if unused:
        warnings.append(f"labels.csv labels {len(unused)} video(s) absent from videos/: {', '.join(unused[:10])}")
    ordered = sorted(items)
    with ThreadPoolExecutor(THREADS) as pool:
        counts = dict(
            zip(
                ordered,
                tqdm(
                    pool.map(lambda s: count_frames(items[s].path), ordered),
                    total=len(ordered),
                    desc="count frames",
                    unit="video",
                    disable=not progress,
                    file=sys.stderr,
                ),
            )
        )
    per_split = {}
    for name, videos in splits.items():
        classes: dict[str, int] = {}
        for v in videos:
            classes[v.target_class] = classes.get(v.target_class, 0) + 1
        rows = [box for v in videos for box in v.labels.values()]
        per_split[name] = {
            "videos": len(videos),
            "classes": dict(sorted(classes.items())),
            "frames": sum(counts[v.stem] for v in videos),
            "labelled": len(rows),
            "absent": sum(box is None for box in rows),
        }
    boxes = [box for s in ordered for box in items[s].labels.values() if box is not None]
    mismatches = []
    beyond_names = []
    for stem in ordered:
        item, frames = items[stem], counts[stem]
        if len(item.labels) != frames:
            mismatches.append([stem, len(item.labels), frames])
        beyond_names += [f"{stem}:{f}" for f in sorted(item.labels) if f >= frames]
    beyond = len(beyond_names)
    if beyond:
        warnings.append(f"{beyond} label row(s) lie beyond their video's last decodable frame and can never be "
                        f"used (first {', '.join(beyond_names[:10])}): remove them from labels.csv, or restore the "
                        "videos' missing frames")
    unlabelled_frames = sum(
        sum(f not in items[s].labels for f in range(counts[s])) for s in ordered
    )
    return {
        "root": str(root),
        "layout": "video",
        "splits": per_split,
        "videos": len(ordered),
        "frames": sum(counts.values()),
        "labelled": sum(p["labelled"] for p in per_split.values()),
        "absent": sum(p["absent"] for p in per_split.values()),
        "labels_beyond_last_frame": beyond,
        "frames_without_label": unlabelled_frames,
        "box_w_px": _percentiles([b[2] for b in boxes]),
        "box_h_px": _percentiles([b[3] for b in boxes]),
        "mismatches": mismatches,
        "warnings": warnings,
    }


def format_video_summary(s: dict) -> str:
    """Return the video summary as the text ``python -m utils.data`` prints."""
    classes = sorted({c for p in s["splits"].values() for c in p["classes"]})
    lines = [s["root"], "layout: video (videos/*.mp4 + labels.csv; splits train.txt, val.txt)", ""]
    head = f"{'split':<7} {'videos':>6} " + " ".join(f"{c:>10}" for c in classes)
    lines.append(head + f" {'frames':>7} {'labelled':>8} {'absent':>7}")
    for name, p in s["splits"].items():
        lines.append(
            f"{name:<7} {p['videos']:>6} " + " ".join(f"{p['classes'].get(c, 0):>10}" for c in classes)
            + f" {p['frames']:>7} {p['labelled']:>8} {p['absent']:>7}"
        )
    lines.append(
        f"{'all':<7} {s['videos']:>6} "
        + " ".join(f"{sum(p['classes'].get(c, 0) for p in s['splits'].values()):>10}" for c in classes)
        + f" {s['frames']:>7} {s['labelled']:>8} {s['absent']:>7}"
    )
    bw, bh = s["box_w_px"], s["box_h_px"]
    lines += [
        "",
        "frames: decodable frames (counted by decoding); labelled: labels.csv rows; absent: rows with no target",
    ]
    if bw:
        lines.append(
            f"box size (px): w median {bw['median']} (5-95 %: {bw['p5']}-{bw['p95']}), "
            f"h median {bh['median']} (5-95 %: {bh['p5']}-{bh['p95']})"
        )
    lines.append(
        f"labels beyond the last decodable frame: {s['labels_beyond_last_frame']}; "
        f"decodable frames without a label row: {s['frames_without_label']}"
    )
    mm = s["mismatches"]
    lines.append(f"label rows != decodable frames in {len(mm)} video(s)" + (":" if mm else ""))
    lines += [f"  - {stem}: {n_labels} labels, {n_frames} frames ({n_labels - n_frames:+d})" for stem, n_labels, n_frames in mm]
    lines += ["", f"warnings ({len(s['warnings'])}):" if s["warnings"] else "warnings: none"]
    lines += [f"  - {w}" for w in s["warnings"]]
    return "\n".join(lines)


def _pick_examples(videos: list[VideoItem], per_class: int, seed: int) -> list[tuple[VideoItem, int, Box]]:
    """Return (video, frame, box) examples: per class, boxes at evenly spaced area quantiles (smallest to largest)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in sorted({v.target_class for v in videos}):
        pool = [(v, f, b) for v in videos if v.target_class == cls for f, b in sorted(v.labels.items()) if b is not None]
        if not pool:
            continue
        pool.sort(key=lambda e: e[2][2] * e[2][3])
        for q in np.linspace(0.03, 0.99, per_class):
            j = min(len(pool) - 1, int(q * len(pool)) + int(rng.integers(0, 3)))
            chosen.append(pool[j])
    return chosen


def _read_frame_at(path: Path, frame: int) -> np.ndarray:
    """Return frame ``frame`` (0-based, decoding order) of a video as H x W uint8; DataError when it is not there."""
    for _, grey in iter_video_frames(path, every=1, start=frame):
        return grey
    raise DataError(f"video {path} has no frame {frame}: it ends earlier")


def _tile(grey: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Return a size x 2size x 3 BGR tile: the crop around the box, then the crop with box, pseudo-mask and ignore."""
    mask, ignore = pseudo_mask(grey, box)
    x, y, w, h = box
    half = max(w, h) / 2 + max(6.0, 0.35 * max(w, h))
    cx, cy = x + w / 2, y + h / 2
    r0, c0 = int(math.floor(cy - half)), int(math.floor(cx - half))
    n = int(math.ceil(2 * half))
    pad = n
    padded = np.pad(grey, pad, mode="edge")
    crop = padded[r0 + pad : r0 + pad + n, c0 + pad : c0 + pad + n]
    m = np.pad(mask, pad)[r0 + pad : r0 + pad + n, c0 + pad : c0 + pad + n]
    ig = np.pad(ignore, pad)[r0 + pad : r0 + pad + n, c0 + pad : c0 + pad + n]
    scale = size / n
    left = cv2.resize(crop, (size, size), interpolation=cv2.INTER_NEAREST)
    left = cv2.cvtColor(left, cv2.COLOR_GRAY2BGR)
    right = left.copy().astype(np.float32)
    big_m = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    big_i = cv2.resize(ig, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    right[big_m] = 0.45 * right[big_m] + 0.55 * np.array([0, 0, 255])  # mask: red
    right[big_i] = 0.6 * right[big_i] + 0.4 * np.array([255, 120, 0])  # ignore: blue
    right = right.astype(np.uint8)
    p1 = (int(round((x - c0) * scale)), int(round((y - r0) * scale)))
    p2 = (int(round((x + w - c0) * scale)) - 1, int(round((y + h - r0) * scale)) - 1)
    cv2.rectangle(left, p1, p2, (0, 200, 0), 1)
    cv2.rectangle(right, p1, p2, (0, 200, 0), 1)
    return np.concatenate([left, np.full((size, 2, 3), 255, np.uint8), right], axis=1)


def draw_pseudo_masks(
    root: str | os.PathLike, out: str | os.PathLike, per_class: int = 3, columns: int = 4, seed: int = 0, size: int = 112
) -> Path:
    """Write a PNG strip of pseudo-masks on labelled frames (per_class per class, small to large boxes); return its path.

    Each example: the crop around the box (enlarged, box in green), then the same crop with the
    pseudo-mask in red and the ignored pixels in blue, captioned video, frame and box w x h (px).
    """
    root, out = Path(root), Path(out)
    videos = index_videos(root, "trainval")
    tiles = []
    for item, frame, box in _pick_examples(videos, per_class, seed):
        grey = _read_frame_at(item.path, frame)
        tile = _tile(grey, box, size)
        mask, _ = pseudo_mask(grey, box)
        caption = np.full((16, tile.shape[1], 3), 255, np.uint8)
        text = f"{item.stem} f{frame} {box[2]:.0f}x{box[3]:.0f} m={int(mask.sum())}"
        cv2.putText(caption, text, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([caption, tile], axis=0))
    if not tiles:
        raise DataError(f"{root} has no labelled frame with a target to draw")
    blank = np.full_like(tiles[0], 255)
    while len(tiles) % columns:
        tiles.append(blank)
    gap_v = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    rows = []
    for r in range(0, len(tiles), columns):
        row = [t for c in tiles[r : r + columns] for t in (c, gap_v)][:-1]
        rows.append(np.concatenate(row, axis=1))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    picture = np.concatenate(rows[:-1], axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise DataError(f"cannot write {out}: check the folder is writable and the name ends in .png")
    return out
