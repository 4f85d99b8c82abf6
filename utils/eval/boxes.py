"""Target-level counts of box-labelled frames: the one matching rule and the one accumulator.

Every box-level number of the project comes from here: ``cal_from_mask.py --boxes`` (and
``inference.py --score`` on videos), training's video validation and its selection score
(``utils.train.validate``), and the verifier's choice of tau (``utils.verify.train``).

The rule (``inside_grown_box``): a detection's centroid (cx, cy) in pixel-CENTRE coordinates
(pixel column i has x = i) lies at (cx + 0.5, cy + 0.5) in pixel-EDGE coordinates; the label box
(x, y, w, h), in edge coordinates, grown by ``GROW_PX`` = 2 px on every side is
[x - 2, x + w + 2] x [y - 2, y + h + 2], borders included (with a 1e-6 px tolerance for the
3-decimal rounding of labels and CSV centroids). A labelled target is detected when at least one
detection lies inside; every detection inside belongs to the target (a large airframe may split
into parts) and none of them is a false alarm; every other detection is a false alarm, and in a
target-absent frame every detection is one.

``BoxCounts`` holds the counts (frames, targets, detected targets, false alarms, frames with a
false alarm, target-absent frames with one; a video frame has at most one target, a still frame of the
``boxes`` layout may have several, each matched by the same rule: ``pairs_inside``): ``update`` per frame or per batch of frames,
``merge`` across workers, ``all_reduce`` across DDP ranks, ``compute`` the rates, ``None`` where
a rate's denominator is 0 (undefined, not zero).
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import numpy as np

GROW_PX = 2.0  # the label box is grown by this many pixels on every side
TOLERANCE_PX = 1e-6  # borders are inclusive up to float rounding of 3-decimal coordinates
METRIC_KEYS = ("pd", "fa_per_frame", "frames_with_fa", "absent_frames_with_fa", "n_frames", "n_targets",
               "n_absent_frames", "n_detected", "n_false_alarms", "n_frames_with_fa", "n_absent_frames_with_fa")


def inside_grown_box(cx: np.ndarray, cy: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return bool (N,): centre-coordinate centroids inside their N x 4 edge-coordinate boxes grown by GROW_PX.

    A NaN box (target absent) contains nothing.
    """
    cx, cy, boxes = np.asarray(cx, np.float64), np.asarray(cy, np.float64), np.asarray(boxes, np.float64)
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    ex, ey = cx + 0.5, cy + 0.5  # centre -> edge coordinates
    return ((ex >= x - GROW_PX - TOLERANCE_PX) & (ex <= x + w + GROW_PX + TOLERANCE_PX)
            & (ey >= y - GROW_PX - TOLERANCE_PX) & (ey <= y + h + GROW_PX + TOLERANCE_PX))


