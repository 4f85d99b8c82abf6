"""Target-level scoring of video detections against box labels: Pd, false alarms per frame, a Pd/FA curve.

Inputs
- Labels: a CSV ``video,frame,x,y,w,h`` (datasets/IR-Drone-Video/labels.csv): ``frame``
  0-based in decoding order, the box in pixel-EDGE coordinates (pixel column i spans [i, i + 1)),
  x, y, w, h all empty when the target is absent from the frame; at most one target per frame.
  The class of a video is the second '_'-separated field of its name (IR_BIRD_001 -> BIRD; a
  name without one is its own class).
- Predictions: PRED/detections.json as the video inference writes it (utils.outputs.write_detections):
  "frames" lists every processed frame, {"video", "frame", "size_hw", "targets": [...]}, each target
  with x, y = its component's centroid in pixel-CENTRE coordinates (pixel column i has x = i) and
  peak_prob. The JSON is required: a frame without detections has no row in detections.csv, so
  the CSV alone cannot say which frames were processed. Optional maps PRED/img/VIDEO_FFFFFF.png
  (8-bit round(255 p), 6-digit frame) feed the curve.

Rules
- Coordinates: a centroid (cx, cy) in centre coordinates lies at (cx + 0.5, cy + 0.5) in edge
  coordinates. The box (x, y, w, h) grown by GROW_PX = 2 px on every side is [x - 2, x + w + 2] x
  [y - 2, y + h + 2] in edge coordinates, borders included, so the centroid is inside when
  x - 2.5 <= cx <= x + w + 1.5 and y - 2.5 <= cy <= y + h + 1.5 (with a 1e-6 px tolerance for
  the 3-decimal rounding of labels and CSV centroids).
- A labelled target is detected when at least one detection's centroid is inside its grown box.
  Every detection inside the grown box belongs to the target (a large airframe may split into
  parts): none of them is a false alarm, and the target counts once. Every other detection is a
  false alarm; in a target-absent frame every detection is a false alarm.
- A detection counts at threshold t when its peak_prob >= t (default t = 0.5). The inference
  detects components of p > 0.5, so t < 0.5 needs the maps: then the numbers come from the maps'
  components at t (below), and without maps such a t is refused.
- Scored frames: the processed frames (in detections.json) that have a label. Processed frames
  without a label and labels of the scored videos without a processed frame (e.g. the one extra
  label of 57 IR-Drone-Video videos, or the frames skipped by inference --every) are counted and
  named, not scored. Labels of videos absent from the predictions are out of scope (counted).
- Reported per class and overall: pd = detected targets / labelled targets; fa_per_frame = false
  alarms / scored frames; frames_with_fa = fraction of scored frames with >= 1 false alarm;
  absent_frames_with_fa = the same over target-absent frames; n_frames, n_targets,
  n_absent_frames and the raw counts. A fraction with a zero denominator is null.
- Pd by target size (``per_size``): the labelled targets grouped by the longer side of their
  box as labelled (before growing), < 16 px, 16 to < 32 px ("16-32 px") and >= 32 px, each
  with its Pd, targets and detected targets. False alarms have no target size and are not split.
- Curve over t = 0.05, 0.10, ..., 0.95: from the maps when every scored frame has one (8-connected
  components of the pixels with 8-bit value v >= ceil(255 t), i.e. v / 255 >= t, via
  utils.metrics.find_components; centroid rule as above), otherwise from the detections'
  peak_prob (only t >= the inference threshold, 0.5, is then meaningful: below it every
  detection counts, as at 0.5; the JSON and the plot say so).

Counting apart (``--reviewed FILE``): a review (``python -m utils.review`` writes the list of
false alarms with pictures; a person fills in each row's verdict) marks the false alarms that are
real objects the labels do not box (a second bird, a target labelled absent) as "object". The
main numbers stay as they are; the report adds "counted_apart": the same metrics with the false
alarms within REVIEW_RADIUS_PX = 3 px of an "object" row of the same frame left out, and how many.

No torch here (numpy and OpenCV only; matplotlib only when drawing).
"""
from __future__ import annotations

import csv
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils.data.video import target_class
from utils.files import atomic_write, write_json
from utils.metrics import find_components

GROW_PX = 2.0  # the label box is grown by this many pixels on every side
TOLERANCE_PX = 1e-6  # borders are inclusive up to float rounding of 3-decimal coordinates
DEFAULT_THRESHOLD = 0.5  # the inference's own threshold (p > 0.5): the peak_prob rule is exact from here up
CURVE_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95
CURVE_SOURCES = ("auto", "maps", "peaks")
LABEL_COLUMNS = ("video", "frame", "x", "y", "w", "h")
N_NAMED = 10  # names listed for unmatched frames before the count
MAP_CHUNK = 64  # maps read ahead at a time (bounds memory)
SIZE_EDGES_PX = (16.0, 32.0)  # per_size groups: longer box side < 16, 16 <= side < 32, >= 32 px
SIZE_NAMES = ("< 16 px", "16-32 px", ">= 32 px")
REVIEW_COLUMNS = ("id", "video", "frame", "x", "y", "peak_prob", "absent", "verdict", "note")
VERDICTS = ("object", "clutter", "")  # object: a real object the labels do not box; "": not reviewed
REVIEW_RADIUS_PX = 3.0  # a false alarm is the reviewed one when its centroid lies this close, same frame
METRIC_KEYS = ("pd", "fa_per_frame", "frames_with_fa", "absent_frames_with_fa", "n_frames", "n_targets",
               "n_absent_frames", "n_detected", "n_false_alarms", "n_frames_with_fa", "n_absent_frames_with_fa")


