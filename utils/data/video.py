"""The ``video`` layout: box-labelled infrared videos (IR-Drone-Video), streamed frame by frame.

Layout: ``ROOT/videos/<STEM>.mp4`` (stem ``IR_<CLASS>_<NNN>``), ``ROOT/labels.csv`` with the
header ``video,frame,x,y,w,h`` (one row per labelled frame; ``frame`` 0-based in decoding
order; box in pixel-edge coordinates, pixel column i spans [i, i+1); x, y, w, h empty when the
target is absent), and ``ROOT/train.txt`` / ``ROOT/val.txt`` listing video stems. Splits are
"train", "val" and "trainval" (both); there is no test split.

- ``read_labels``, ``index_videos`` (``VideoItem``), ``iter_video_frames`` and ``count_frames``
  read it; decoding streams one frame at a time through ``cv2.VideoCapture``.
- ``pseudo_mask`` turns a box into a training target (a pixel mask plus an ignore region);
  docs/video.md gives the rule and why.
- ``VideoFrameDataset`` yields every k-th labelled frame of each video of a split as
  ``IRSTDDataset`` does, plus "ignore" and "box".
- ``summarize_video`` / ``format_video_summary`` back ``python -m utils.data`` on such a root;
  ``draw_pseudo_masks`` backs its ``--pictures PNG``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from utils.data.frames import _THREADS, DataError

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # (x, y, w, h) in pixel-edge coordinates, pixels
LABEL_HEADER = ("video", "frame", "x", "y", "w", "h")
VIDEO_SPLITS = ("train", "val", "trainval")
VIDEO_EXTENSION = ".mp4"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")  # what --video reads


def video_files(folder: Path) -> list[Path]:
    """Return the video files (VIDEO_EXTENSIONS, in any case) directly in a folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)

# The pseudo-mask rule (docs/video.md): ring width (px), threshold = max(K robust sigmas, FLOOR grey levels).
PSEUDO_RING = 4
PSEUDO_K = 3.0
PSEUDO_FLOOR = 8.0
PSEUDO_PEAK_FRACTION = 0.2  # and at least this share of the target's peak contrast over the ring median
PSEUDO_LARGE = 16  # boxes whose shorter side is at least this many px get a closing scaled to the box


# ----------------------------------------------------------------------------- labels and index


@dataclass(frozen=True)
class VideoItem:
    """One video of the layout: its stem, file, target class and labels {frame: box or None (target absent)}."""

    stem: str
    path: Path
    target_class: str
    labels: dict[int, Box | None] = field(repr=False)


def is_video_root(root: str | os.PathLike) -> bool:
    """Return True when the folder holds ``videos/*.mp4`` (the video layout)."""
    videos = Path(root) / "videos"
    return videos.is_dir() and any(videos.glob(f"*{VIDEO_EXTENSION}"))


def _parse_box(fields: list[str]) -> Box | None:
    """Return the box of a labels.csv row's x, y, w, h fields, None when all are empty; ValueError says what is wrong."""
    empty = [not f.strip() for f in fields]
    if all(empty):
        return None
    if any(empty):
        raise ValueError("x, y, w, h must be all empty (target absent) or all numbers")
    try:
        x, y, w, h = (float(f) for f in fields)
    except ValueError:
        raise ValueError(f"x, y, w, h {fields} are not numbers") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"x, y, w, h {fields} are not finite")
    if w <= 0 or h <= 0:
        raise ValueError(f"box width and height must be positive, got w={w}, h={h}")
    return (x, y, w, h)


