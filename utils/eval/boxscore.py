"""Target-level scoring of video detections against box labels: Pd, false alarms per frame, a Pd/FA curve.

Inputs
- Labels: a CSV ``video,frame,x,y,w,h`` (datasets/IR-Drone-Video/labels.csv), read by
  ``utils.data.labels.read_box_labels`` (its rules: one target a frame, pixel-edge boxes).
  The class of a video is the second '_'-separated field of its name (IR_BIRD_001 -> BIRD; a
  name without one is its own class).
- Predictions: PRED/detections.json as the video inference writes it (``utils.infer.record``):
  "frames" lists every processed frame, {"video", "frame", "size_hw", "targets": [...]}, each target
  with x, y = its component's centroid in pixel-CENTRE coordinates (pixel column i has x = i) and
  peak_prob. The JSON is required: a frame without detections has no row in detections.csv, so
  the CSV alone cannot say which frames were processed. Optional maps PRED/img/VIDEO_FFFFFF.png
  (8-bit round(255 p), 6-digit frame) feed the curve.

Rules
- Matching and counting: ``utils.eval.boxes`` (the centroid inside the label box grown by 2 px;
  ``BoxCounts``), the rule every box-level number of the project uses.
- A detection counts at threshold t when its peak_prob >= t (default t = 0.5). The inference
  detects components of p > 0.5, so t < 0.5 needs the maps: then the numbers come from the maps'
  components at t (below), and without maps such a t is refused.
- A label box wholly outside its frame (the frame size recorded in detections.json) is refused, naming it:
  it could never be matched.
- Scored frames: the processed frames (in detections.json) that have a label. Processed frames
  without a label and labels of the scored videos without a processed frame are counted and
  named, not scored; the latter apart as labels between processed frames (skipped by inference
  --every) and labels after a video's last processed frame (e.g. the one extra label of 57
  IR-Drone-Video videos, beyond the video's end). Labels of videos absent from the predictions are
  out of scope (counted).
- Reported per class and overall: ``BoxCounts.compute()`` (pd, fa_per_frame, frames_with_fa,
  absent_frames_with_fa and the raw counts; a fraction with a zero denominator is null).
- Pd by target size (``per_size``): the labelled targets grouped by the longer side of their
  box as labelled (before growing), < 16 px, 16 to < 32 px ("16-32 px") and >= 32 px, each
  with its Pd, targets and detected targets. False alarms have no target size and are not split.
- Curve over t = 0.05, 0.10, ..., 0.95: from the maps when every scored frame has one (8-connected
  components of the pixels with 8-bit value v >= ceil(255 t), i.e. v / 255 >= t, via
  utils.eval.metrics.find_components; centroid rule as above), otherwise from the detections'
  peak_prob (only t >= the inference threshold, 0.5, is then meaningful: below it every
  detection counts, as at 0.5; the JSON and the plot say so).

Counting apart (``--reviewed FILE``): a review (``python -m utils.review`` writes the list of
false alarms with pictures; a person fills in each row's verdict) marks the false alarms that are
real objects the labels do not box (a second bird, a target labelled absent) as "object". The
main numbers stay as they are; the report adds "counted_apart": the same metrics with the false
alarms within REVIEW_RADIUS_PX = 3 px of an "object" row of the same frame left out, and how many.

Still frames (``score_still_boxes``): labels ``frame,x,y,w,h`` (``read_still_labels``: several boxes a frame,
the image's stem as the frame's name) against the detections.json of a frames run (``inference.py --data-root
ROOT --split val`` or ``--images``, whose frames are keyed by that name). Each target is matched by the same
rule (``utils.eval.boxes.pairs_inside``): detected when a detection lies inside its grown box; a detection
inside no box of its frame is a false alarm. Pd is over targets, false alarms over frames; per_size groups
targets; there are no classes (per_class is empty). The curve comes from peak_prob (t >= 0.5 meaningful),
and the threshold must be at least the inference's; a review (``--reviewed``) applies to video runs only.

No torch here (numpy and OpenCV only; matplotlib only when drawing).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.data import DataError
from utils.data.labels import (
    STILL_COLUMNS,
    Labels,
    StillLabels,
    frame_name,
    label_columns,
    read_box_labels,
    read_still_labels,
)
from utils.data.video import target_class
from utils.eval.boxes import GROW_PX, frame_outcomes, inside_grown_box, pairs_inside, summarise
from utils.eval.chart import plot_pd_fa
from utils.eval.metrics import THRESHOLD, find_components
from utils.eval.reviews import REVIEW_RADIUS_PX, assign_review, read_review
from utils.files import write_json
from utils.infer.record import (
    BOX_METRICS,
    PD_FA_PNG,
    Detections,
    RecordError,
    check_one_run,
    read_detections,
    video_map_path,
)

DEFAULT_THRESHOLD = THRESHOLD  # the inference's own threshold (p > 0.5): the peak_prob rule is exact from here up
CURVE_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95
CURVE_SOURCES = ("auto", "maps", "peaks")
N_NAMED = 10  # names listed for unmatched frames before the count
MAP_CHUNK = 64  # maps read ahead at a time (bounds memory)
SIZE_EDGES_PX = (16.0, 32.0)  # per_size groups: longer box side < 16, 16 <= side < 32, >= 32 px
SIZE_NAMES = ("< 16 px", "16-32 px", ">= 32 px")


class BoxScoreError(ValueError):
    """A problem with the labels or the predictions; the message names the file and the fix."""


# ----------------------------------------------------------------------------- reading


# ----------------------------------------------------------------------------- matching


def _counts(frame_of: np.ndarray, t_index: np.ndarray, inside: np.ndarray, n_frames: int, n_t: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Return (detected F x T bool, false alarms F x T int) from counted detections (frame, threshold index)."""
    detected, fa = frame_outcomes(frame_of * n_t + t_index, inside, n_frames * n_t)   # one (frame, t) a cell
    return detected.reshape(n_frames, n_t), fa.reshape(n_frames, n_t)