def pairs_inside(frame_of: np.ndarray, cx: np.ndarray, cy: np.ndarray, target_frame: np.ndarray,
                 boxes: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (detection (P,), target (P,)) indices of the pairs of a frame's detection and a label box of the same
    frame whose grown box holds the detection's centroid (``inside_grown_box``).

    Detections: frame index (D,) and centroids; targets: frame index (T,) and T x 4 edge-coordinate boxes;
    several targets a frame. A detection inside no box of its frame is a false alarm; a target with a pair is
    detected.
    """
    frame_of, target_frame = np.asarray(frame_of, np.int64), np.asarray(target_frame, np.int64)
    order = np.argsort(target_frame, kind="stable")
    per_frame = np.bincount(target_frame, minlength=n_frames)
    first = np.concatenate([[0], np.cumsum(per_frame)[:-1]])
    reps = per_frame[frame_of]                              # candidate pairs: each detection x its frame's targets
    det = np.repeat(np.arange(len(frame_of)), reps)
    within = np.arange(len(det)) - np.repeat(np.cumsum(reps) - reps, reps)
    tgt = order[first[frame_of[det]] + within] if len(det) else np.zeros(0, np.int64)
    hit = inside_grown_box(np.asarray(cx)[det], np.asarray(cy)[det], np.asarray(boxes, np.float64)[tgt].reshape(-1, 4))
    return det[hit], tgt[hit]


def frame_outcomes(frame_of: np.ndarray, inside: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (detected (F,) bool, false alarms (F,) int64) of F frames from their detections' frame index (D,)
    and whether each lies inside its frame's grown box (D,)."""
    frame_of, inside = np.asarray(frame_of, np.int64), np.asarray(inside, bool)
    detected = np.bincount(frame_of[inside], minlength=n_frames) > 0
    return detected, np.bincount(frame_of[~inside], minlength=n_frames).astype(np.int64)


def _ratio(num: int, den: int) -> float | None:
    """Return num / den, or None when den is 0 (undefined, not zero)."""
    return float(num) / float(den) if den else None


@dataclass
class BoxCounts:
    """The target-level counts of a set of box-labelled frames (one target a frame at most, or several)."""

    n_frames: int = 0
    n_targets: int = 0
    n_detected: int = 0
    n_false_alarms: int = 0
    n_frames_with_fa: int = 0
    n_absent_frames_with_fa: int = 0
    n_target_frames: int = 0   # frames with at least one target

    def update(self, has_target, detected, n_fa) -> "BoxCounts":
        """Add frames: has_target and detected (bool, or the frame's number of targets and of detected targets),
        false alarms (int), each a scalar or an (F,) array; return self. A detection in a target-absent frame is a
        false alarm, so detected counts only up to the frame's targets."""
        targets = np.atleast_1d(np.asarray(has_target)).astype(np.int64)
        detected = np.minimum(np.atleast_1d(np.asarray(detected)).astype(np.int64), targets)
        n_fa = np.atleast_1d(np.asarray(n_fa, np.int64))
        with_fa = n_fa > 0
        self.n_frames += int(targets.size)
        self.n_targets += int(targets.sum())
        self.n_target_frames += int((targets > 0).sum())
        self.n_detected += int(detected.sum())
        self.n_false_alarms += int(n_fa.sum())
        self.n_frames_with_fa += int(with_fa.sum())
        self.n_absent_frames_with_fa += int((with_fa & (targets == 0)).sum())
        return self

    def merge(self, other: "BoxCounts") -> "BoxCounts":
        """Add another accumulator's counts (another worker's, or another split's); return self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def all_reduce(self, device=None) -> "BoxCounts":
        """Sum the counts over the ranks of torch.distributed when it is initialised (every rank gets the totals);
        return self. ``device``: where the process group's backend reduces (a CUDA device for NCCL)."""
        import torch  # optional heavy dependency: the scorers use this module without torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            total = torch.tensor(astuple(self), dtype=torch.int64, device=device)
            dist.all_reduce(total)
            for f, value in zip(fields(self), total.tolist()):
                setattr(self, f.name, int(value))
        return self

    @property
    def n_absent_frames(self) -> int:
        """Return the number of target-absent frames."""
        return self.n_frames - self.n_target_frames

    def compute(self) -> dict:
        """Return METRIC_KEYS: pd = detected / targets, fa_per_frame = false alarms / frames, frames_with_fa,
        absent_frames_with_fa (fractions; None where the denominator is 0) and the counts."""
        return {"pd": _ratio(self.n_detected, self.n_targets),
                "fa_per_frame": _ratio(self.n_false_alarms, self.n_frames),
                "frames_with_fa": _ratio(self.n_frames_with_fa, self.n_frames),
                "absent_frames_with_fa": _ratio(self.n_absent_frames_with_fa, self.n_absent_frames),
                "n_frames": self.n_frames, "n_targets": self.n_targets, "n_absent_frames": self.n_absent_frames,
                "n_detected": self.n_detected, "n_false_alarms": self.n_false_alarms,
                "n_frames_with_fa": self.n_frames_with_fa, "n_absent_frames_with_fa": self.n_absent_frames_with_fa}


def summarise(has_target, detected, n_fa) -> dict:
    """Return BoxCounts().update(has_target, detected, n_fa).compute(): the METRIC_KEYS of a set of frames."""
    return BoxCounts().update(has_target, detected, n_fa).compute()