def read_labels(csv_path: str | os.PathLike) -> dict[str, dict[int, Box | None]]:
    """Return {video stem: {frame: box (x, y, w, h) px, pixel-edge coords, or None = target absent}} from labels.csv.

    DataError lists every bad row with its line number (up to 10, then the count) and the fix.
    """
    path = Path(csv_path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"labels file {path} cannot be read ({error.strerror}): restore it") from None
    labels: dict[str, dict[int, Box | None]] = {}
    first_line: dict[tuple[str, int], int] = {}
    bad: list[str] = []
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(f.strip() for f in header) != LABEL_HEADER:
            raise DataError(
                f"{path} line 1: header is {','.join(header or []) or 'empty'}, expected {','.join(LABEL_HEADER)}; "
                "fix the header"
            )
        for row in reader:
            line = reader.line_num
            if not any(f.strip() for f in row):
                continue
            try:
                if len(row) != 6:
                    raise ValueError(f"{len(row)} fields, expected 6 ({','.join(LABEL_HEADER)})")
                stem = row[0].strip()
                if not stem:
                    raise ValueError("the video field is empty")
                try:
                    frame = int(row[1])
                except ValueError:
                    raise ValueError(f"frame {row[1]!r} is not an integer") from None
                if frame < 0:
                    raise ValueError(f"frame {frame} is negative (frames are 0-based)")
                box = _parse_box(row[2:])
                if (stem, frame) in first_line:
                    raise ValueError(f"{stem} frame {frame} is labelled again (first on line {first_line[stem, frame]})")
            except ValueError as error:
                bad.append(f"line {line}: {error}")
                continue
            first_line[stem, frame] = line
            labels.setdefault(stem, {})[frame] = box
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{path} has {len(bad)} bad row(s): {shown}; fix or remove these rows")
    return labels


def _read_stems(path: Path) -> list[str]:
    """Return the video stems listed in a split file (one a line; blanks, repeats and a .mp4 suffix tolerated)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"split list {path} cannot be read ({error.strerror}): restore it") from None
    stems: list[str] = []
    for line in text.splitlines():
        stem = line.strip()
        if stem.lower().endswith(VIDEO_EXTENSION):
            stem = stem[: -len(VIDEO_EXTENSION)]
        if stem and stem not in stems:
            stems.append(Path(stem).name)
    return stems


def split_stems(root: str | os.PathLike, split: str) -> list[str]:
    """Return the video stems of a split ("train", "val" or "trainval" = train then val) from ROOT/<split>.txt."""
    if split not in VIDEO_SPLITS:
        raise DataError(
            f"split {split!r} does not exist in the video layout of {root}: choose one of {VIDEO_SPLITS} "
            "(train.txt and val.txt; there is no test split)"
        )
    root = Path(root)
    parts = ("train", "val") if split == "trainval" else (split,)
    stems: list[str] = []
    for part in parts:
        path = root / f"{part}.txt"
        if not path.is_file():
            raise DataError(f"split list {path} is missing: add it (the video stems of {part}, one a line)")
        stems += [s for s in _read_stems(path) if s not in stems]
    if not stems:
        raise DataError(f"split {split!r} of {root} lists no video: add stems to {', '.join(p + '.txt' for p in parts)}")
    return stems


def target_class(stem: str) -> str:
    """Return the class of a video stem: its second "_" field (IR_BIRD_001 -> "BIRD"), the stem itself without one."""
    parts = stem.split("_")
    return parts[1] if len(parts) >= 2 and parts[1] else stem


def index_videos(root: str | os.PathLike, split: str, labels: dict | None = None) -> list[VideoItem]:
    """Return the split's videos (stem, path, class, labels) in list order; no video is decoded.

    DataError names a stem whose video file is absent or which labels.csv never mentions.
    ``labels`` (from ``read_labels``) saves re-reading labels.csv.
    """
    root = Path(root)
    videos = root / "videos"
    if not videos.is_dir():
        raise DataError(f"video folder {videos} is missing: the video layout keeps videos/<STEM>.mp4 under the root")
    stems = split_stems(root, split)
    if labels is None:
        labels = read_labels(root / "labels.csv")
    absent = [s for s in stems if not (videos / f"{s}{VIDEO_EXTENSION}").is_file()]
    if absent:
        raise DataError(
            f"{len(absent)} video(s) listed for {split} are absent from {videos}: {', '.join(absent[:10])}; "
            "restore them or remove their lines from the split list"
        )
    unlabelled = [s for s in stems if s not in labels]
    if unlabelled:
        raise DataError(
            f"{root / 'labels.csv'} has no row for {len(unlabelled)} video(s) of {split}: {', '.join(unlabelled[:10])}; "
            "add their labels or remove them from the split list"
        )
    return [VideoItem(s, videos / f"{s}{VIDEO_EXTENSION}", target_class(s), labels[s]) for s in stems]


# ----------------------------------------------------------------------------- decoding


def open_video(path: Path) -> cv2.VideoCapture:
    """Return an opened capture of the video; DataError naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise DataError(f"video {path} does not exist: restore it, or remove its stem from the split list")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(
            f"video {path} cannot be opened by OpenCV (not a video, truncated, or a codec it lacks): "
            "re-encode it as H.264 .mp4 or replace the file"
        )
    return capture