class BoxScoreError(ValueError):
    """A problem with the labels or the predictions; the message names the file and the fix."""


Box = tuple[float, float, float, float]  # x, y, w, h in pixel-edge coordinates


def frame_name(video: str, frame: int) -> str:
    """Return 'VIDEO:FRAME', the name of a frame in messages and reports."""
    return f"{video}:{frame}"


# ----------------------------------------------------------------------------- reading


def _read_csv(path: Path, what: str, fix: str) -> list[list[str]]:
    """Return the CSV file's rows (a UTF-8 byte-order mark, as spreadsheets write, is dropped); BoxScoreError naming
    the file (as ``what``) and the fix when it cannot be read or is not UTF-8 CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.reader(handle))
    except OSError as error:
        raise BoxScoreError(f"cannot read {what} {path} ({error.strerror or error}): {fix}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise BoxScoreError(f"{what} {path} is not UTF-8 CSV ({error}): save it as CSV UTF-8") from None


def read_box_labels(path: str | Path) -> dict[tuple[str, int], Box | None]:
    """Return {(video, frame): (x, y, w, h) in pixel-edge coordinates, or None when the target is absent}."""
    path = Path(path)
    rows = _read_csv(path, "labels", "pass the labels.csv of the video dataset with --boxes")
    labels: dict[tuple[str, int], Box | None] = {}
    header = rows[0] if rows else None
    if header is None or [h.strip() for h in header[:6]] != list(LABEL_COLUMNS):
        raise BoxScoreError(f"labels {path} line 1: header {','.join(header or [])!r} is not "
                            f"{','.join(LABEL_COLUMNS)}: pass a box-label CSV with --boxes")
    for line, row in enumerate(rows[1:], 2):
        if not row or all(not cell.strip() for cell in row):
            continue
        key, box = _parse_label_row(path, line, row)
        if key in labels:
            raise BoxScoreError(f"labels {path} line {line}: a second label for {frame_name(*key)} (at most one "
                                "target per frame): remove the duplicate row")
        labels[key] = box
    if not labels:
        raise BoxScoreError(f"labels {path} has no rows: pass the labels.csv of the video dataset")
    return labels


def _parse_label_row(path: Path, line: int, row: list[str]) -> tuple[tuple[str, int], Box | None]:
    """Return ((video, frame), box or None) for one CSV row; BoxScoreError naming the line otherwise."""
    where = f"labels {path} line {line}"
    if len(row) < 6:
        raise BoxScoreError(f"{where}: {len(row)} fields, expected 6 ({','.join(LABEL_COLUMNS)}): fix the row")
    video, frame_text, *values = (cell.strip() for cell in row[:6])
    if not video:
        raise BoxScoreError(f"{where}: empty video name: fix the row")
    try:
        frame = int(frame_text)
    except ValueError:
        frame = -1
    if frame < 0:
        raise BoxScoreError(f"{where}: frame {frame_text!r} is not a 0-based frame index: fix the row")
    if all(v == "" for v in values):
        return (video, frame), None
    try:
        x, y, w, h = (float(v) for v in values)
    except ValueError:
        raise BoxScoreError(f"{where}: box {','.join(values)!r} is not four numbers (or four empty fields for "
                            "an absent target): fix the row") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise BoxScoreError(f"{where}: box {','.join(values)!r} needs finite x, y and w, h >= 0: fix the row")
    return (video, frame), (x, y, w, h)


@dataclass
class Detections:
    """The processed frames of a prediction folder and their detections, as flat arrays."""

    frames: list[tuple[str, int]]  # every processed frame, in file order
    sizes: list[tuple[int, int]]  # its (h, w)
    frame_of: np.ndarray  # (D,) int64 index into frames of each detection
    x: np.ndarray  # (D,) centroid column, pixel-centre coordinates
    y: np.ndarray  # (D,) centroid row, pixel-centre coordinates
    peak: np.ndarray  # (D,) peak probability
    pred_dir: Path
    min_threshold: float = DEFAULT_THRESHOLD  # the inference's threshold: peak_prob is meaningful from here up
    errors: list[str] = field(default_factory=list)  # what the inference reported as failed (videos or frames)
    maps_saved: bool | None = None  # the run's --save-maps (None: not recorded); False: maps in img/ are not this run's
    confirm: str | None = None  # the run's --confirm K/N: its maps are from before confirmation


def read_detections(pred_dir: str | Path) -> Detections:
    """Return the Detections of PRED/detections.json (every processed frame, with or without targets)."""
    pred_dir = Path(pred_dir)
    path = pred_dir / "detections.json"
    if not path.is_file():
        if (pred_dir / "detections.csv").is_file():
            raise BoxScoreError(f"{path} is missing, only detections.csv is there: the frame list in detections.json "
                                "is needed (frames without detections have no CSV row); rerun the video inference")
        raise BoxScoreError(f"no detections.json in {pred_dir}: pass the --out folder of inference.py --video")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BoxScoreError(f"{path} cannot be read as JSON ({error}): rerun the video inference") from None
    if not isinstance(content, dict) or not isinstance(content.get("frames"), list):
        raise BoxScoreError(f"{path} has no \"frames\" list: write it with inference.py --video")
    frames, sizes, seen = [], [], set()
    frame_of, xs, ys, peaks = [], [], [], []
    for i, entry in enumerate(content["frames"]):
        try:
            key = (str(entry["video"]), int(entry["frame"]))
            h, w = (int(v) for v in entry.get("size_hw", (0, 0)))
            targets = entry["targets"]
            rows = [(float(t["x"]), float(t["y"]), float(t["peak_prob"])) for t in targets]
        except (KeyError, TypeError, ValueError) as error:
            raise BoxScoreError(f"{path}: frames[{i}] lacks video, frame, targets or a target's x, y, peak_prob "
                                f"({type(error).__name__}: {error}): rerun the video inference") from None
        if key in seen:
            raise BoxScoreError(f"{path}: frame {frame_name(*key)} is listed twice (frames[{i}]): rerun the video "
                                "inference into an empty folder")
        seen.add(key)
        index = len(frames)
        frames.append(key)
        sizes.append((h, w))
        for x, y, peak in rows:
            frame_of.append(index)
            xs.append(x)
            ys.append(y)
            peaks.append(peak)
    errors = content.get("errors") or []
    errors = [str(e.get("video", e.get("frame", e))) if isinstance(e, dict) else str(e)
              for e in (list(errors) if isinstance(errors, dict) else errors)]
    threshold = content.get("threshold", DEFAULT_THRESHOLD)
    threshold = float(threshold) if isinstance(threshold, (int, float)) else DEFAULT_THRESHOLD
    maps_saved = content.get("save_maps") if isinstance(content.get("save_maps"), bool) else None
    confirm = content.get("confirm") if isinstance(content.get("confirm"), str) else None
    return Detections(frames, sizes, np.asarray(frame_of, np.int64), np.asarray(xs, np.float64),
                      np.asarray(ys, np.float64), np.asarray(peaks, np.float64), pred_dir, threshold, errors,
                      maps_saved, confirm)


# ----------------------------------------------------------------------------- matching


def inside_grown_box(cx: np.ndarray, cy: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return bool (N,): centre-coordinate centroids inside their N x 4 edge-coordinate boxes grown by GROW_PX.

    A NaN box (target absent) contains nothing.
    """
    cx, cy, boxes = np.asarray(cx, np.float64), np.asarray(cy, np.float64), np.asarray(boxes, np.float64)
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    ex, ey = cx + 0.5, cy + 0.5  # centre -> edge coordinates
    return ((ex >= x - GROW_PX - TOLERANCE_PX) & (ex <= x + w + GROW_PX + TOLERANCE_PX)
            & (ey >= y - GROW_PX - TOLERANCE_PX) & (ey <= y + h + GROW_PX + TOLERANCE_PX))