def _peak_counts(frame_of: np.ndarray, inside: np.ndarray, peak: np.ndarray, thresholds: np.ndarray,
                 n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (detected, false alarms), F x T, counting a detection at t when peak >= t."""
    keep = peak[:, None] >= thresholds[None, :]  # D x T
    det, t_index = np.nonzero(keep)
    return _counts(frame_of[det], t_index, inside[det], n_frames, len(thresholds))


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
    paths = [video_map_path(pred_dir, v, f) for v, f in frames]
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
    return {name: {"pd": int(d) / int(n) if n else None, "n_targets": int(n), "n_detected": int(d)}
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
    unpredicted: list[str]     # labels of the scored videos without a processed frame: those below,
    after_last: list[str]      # ... after the video's last processed frame (beyond its end, or in the last --every step)
    scored_videos: set
    label_videos: set
    pred_videos: set


def match(labels: Labels, detections: Detections) -> Matched:
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
    last = {}   # the last processed frame of each video
    for video, frame in detections.frames:
        last[video] = max(frame, last.get(video, frame))
    missed = [k for k in sorted(labels) if k[0] in scored_videos and k not in processed]
    unpredicted = [frame_name(*k) for k in missed]
    after_last = [frame_name(*k) for k in missed if k[1] > last[k[0]]]
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
                   inside, peak, unlabelled, unpredicted, after_last, scored_videos, label_videos, pred_videos)


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


def check_review_threshold(threshold: float, detections: Detections) -> None:
    """BoxScoreError unless the threshold lies in [the run's inference threshold, 1]: a review applies to the
    detections (components of p > that threshold), not to the maps."""
    low = detections.min_threshold
    if not low <= threshold <= 1:
        raise BoxScoreError(f"threshold {threshold:g}: a review applies to the detections, threshold >= {low:g} "
                            f"(the run kept components of p > {low:g}): pass a threshold in [{low:g}, 1], or score "
                            "without --reviewed")


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


def score_boxes(labels: Labels, detections: Detections,
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
        missing_maps = [frame_name(*k) for k in frames if not video_map_path(detections.pred_dir, *k).is_file()]
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
    after = set(m.after_last)
    between = [k for k in unpredicted if k not in after]
    if between:
        notes.append(f"{len(between)} label(s) of the scored videos fall between processed frames (frames the "
                     f"inference skipped, e.g. by --every) and were not scored (first {', '.join(between[:N_NAMED])})")
    if m.after_last:
        notes.append(f"{len(m.after_last)} label(s) of the scored videos lie after their video's last processed frame "
                     "(beyond the video's end, or within the last --every step) and were not scored (first "
                     f"{', '.join(m.after_last[:N_NAMED])})")
    if detections.errors:
        notes.append(f"the inference reported {len(detections.errors)} error(s): "
                     f"{', '.join(detections.errors[:N_NAMED])}")
    report = {**summarise(has_target, detected, n_fa), "threshold": float(threshold), "main_source": main_source,
              "per_class": _by_class(classes, has_target, detected, n_fa),
              "per_size": _by_size(boxes, has_target, detected),
              "curve": _curve("maps" if use_maps else "peaks", thresholds, classes, has_target, det_curve, fa_curve,
                              detections.min_threshold),
              "unlabelled_frames": _named(unlabelled), "unpredicted_labels": _named(unpredicted),
              "labels_between_processed": _named(between), "labels_after_last_processed": _named(m.after_last),
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


def check_boxes_in_frames(labels: Labels | StillLabels, detections: Detections, labels_csv: str | Path,
                          stills: bool = False) -> None:
    """Raise BoxScoreError naming the label file, the first labelled frames and their frame size when a label box of
    a processed frame lies wholly outside that frame (the size recorded in detections.json): such a box could never
    be matched, and would count as a miss. stills: labels are still-frame labels (several boxes a frame name)."""
    outside = []
    for key, (h, w) in zip(detections.frames, detections.sizes):
        entry = labels.get(key)
        if entry is None or not (h and w):
            continue
        for x, y, bw, bh in (entry if stills else [entry]):   # pixel-edge coordinates: the frame is [0, w) x [0, h)
            if x + bw <= 0 or y + bh <= 0 or x >= w or y >= h:
                name = key if stills else frame_name(*key)
                outside.append(f"{name} box {x:g},{y:g},{bw:g},{bh:g} in a {w} x {h} frame")
    if outside:
        raise BoxScoreError(f"labels {labels_csv}: {len(outside)} box(es) lie wholly outside their frame (first "
                            f"{'; '.join(outside[:3])}; frame sizes from {detections.pred_dir / 'detections.json'}): "
                            "fix those rows (x, y, w, h in pixels of the frame)")


def score_still_boxes(labels: StillLabels, detections: Detections, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Return the report of a frames run's detections (keyed by frame name) against still-frame labels: the keys of
    score_boxes' report, with "kind": "frames", target-level Pd and per_size, no classes, the curve from peak_prob."""
    if not detections.min_threshold <= threshold <= 1.0:
        raise BoxScoreError(f"threshold {threshold:g}: still frames are scored on the detections (components of p > "
                            f"{detections.min_threshold:g}): pass a threshold in [{detections.min_threshold:g}, 1]")
    names = list(detections.frames)
    keep = [i for i, name in enumerate(names) if name in labels]
    if not keep:
        raise BoxScoreError(f"no frame of {detections.pred_dir / 'detections.json'} ({len(names)} frame(s)) has a "
                            f"label ({len(labels)} labelled frame(s)): pass the labels of the frames inferred")
    processed = set(names)
    unlabelled = [name for name in names if name not in labels]
    unpredicted = [name for name in labels if name not in processed]
    frames = [names[i] for i in keep]
    n = len(frames)
    new_index = np.full(len(names), -1, np.int64)
    new_index[keep] = np.arange(n)
    frame_of = new_index[detections.frame_of] if detections.frame_of.size else detections.frame_of
    scored = frame_of >= 0
    frame_of, x, y, peak = frame_of[scored], detections.x[scored], detections.y[scored], detections.peak[scored]
    per_frame = np.array([len(labels[f]) for f in frames], np.int64)
    target_frame = np.repeat(np.arange(n), per_frame)
    boxes = np.array([b for f in frames for b in labels[f]], np.float64).reshape(-1, 4)
    det, tgt = pairs_inside(frame_of, x, y, target_frame, boxes, n)
    inside = np.zeros(len(frame_of), bool)
    inside[det] = True
    levels = np.append(np.asarray(CURVE_THRESHOLDS, np.float64), threshold)   # the curve's, then the main one
    hit = np.zeros((len(boxes), len(levels)), bool)                           # target x threshold: detected
    pair, level = np.nonzero(peak[det][:, None] >= levels[None, :])
    hit[tgt[pair], level] = True
    detected = np.zeros((n, len(levels)), np.int64)
    np.add.at(detected, target_frame, hit.astype(np.int64))
    n_fa = np.zeros((n, len(levels)), np.int64)
    np.add.at(n_fa, frame_of, ((peak[:, None] >= levels[None, :]) & ~inside[:, None]).astype(np.int64))
    curve = _curve("peaks", levels[:-1], np.full(n, "", object), per_frame, detected[:, :-1], n_fa[:, :-1],
                   detections.min_threshold)
    curve["per_class"] = {}
    curve["note"] = (f"from the detections' peak_prob: the inference kept components of p > "
                     f"{detections.min_threshold:g}, so only t >= {detections.min_threshold:g} is meaningful")
    group = np.digitize(np.fmax(boxes[:, 2], boxes[:, 3]), SIZE_EDGES_PX)
    n_group = np.bincount(group, minlength=len(SIZE_NAMES))
    n_group_hit = np.bincount(group, weights=hit[:, -1], minlength=len(SIZE_NAMES))
    notes = []
    if unlabelled:
        notes.append(f"{len(unlabelled)} processed frame(s) have no label and were not scored (first "
                     f"{', '.join(unlabelled[:N_NAMED])})")
    if detections.errors:
        notes.append(f"the inference reported {len(detections.errors)} error(s): "
                     f"{', '.join(detections.errors[:N_NAMED])}")
    return {**summarise(per_frame, detected[:, -1], n_fa[:, -1]), "kind": "frames", "threshold": float(threshold),
            "main_source": "detections", "per_class": {},
            "per_size": {name: {"pd": int(d) / int(k) if k else None, "n_targets": int(k), "n_detected": int(d)}
                         for name, k, d in zip(SIZE_NAMES, n_group, n_group_hit)},
            "curve": curve, "unlabelled_frames": _named(unlabelled), "unpredicted_labels": _named(unpredicted),
            "inference_errors": _named(detections.errors), "pred_dir": str(detections.pred_dir), "grow_px": GROW_PX,
            "rules": RULES, "notes": notes}


def score_box_folder(labels_csv: str | Path, pred_dir: str | Path, threshold: float = DEFAULT_THRESHOLD,
                     curve: str = "auto", workers: int = 2, review_csv: str | Path | None = None) -> dict:
    """Return score_boxes(read_box_labels(labels_csv), read_detections(pred_dir), ...) with the labels path added;
    score_still_boxes for still-frame labels (``frame,x,y,w,h``)."""
    try:
        run_notes = check_one_run(Path(pred_dir), "boxes") if Path(pred_dir).is_dir() else []   # one run a folder
        stills = label_columns(labels_csv) == STILL_COLUMNS
        if stills and (review_csv is not None or curve == "maps"):
            raise BoxScoreError(f"labels {labels_csv} are for still frames: --reviewed and --curve maps apply to "
                                "video runs; drop them")
        review = read_review(review_csv) if review_csv is not None else None
        if stills:
            labels, detections = read_still_labels(labels_csv), read_detections(pred_dir, stills=True)
        else:
            labels, detections = read_box_labels(labels_csv), read_detections(pred_dir)
    except (DataError, RecordError) as error:
        raise BoxScoreError(str(error)) from None
    check_boxes_in_frames(labels, detections, labels_csv, stills)
    if stills:
        report = score_still_boxes(labels, detections, threshold)
        report["notes"] = run_notes + report["notes"]
        report["labels"] = str(labels_csv)
        return report
    report = score_boxes(labels, detections, threshold, curve, workers, review)
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
    scope = (f"{report['n_frames']} still frame(s) scored, {report['unpredicted_labels']['count']} labelled frame(s) "
             "not in the predictions" if report.get("kind") == "frames" else
             f"{report['videos_scored']} video(s) scored, {report['videos_skipped']} labelled video(s) not in the "
             "predictions")
    title = (f"box scoring: peak_prob >= {report['threshold']:g} (from {report['main_source']}), centroid inside "
             f"the label box grown by {report['grow_px']:g} px; {scope}")
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


def write_box_report(report: dict, out: str | Path, json_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write the report JSON (default OUT/box_metrics.json) and OUT/pd_fa_curve.png; return both paths."""
    out = Path(out)
    json_path = Path(json_path) if json_path is not None else out / BOX_METRICS
    write_json(json_path, report)
    return json_path, plot_pd_fa(out / PD_FA_PNG, report)