def _to_grey(frame: np.ndarray) -> np.ndarray:
    """Return an H x W uint8 frame: a grey frame stored in 3 equal channels gives its channel exactly."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1 or (np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0], frame[..., 2])):
        return np.ascontiguousarray(frame[..., 0])
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # a colour video: OpenCV's luma


def iter_video_frames(path: str | os.PathLike, every: int = 1, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Return an iterator of (frame index, H x W uint8 grey frame) for frames start, start+every, ... in decoding order.

    Frames are decoded one at a time (skipped ones are grabbed, not converted), so memory holds
    one frame. The file is opened at the call: DataError when it is missing or unreadable, and
    at the end of iteration when it held no decodable frame at all.
    """
    if every < 1 or start < 0:
        raise ValueError(f"every={every} must be >= 1 and start={start} >= 0 (frame indices, 0-based)")
    path = Path(path)
    capture = open_video(path)

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        index = 0
        try:
            while True:
                if index >= start and (index - start) % every == 0:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    yield index, _to_grey(frame)
                elif not capture.grab():
                    break
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise DataError(f"video {path} holds no decodable frame: re-encode it or replace the file")

    return frames()


def count_frames(path: str | os.PathLike) -> int:
    """Return the number of decodable frames of a video (counted by decoding, not read from the header)."""
    path = Path(path)
    capture = open_video(path)
    n = 0
    try:
        while capture.grab():
            n += 1
    finally:
        capture.release()
    if n == 0:
        raise DataError(f"video {path} holds no decodable frame: re-encode it or replace the file")
    return n


# ----------------------------------------------------------------------------- box -> pseudo-mask