def _counts(frame_of: np.ndarray, t_index: np.ndarray, inside: np.ndarray, n_frames: int, n_t: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Return (detected F x T bool, false alarms F x T int) from counted detections (frame, threshold index)."""
    flat = frame_of * n_t + t_index
    hits = np.bincount(flat[inside], minlength=n_frames * n_t).reshape(n_frames, n_t)
    fa = np.bincount(flat[~inside], minlength=n_frames * n_t).reshape(n_frames, n_t)
    return hits > 0, fa.astype(np.int64)


def _peak_counts(frame_of: np.ndarray, inside: np.ndarray, peak: np.ndarray, thresholds: np.ndarray,
                 n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (detected, false alarms), F x T, counting a detection at t when peak >= t."""
    keep = peak[:, None] >= thresholds[None, :]  # D x T
    det, t_index = np.nonzero(keep)
    return _counts(frame_of[det], t_index, inside[det], n_frames, len(thresholds))


def map_path(pred_dir: Path, video: str, frame: int) -> Path:
    """Return PRED/img/VIDEO_FFFFFF.png, where the video inference saves a frame's 8-bit probability map."""
    return Path(pred_dir) / "img" / f"{video}_{frame:06d}.png"


def _levels(thresholds: np.ndarray) -> np.ndarray:
    """Return the 8-bit levels ceil(255 t): a map pixel v counts at t when v >= level (v / 255 >= t)."""
    return np.ceil(np.round(255.0 * np.asarray(thresholds, np.float64), 6)).astype(np.int64)


def _read_map(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    """Return the 8-bit H x W map at path; BoxScoreError when unreadable or of another size than its frame."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8 or image.ndim != 2:
        raise BoxScoreError(f"map {path} is not an 8-bit grey PNG: rerun inference.py --video --save-maps")
    if size_hw[0] and size_hw[1] and image.shape != tuple(size_hw):
        raise BoxScoreError(f"map {path} is {image.shape[0]} x {image.shape[1]}, its frame {size_hw[0]} x "
                            f"{size_hw[1]} (detections.json): rerun the inference into an empty folder")
    return image


def map_components(image: np.ndarray, levels: np.ndarray) -> list[np.ndarray]:
    """Return, per 8-bit level, the K x 2 centroids (x, y; pixel-centre coords) of the components of image >= level."""
    out = [np.zeros((0, 2))] * len(levels)
    low = int(np.min(levels))
    mask = image >= low
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    r0, c0 = rows[0], cols[0]
    crop = image[r0:rows[-1] + 1, c0:cols[-1] + 1]  # every pixel >= any level lies here: components are unchanged
    for k, level in enumerate(levels):
        binary = crop >= level
        if not binary.any():
            continue
        centroids = find_components(binary).centroids()  # (row, col)
        out[k] = np.stack([centroids[:, 1] + c0, centroids[:, 0] + r0], axis=1)
    return out


def _map_counts(pred_dir: Path, frames: list[tuple[str, int]], sizes: list[tuple[int, int]], boxes: np.ndarray,
                thresholds: np.ndarray, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Return (detected, false alarms), F x T, from the components of each frame's saved map at each threshold."""
    levels = _levels(thresholds)
    f_idx, t_idx, xs, ys = [], [], [], []
    paths = [map_path(pred_dir, v, f) for v, f in frames]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # cv2.imread releases the GIL
        for start in range(0, len(frames), MAP_CHUNK):
            chunk = range(start, min(start + MAP_CHUNK, len(frames)))
            images = pool.map(lambda i: _read_map(paths[i], sizes[i]), chunk)
            for i, image in zip(chunk, images):
                for k, cents in enumerate(map_components(image, levels)):
                    if len(cents):
                        f_idx.append(np.full(len(cents), i, np.int64))
                        t_idx.append(np.full(len(cents), k, np.int64))
                        xs.append(cents[:, 0])
                        ys.append(cents[:, 1])
    if not f_idx:
        n = (len(frames), len(thresholds))
        return np.zeros(n, bool), np.zeros(n, np.int64)
    f_all, t_all = np.concatenate(f_idx), np.concatenate(t_idx)
    inside = inside_grown_box(np.concatenate(xs), np.concatenate(ys), boxes[f_all])
    return _counts(f_all, t_all, inside, len(frames), len(thresholds))


# ----------------------------------------------------------------------------- summaries


def _ratio(num: float, den: float) -> float | None:
    """Return num / den, or None when den is 0 (undefined, not zero)."""
    return float(num) / float(den) if den else None


def summarise(has_target: np.ndarray, detected: np.ndarray, n_fa: np.ndarray) -> dict:
    """Return the METRIC_KEYS for frames with has_target (F,), detected (F,) and false-alarm counts (F,)."""
    has_target, detected, n_fa = np.asarray(has_target, bool), np.asarray(detected, bool), np.asarray(n_fa)
    n_frames, n_targets = int(has_target.size), int(has_target.sum())
    n_detected = int((detected & has_target).sum())
    with_fa = n_fa > 0
    n_with_fa, n_absent_with_fa = int(with_fa.sum()), int((with_fa & ~has_target).sum())
    return {"pd": _ratio(n_detected, n_targets), "fa_per_frame": _ratio(int(n_fa.sum()), n_frames),
            "frames_with_fa": _ratio(n_with_fa, n_frames),
            "absent_frames_with_fa": _ratio(n_absent_with_fa, n_frames - n_targets),
            "n_frames": n_frames, "n_targets": n_targets, "n_absent_frames": n_frames - n_targets,
            "n_detected": n_detected, "n_false_alarms": int(n_fa.sum()), "n_frames_with_fa": n_with_fa,
            "n_absent_frames_with_fa": n_absent_with_fa}


def _by_class(classes: np.ndarray, has_target: np.ndarray, detected: np.ndarray, n_fa: np.ndarray) -> dict:
    """Return {class: summarise(...)} over the frames of each class, classes sorted."""
    return {c: summarise(has_target[classes == c], detected[classes == c], n_fa[classes == c])
            for c in sorted(set(classes.tolist()))}


def _by_size(boxes: np.ndarray, has_target: np.ndarray, detected: np.ndarray) -> dict:
    """Return {size group: {"pd", "n_targets", "n_detected"}} over the target frames, grouped by the longer side of
    the label box (SIZE_EDGES_PX); every group is listed, an empty one with pd None."""
    group = np.digitize(np.fmax(boxes[has_target, 2], boxes[has_target, 3]), SIZE_EDGES_PX)   # 0: < 16, 1: [16, 32)
    n_targets = np.bincount(group, minlength=len(SIZE_NAMES))
    n_detected = np.bincount(group, weights=np.asarray(detected, bool)[has_target], minlength=len(SIZE_NAMES))
    return {name: {"pd": _ratio(int(d), int(n)), "n_targets": int(n), "n_detected": int(d)}
            for name, n, d in zip(SIZE_NAMES, n_targets, n_detected)}


def _curve(source: str, thresholds: np.ndarray, classes: np.ndarray, has_target: np.ndarray,
           detected: np.ndarray, n_fa: np.ndarray, min_threshold: float) -> dict:
    """Return the curve dict: thresholds, pd, fa_per_frame, frames_with_fa per threshold, overall and per class."""
    def columns(sel: np.ndarray) -> dict:
        rows = [summarise(has_target[sel], detected[sel, k], n_fa[sel, k]) for k in range(len(thresholds))]
        return {key: [r[key] for r in rows] for key in ("pd", "fa_per_frame", "frames_with_fa")}

    curve = {"source": source, "thresholds": [float(t) for t in thresholds], **columns(np.ones(len(classes), bool))}
    if source == "peaks":
        curve["meaningful_from"] = float(min_threshold)
        curve["meaningful"] = [bool(t >= min_threshold) for t in thresholds]
        curve["note"] = (f"from the detections' peak_prob: the inference kept components of p > {min_threshold:g}, "
                         f"so only t >= {min_threshold:g} is meaningful (below, every detection counts, as at "
                         f"{min_threshold:g}); save the maps (inference.py --video --save-maps) for the full curve")
    else:
        curve["meaningful_from"] = float(thresholds[0])
        curve["meaningful"] = [True] * len(thresholds)
        curve["note"] = "from the saved maps: 8-connected components of v / 255 >= t, centroid rule"
    curve["per_class"] = {c: columns(classes == c) for c in sorted(set(classes.tolist()))}
    return curve


def _named(names: list[str]) -> dict:
    """Return {"count": n, "first": the first N_NAMED names}."""
    return {"count": len(names), "first": names[:N_NAMED]}


@dataclass
class Matched:
    """The scored frames (processed and labelled) and their detections, matched to the label boxes."""

    frames: list[tuple[str, int]]
    sizes: list[tuple[int, int]]
    boxes: np.ndarray  # F x 4, NaN rows for target-absent frames
    has_target: np.ndarray  # (F,) bool
    classes: np.ndarray  # (F,) object
    frame_of: np.ndarray  # (D,) index into frames of each detection of a scored frame
    x: np.ndarray  # (D,) centroid, pixel-centre coordinates
    y: np.ndarray
    inside: np.ndarray  # (D,) bool: inside its frame's grown box
    peak: np.ndarray  # (D,)
    unlabelled: list[str]
    unpredicted: list[str]
    scored_videos: set
    label_videos: set
    pred_videos: set


def match(labels: dict[tuple[str, int], Box | None], detections: Detections) -> Matched:
    """Return the scored frames and their detections matched to the label boxes (the rules above)."""
    pred_videos = {v for v, _ in detections.frames}
    label_videos = {v for v, _ in labels}
    scored_videos = pred_videos & label_videos
    if not scored_videos:
        raise BoxScoreError(f"no video of {detections.pred_dir / 'detections.json'} ({len(pred_videos)} video(s)) has "
                            f"a label ({len(label_videos)} labelled video(s)): pass the labels of the videos inferred")
    processed = set(detections.frames)
    keep = [i for i, key in enumerate(detections.frames) if key in labels]
    unlabelled = [frame_name(*k) for k in detections.frames if k not in labels]
    unpredicted = [frame_name(*k) for k in sorted(labels) if k[0] in scored_videos and k not in processed]
    frames = [detections.frames[i] for i in keep]
    sizes = [detections.sizes[i] for i in keep]
    n = len(frames)
    boxes = np.array([labels[k] if labels[k] is not None else (np.nan,) * 4 for k in frames], np.float64).reshape(n, 4)
    has_target = ~np.isnan(boxes[:, 0])
    classes = np.array([target_class(v) for v, _ in frames], dtype=object)

    # detections of the scored frames, renumbered to 0..n-1
    new_index = np.full(len(detections.frames), -1, np.int64)
    new_index[keep] = np.arange(n)
    frame_of = new_index[detections.frame_of] if detections.frame_of.size else detections.frame_of
    scored = frame_of >= 0
    frame_of = frame_of[scored]
    inside = inside_grown_box(detections.x[scored], detections.y[scored], boxes[frame_of])
    peak = detections.peak[scored]
    return Matched(frames, sizes, boxes, has_target, classes, frame_of, detections.x[scored], detections.y[scored],
                   inside, peak, unlabelled, unpredicted, scored_videos, label_videos, pred_videos)


def false_alarm_rows(m: Matched, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Return the false alarms (peak_prob >= threshold, outside the grown box) in frame order as REVIEW_COLUMNS rows
    (verdict and note empty; id 1, 2, ...)."""
    rows = []
    for k in np.flatnonzero((m.peak >= threshold) & ~m.inside):
        video, frame = m.frames[m.frame_of[k]]
        rows.append({"id": len(rows) + 1, "video": video, "frame": frame, "x": round(float(m.x[k]), 3),
                     "y": round(float(m.y[k]), 3), "peak_prob": round(float(m.peak[k]), 4),
                     "absent": int(not m.has_target[m.frame_of[k]]), "verdict": "", "note": ""})
    return rows


def read_review(path: str | Path) -> dict[tuple[str, int], list[tuple[float, float, str, str]]]:
    """Return {(video, frame): [(x, y, verdict, note), ...]} from a review CSV (REVIEW_COLUMNS; ``python -m utils.review``
    writes it, a person fills in the verdicts: object, clutter or empty)."""
    path = Path(path)
    rows = _read_csv(path, "review", "pass the false_alarms.csv that python -m utils.review wrote, with its verdicts "
                     "filled in")
    header = [h.strip() for h in rows[0]] if rows else []
    missing = [c for c in ("video", "frame", "x", "y", "verdict") if c not in header]
    if missing:
        raise BoxScoreError(f"review {path} line 1: no {', '.join(missing)} column(s): pass the false_alarms.csv "
                            "that python -m utils.review wrote")
    column = {name: header.index(name) for name in ("video", "frame", "x", "y", "verdict", "note") if name in header}
    review: dict[tuple[str, int], list[tuple[float, float, str, str]]] = {}
    for line, cells in enumerate(rows[1:], 2):
        if not cells or all(not c.strip() for c in cells):
            continue
        row = {name: (cells[k].strip() if k < len(cells) else "") for name, k in column.items()}
        where = f"review {path} line {line}"
        verdict = row["verdict"].lower()
        if verdict not in VERDICTS:
            raise BoxScoreError(f"{where}: verdict {row['verdict']!r} is not object, clutter or empty: fix the row")
        try:
            frame, x, y = int(row["frame"]), float(row["x"]), float(row["y"])
            valid = bool(row["video"]) and frame >= 0 and math.isfinite(x) and math.isfinite(y)
        except ValueError:
            valid = False
        if not valid:
            raise BoxScoreError(f"{where}: video, frame, x, y {row['video']!r}, {row['frame']!r}, {row['x']!r}, "
                                f"{row['y']!r} are not a name, a 0-based frame and two finite numbers: fix the row")
        review.setdefault((row["video"], frame), []).append((x, y, verdict, row.get("note", "")))
    return review


def nearest_review(review: dict, key: tuple[str, int], x: float, y: float,
                   radius: float = REVIEW_RADIUS_PX) -> tuple[float, float, str, str] | None:
    """Return the review row of frame ``key`` nearest to (x, y), whatever its verdict, when within radius px; else
    None. The nearest row decides: a false alarm on a clutter row stays clutter beside an object 2 px away."""
    rows = review.get(key)
    if not rows:
        return None
    d2 = ((np.asarray([r[:2] for r in rows], np.float64) - (x, y)) ** 2).sum(1)
    k = int(np.argmin(d2))
    return rows[k] if d2[k] <= radius ** 2 else None


def check_review_threshold(threshold: float, detections: Detections) -> None:
    """BoxScoreError unless the threshold lies in [the run's inference threshold, 1]: a review applies to the
    detections (components of p > that threshold), not to the maps."""
    low = detections.min_threshold
    if not low <= threshold <= 1:
        raise BoxScoreError(f"threshold {threshold:g}: a review applies to the detections, threshold >= {low:g} "
                            f"(the run kept components of p > {low:g}): pass a threshold in [{low:g}, 1], or score "
                            "without --reviewed")


def assign_review(review: dict, points) -> tuple[list, set]:
    """Return, for points (frame key, x, y), each one's nearest review row within REVIEW_RADIUS_PX (None when none
    is near), and the set of (frame key, (x, y)) of the review rows so taken."""
    hits, taken = [], set()
    for key, x, y in points:
        hit = nearest_review(review, key, x, y)
        hits.append(hit)
        if hit is not None:
            taken.add((key, hit[:2]))
    return hits, taken


def _counted_apart(m: Matched, review: dict, threshold: float, detected: np.ndarray, n_fa: np.ndarray) -> dict:
    """Return the "counted_apart" entry: the metrics without the false alarms whose nearest review row says object,
    and how complete the review is for this run."""
    false_alarm = np.flatnonzero((m.peak >= threshold) & ~m.inside)
    hits, used = assign_review(review, [(m.frames[m.frame_of[k]], m.x[k], m.y[k]) for k in false_alarm])
    verdicts = [None if hit is None else hit[2] for hit in hits]
    apart = np.zeros(m.peak.shape, bool)
    apart[false_alarm] = [v == "object" for v in verdicts]
    rest = n_fa - np.bincount(m.frame_of[apart], minlength=len(m.frames))
    n_rows = sum(len(v) for v in review.values())
    return {"n_apart": int(apart.sum()), "n_clutter": verdicts.count("clutter"),
            "n_not_reviewed": sum(v is None or v == "" for v in verdicts),
            "n_review_rows_unmatched": n_rows - len(used), "radius_px": REVIEW_RADIUS_PX,
            **summarise(m.has_target, detected, rest), "per_class": _by_class(m.classes, m.has_target, detected, rest)}


def score_boxes(labels: dict[tuple[str, int], Box | None], detections: Detections,
                threshold: float = DEFAULT_THRESHOLD, curve: str = "auto", workers: int = 2,
                review: dict | None = None) -> dict:
    """Return the report: overall METRIC_KEYS (fractions, per frame), per_class, per_size, curve, unmatched frames
    and notes.

    ``review`` (``read_review``) adds "counted_apart": the metrics without the false alarms reviewed as "object".

    ``curve``: "maps" (PRED/img maps, all required), "peaks" (peak_prob) or "auto" (maps when every
    scored frame has one). A threshold below the inference's (0.5) needs the maps.
    """
    if curve not in CURVE_SOURCES:
        raise BoxScoreError(f"curve source {curve!r} is not one of {', '.join(CURVE_SOURCES)}")
    if not 0.0 <= threshold <= 1.0:
        raise BoxScoreError(f"threshold {threshold:g} is outside [0, 1]: pass a probability")
    if review is not None:
        check_review_threshold(threshold, detections)
    m = match(labels, detections)
    frames, sizes, boxes, has_target, classes = m.frames, m.sizes, m.boxes, m.has_target, m.classes
    frame_of, inside, peak, unlabelled, unpredicted = m.frame_of, m.inside, m.peak, m.unlabelled, m.unpredicted
    scored_videos, label_videos, pred_videos = m.scored_videos, m.label_videos, m.pred_videos
    n = len(frames)

    if detections.maps_saved is False:  # maps in img/ (if any) were written by another run into this folder
        missing_maps = [frame_name(*k) for k in frames]
    else:
        missing_maps = [frame_name(*k) for k in frames if not map_path(detections.pred_dir, *k).is_file()]
    if curve == "maps" and missing_maps:
        raise BoxScoreError(f"{len(missing_maps)} of {n} scored frame(s) have no map in {detections.pred_dir / 'img'} "
                            f"(first {missing_maps[0]}): rerun inference.py --video --save-maps, or use --curve peaks")
    use_maps = curve == "maps" or (curve == "auto" and not missing_maps)
    notes = []
    if threshold < detections.min_threshold and not use_maps:
        raise BoxScoreError(f"threshold {threshold:g} is below the inference's {detections.min_threshold:g}: it needs "
                            f"the probability maps, and {len(missing_maps)} of {n} scored frame(s) have none in "
                            f"{detections.pred_dir / 'img'}: rerun inference.py --video --save-maps, or use a "
                            f"threshold >= {detections.min_threshold:g}")
    thresholds = np.asarray(CURVE_THRESHOLDS, np.float64)
    if use_maps and detections.confirm:
        notes.append(f"the maps are from before --confirm {detections.confirm}: the curve from them ignores the "
                     "temporal confirmation")
    if use_maps:
        both = np.append(thresholds, threshold)
        det_all, fa_all = _map_counts(detections.pred_dir, frames, sizes, boxes, both, workers)
        det_curve, fa_curve = det_all[:, :-1], fa_all[:, :-1]
    else:
        det_curve, fa_curve = _peak_counts(frame_of, inside, peak, thresholds, n)
        if curve == "auto" and len(missing_maps) < n:
            notes.append(f"{len(missing_maps)} of {n} scored frame(s) have no map (first {missing_maps[0]}): "
                         "the curve comes from peak_prob")
    if threshold >= detections.min_threshold:
        main_source = "detections"
        detected, n_fa = (a[:, 0] for a in _peak_counts(frame_of, inside, peak, np.array([threshold]), n))
    else:
        main_source = "maps"
        detected, n_fa = det_all[:, -1], fa_all[:, -1]
        notes.append(f"threshold {threshold:g} < {detections.min_threshold:g}: the main numbers come from the maps' "
                     f"components at {threshold:g}")
    if unlabelled:
        notes.append(f"{len(unlabelled)} processed frame(s) have no label and were not scored (first "
                     f"{', '.join(unlabelled[:N_NAMED])})")
    if unpredicted:
        notes.append(f"{len(unpredicted)} label(s) of the scored videos have no processed frame and were not scored "
                     f"(first {', '.join(unpredicted[:N_NAMED])})")
    if detections.errors:
        notes.append(f"the inference reported {len(detections.errors)} error(s): "
                     f"{', '.join(detections.errors[:N_NAMED])}")
    report = {**summarise(has_target, detected, n_fa), "threshold": float(threshold), "main_source": main_source,
              "per_class": _by_class(classes, has_target, detected, n_fa),
              "per_size": _by_size(boxes, has_target, detected),
              "curve": _curve("maps" if use_maps else "peaks", thresholds, classes, has_target, det_curve, fa_curve,
                              detections.min_threshold),
              "unlabelled_frames": _named(unlabelled), "unpredicted_labels": _named(unpredicted),
              "videos_scored": len(scored_videos), "videos_skipped": len(label_videos - pred_videos),
              "inference_errors": _named(detections.errors), "pred_dir": str(detections.pred_dir),
              "grow_px": GROW_PX, "rules": RULES, "notes": notes}
    if review is not None:
        report["counted_apart"] = apart = _counted_apart(m, review, threshold, detected, n_fa)
        if apart["n_not_reviewed"]:
            notes.append(f"{apart['n_not_reviewed']} of the {report['n_false_alarms']} false alarms have no reviewed "
                         f"row within {REVIEW_RADIUS_PX:g} px: they stay counted (review them: python -m utils.review "
                         "--carry)")
        if apart["n_review_rows_unmatched"]:
            notes.append(f"{apart['n_review_rows_unmatched']} row(s) of the review match no false alarm of this run "
                         "(another run, threshold or videos?)")
    return report


RULES = ("centroid (cx, cy) in pixel-centre coordinates is inside box (x, y, w, h) in pixel-edge coordinates grown by "
         "2 px when x - 2.5 <= cx <= x + w + 1.5 and y - 2.5 <= cy <= y + h + 1.5; a target is detected by any "
         "detection inside, all of which are not false alarms; every other detection is a false alarm; a detection "
         "counts when peak_prob >= threshold")


def score_box_folder(labels_csv: str | Path, pred_dir: str | Path, threshold: float = DEFAULT_THRESHOLD,
                     curve: str = "auto", workers: int = 2, review_csv: str | Path | None = None) -> dict:
    """Return score_boxes(read_box_labels(labels_csv), read_detections(pred_dir), ...) with the labels path added."""
    from utils.scoring import ScoringError, check_one_run  # one run per folder: PRED/manifest.json

    try:
        run_notes = check_one_run(Path(pred_dir), "boxes") if Path(pred_dir).is_dir() else []
    except ScoringError as error:
        raise BoxScoreError(str(error)) from None
    review = read_review(review_csv) if review_csv is not None else None
    report = score_boxes(read_box_labels(labels_csv), read_detections(pred_dir), threshold, curve, workers, review)
    if review is not None:
        report["counted_apart"]["review"] = str(review_csv)
    report["notes"] = run_notes + report["notes"]
    report["labels"] = str(labels_csv)
    return report


# ----------------------------------------------------------------------------- reports


def _pct(value: float | None) -> str:
    """Return a fraction as 'xx.xx %', or '-' when undefined."""
    return "-" if value is None else f"{100 * value:.2f} %"


def _table_lines(report: dict) -> list[str]:
    """Return the header and rows (per class, then all) of a metrics dict with per_class."""
    head = ("class", "frames", "targets", "absent", "Pd", "FA/frame", "frames w/ FA", "absent w/ FA")
    rows = []
    for name, m in [*report["per_class"].items(), ("all", report)]:
        fa = "-" if m["fa_per_frame"] is None else f"{m['fa_per_frame']:.4f}"
        rows.append((name, str(m["n_frames"]), str(m["n_targets"]), str(m["n_absent_frames"]), _pct(m["pd"]), fa,
                     _pct(m["frames_with_fa"]), _pct(m["absent_frames_with_fa"])))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [line(r) for r in [head, *rows]]


def format_box_table(report: dict) -> str:
    """Return the per-class and overall metrics as a text table (fractions in %, false alarms per frame), a line of
    Pd by target size, and the counted-apart table when a review was applied."""
    title = (f"box scoring: peak_prob >= {report['threshold']:g} (from {report['main_source']}), centroid inside "
             f"the label box grown by {report['grow_px']:g} px; {report['videos_scored']} video(s) scored, "
             f"{report['videos_skipped']} labelled video(s) not in the predictions")
    lines = [title, *_table_lines(report)]
    lines.append("Pd by label box size (longer side): " + ", ".join(
        f"{name} {_pct(g['pd'])} ({g['n_detected']} of {g['n_targets']})" for name, g in report["per_size"].items()))
    apart = report.get("counted_apart")
    if apart is not None:
        source = f" ({apart['review']})" if apart.get("review") else ""
        lines += ["", f"counted apart: {apart['n_apart']} of the {report['n_false_alarms']} false alarms lie within "
                      f"{apart['radius_px']:g} px of a row the review{source} marks object ({apart['n_clutter']} "
                      f"clutter, {apart['n_not_reviewed']} not reviewed); the same scores without them:",
                  *_table_lines(apart)]
    return "\n".join(lines)


def import_matplotlib() -> None:
    """Import the Agg canvas and Figure (about 0.5 s of CPU), so that a thread can overlap the import with scoring."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def plot_pd_fa(path: str | Path, report: dict) -> Path:
    """Write the Pd / false-alarms-per-frame curve (points labelled by threshold) as a PNG atomically; return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, no display; imported only here
    from matplotlib.figure import Figure

    curve = report["curve"]
    fa = np.array([np.nan if v is None else v for v in curve["fa_per_frame"]], np.float64)
    pd = np.array([np.nan if v is None else v for v in curve["pd"]], np.float64)
    ok = np.array(curve["meaningful"], bool)
    figure = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(fa[ok], pd[ok], "o-", color="tab:blue", label=f"from {curve['source']}")
    if (~ok).any():
        axes.plot(fa[~ok], pd[~ok], "o", mfc="none", color="grey",
                  label=f"t < {curve['meaningful_from']:g}: not meaningful without maps")
    groups: dict[tuple[float, float], list[float]] = {}  # coinciding points get one label, "t1-t2"
    for t, x, y, good in zip(curve["thresholds"], fa, pd, ok):
        if good and np.isfinite(x) and np.isfinite(y):
            groups.setdefault((float(x), float(y)), []).append(t)
    for (x, y), ts in groups.items():
        text = f"{ts[0]:g}" if len(ts) == 1 else f"{ts[0]:g}-{ts[-1]:g}"
        axes.annotate(text, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    axes.set_xlabel("false alarms per frame")
    axes.set_ylabel("Pd (targets with a detection in the box + 2 px)")
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=7)
    title = f"Pd / FA over thresholds ({curve['source']})"
    if curve["source"] == "peaks":
        title += f": only t >= {curve['meaningful_from']:g} meaningful (no maps)"
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return atomic_write(path, lambda f: figure.savefig(f, format="png"))


def write_box_report(report: dict, out: str | Path, json_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write the report JSON (default OUT/box_metrics.json) and OUT/pd_fa_curve.png; return both paths."""
    out = Path(out)
    json_path = Path(json_path) if json_path is not None else out / "box_metrics.json"
    write_json(json_path, report)
    return json_path, plot_pd_fa(out / "pd_fa_curve.png", report)