def box_slices(box: Box, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Return (rows, cols) slices of the pixels whose centre lies in the box, clipped to an H x W frame (may be empty).

    Pixel column i spans [i, i+1), its centre is i + 0.5; a box narrower than a pixel still
    holds the pixel under its centre.
    """
    x, y, w, h = box
    height, width = shape

    def span(lo: float, size: float, limit: int) -> slice:
        first, stop = math.ceil(lo - 0.5), math.ceil(lo + size - 0.5)  # centres c + 0.5 in [lo, lo + size)
        if stop <= first:
            first = stop = math.floor(lo + size / 2)
            stop += 1
        return slice(min(max(first, 0), limit), min(max(stop, 0), limit))

    return span(y, h, height), span(x, w, width)


def _closing_radius(box_h: int, box_w: int) -> int:
    """Return the closing radius (px) for a box of box_h x box_w pixels: 1, or shorter side / 16 for large boxes."""
    side = min(box_h, box_w)
    return 1 if side < PSEUDO_LARGE else max(1, round(side / PSEUDO_LARGE))


def pseudo_mask(
    grey: np.ndarray,
    box: Box | None,
    *,
    ring: int = PSEUDO_RING,
    k: float = PSEUDO_K,
    floor: float = PSEUDO_FLOOR,
    peak_fraction: float = PSEUDO_PEAK_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (mask, ignore), H x W uint8 in {0, 1}: the target pixels inside the box, and the box's other pixels.

    The rule (docs/video.md): background level m = median of a ``ring``-px band just outside
    the box, noise s = 1.4826 x its MAD, t0 = max(k s, floor) grey levels. Polarity = the side
    (brighter or darker than m) whose pixels exceed t0 by more in total; contrast c = the box
    pixels' deviation from m on that side. Candidates = pixels with c > max(t0, peak_fraction x
    max c); closed (3 x 3, or a disc of radius shorter side / 16 for
    boxes of 16 px and more), holes filled, 8-connected components touching the box's central
    half kept (the largest when none does). Outside the box: background (0, not ignored);
    no box (target absent): all background. When no pixel passes, the mask is empty and the
    whole box is ignored.
    """
    if grey.ndim != 2:
        raise ValueError(f"expected an H x W grey frame, got shape {grey.shape}")
    mask = np.zeros(grey.shape, np.uint8)
    ignore = np.zeros(grey.shape, np.uint8)
    if box is None:
        return mask, ignore
    rows, cols = box_slices(box, grey.shape)
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return mask, ignore  # the box lies outside the frame
    ignore[rows, cols] = 1
    outer_rows = slice(max(rows.start - ring, 0), rows.stop + ring)
    outer_cols = slice(max(cols.start - ring, 0), cols.stop + ring)
    band = np.ones(grey[outer_rows, outer_cols].shape, bool)
    band[rows.start - outer_rows.start : rows.stop - outer_rows.start, cols.start - outer_cols.start : cols.stop - outer_cols.start] = False
    background = grey[outer_rows, outer_cols][band].astype(np.float64)
    if background.size == 0:
        return mask, ignore  # the box fills the frame: no background to compare with
    level = float(np.median(background))
    sigma = 1.4826 * float(np.median(np.abs(background - level)))
    threshold = max(k * sigma, floor)
    deviation = grey[rows, cols].astype(np.float64) - level
    bright = np.clip(deviation - threshold, 0, None).sum()
    dark = np.clip(-deviation - threshold, 0, None).sum()
    if bright == 0 and dark == 0:
        return mask, ignore
    contrast = deviation if bright >= dark else -deviation  # target polarity made positive
    threshold = max(threshold, peak_fraction * float(contrast.max()))
    candidates = contrast > threshold
    box_h, box_w = candidates.shape
    radius = _closing_radius(box_h, box_w)
    disc = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius + 0.5
    if radius == 1:
        disc[:] = True  # 3 x 3
    from scipy import ndimage  # here: scipy.ndimage costs 0.3 s to import, and the scorers import this package

    padded = np.pad(candidates, radius)  # so closing does not stick to the box edge
    closed = ndimage.binary_closing(padded, structure=disc)[radius:-radius, radius:-radius] | candidates
    filled = ndimage.binary_fill_holes(closed)
    labels, n = ndimage.label(filled, structure=np.ones((3, 3), bool))
    centre = np.zeros_like(filled)
    centre[box_h // 4 : box_h - box_h // 4 or 1, box_w // 4 : box_w - box_w // 4 or 1] = True
    touching = np.unique(labels[centre & filled])
    if touching.size:
        keep = np.isin(labels, touching)
    else:
        areas = np.bincount(labels.ravel())[1:]
        keep = labels == 1 + int(np.argmax(areas))
    mask[rows, cols] = keep
    ignore[rows, cols] = ~keep
    return mask, ignore


# ----------------------------------------------------------------------------- dataset


class VideoFrameDataset:
    """Every ``every``-th labelled frame of each video of a split; items as ``IRSTDDataset`` plus "ignore" and "box".

    Item: {"image": 1 x H x W float32 in [0, 1], "mask": 1 x H x W float32 {0, 1} (the
    pseudo-mask), "ignore": 1 x H x W float32 {0, 1} (1 = leave out of the loss: box pixels
    outside the pseudo-mask), "box": float32 (x, y, w, h) px in native pixel-edge coordinates
    (NaN when the target is absent; not moved by ``transform``), "name": "<STEM>_<FRAME:05d>",
    "video", "frame"}. Frames sampled: start, start + every, ... of each video, decoded in
    order; frames without a labels.csv row are skipped. The sampled frames are decoded once at
    construction and kept as uint8 (H x W bytes each). ``transform(image, target)`` is called
    with a 2 x H x W target (mask, ignore), so geometric transforms move both together
    (``utils.transforms`` do). ``sizes`` holds each frame's (H, W) for ``size_batches``.
    """

    def __init__(self, root, split: str, every: int = 30, transform=None, *, start: int = 0, progress: bool = False):
        from utils.data.layouts import resolve_data_root

        self.root = resolve_data_root(root)
        self.split, self.every, self.start, self.transform = split, every, start, transform
        self.videos = index_videos(self.root, split)
        self.warnings: list[str] = []

        def decode(item: VideoItem):
            return [(index, grey) for index, grey in iter_video_frames(item.path, every, start) if index in item.labels]

        self.frames: list[np.ndarray] = []
        self.entries: list[tuple[str, int, Box | None]] = []  # (stem, frame, box)
        with ThreadPoolExecutor(_THREADS) as pool:
            results = pool.map(decode, self.videos)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=len(self.videos), desc=f"decode {split}", unit="video", file=sys.stderr)
            for item, kept in zip(self.videos, results):
                sampled_labels = [f for f in item.labels if f >= start and (f - start) % every == 0]
                missing = sorted(set(sampled_labels) - {i for i, _ in kept})
                if missing:
                    self.warnings.append(
                        f"{item.path.name}: {len(missing)} labelled frame(s) sampled but not decodable "
                        f"(first {missing[0]}): skipped"
                    )
                for index, grey in kept:
                    self.frames.append(grey)
                    self.entries.append((item.stem, index, item.labels[index]))
        for note in self.warnings:
            logger.warning(note)
        if not self.entries:
            raise DataError(f"split {split!r} of {self.root} gives no labelled frame at every={every}, start={start}")
        self.sizes: list[tuple[int, int]] = [f.shape for f in self.frames]

    @property
    def names(self) -> list[str]:
        """Return the frame names "<STEM>_<FRAME:05d>" in dataset order."""
        return [f"{stem}_{frame:05d}" for stem, frame, _ in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        import torch  # here, as in IRSTDDataset: the package imports without torch

        grey = self.frames[i]
        stem, frame, box = self.entries[i]
        mask, ignore = pseudo_mask(grey, box)
        image = torch.from_numpy(grey.astype(np.float32) / 255.0)[None]
        target = torch.from_numpy(np.stack([mask, ignore]).astype(np.float32))
        if self.transform is not None:
            image, target = self.transform(image, target)
        box_tensor = torch.tensor(box if box is not None else (math.nan,) * 4, dtype=torch.float32)
        return {
            "image": image,
            "mask": target[:1],
            "ignore": target[1:],
            "box": box_tensor,
            "name": f"{stem}_{frame:05d}",
            "video": stem,
            "frame": frame,
        }


# ----------------------------------------------------------------------------- summary


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
    from tqdm import tqdm

    root = Path(root)
    labels = read_labels(root / "labels.csv")
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
    with ThreadPoolExecutor(_THREADS) as pool:
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
    beyond = 0
    for stem in ordered:
        item, frames = items[stem], counts[stem]
        if len(item.labels) != frames:
            mismatches.append([stem, len(item.labels), frames])
        beyond += sum(f >= frames for f in item.labels)
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


# ----------------------------------------------------------------------------- pictures


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
    for index, grey in iter_video_frames(path, every=1, start=frame):
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
