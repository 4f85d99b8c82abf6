"""The files inference writes for each frame, each written once here and atomically: maps and pictures.

- ``mat/STEM.mat``: 'T' float32 probability map sigmoid(logits), 'D' float32 reconstruction, both H x W;
- ``img/STEM.png``: 8-bit round(255 T), what ``cal_from_mask.py`` reads when no .mat is there;
- ``overlay/STEM.png``: the frame with ground-truth contours green, detections red (yellow where they
  coincide), a white gap, then D; a video's overlay is ``STEM.mp4`` (``VideoOverlay``).

Where each file goes, the target lists and the manifest: ``utils.infer.record``.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from utils.eval.metrics import THRESHOLD
from utils.files import atomic_write_bytes, write_png
from utils.infer.record import map_path, temp_path

OVERLAY_GAP_PX = 4  # white gap between the overlay and D
GT_BGR, DET_BGR, BOTH_BGR = (0, 255, 0), (0, 0, 255), (0, 255, 255)  # green, red, yellow


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Return round(255 * clip(values, 0, 1)) as uint8 (a [0, 1] map as an 8-bit image)."""
    return np.rint(np.clip(values, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def write_mat(path: Path, prob: np.ndarray, recon: np.ndarray) -> None:
    """Write 'T' (float32 probabilities) and 'D' (float32 reconstruction) to a MATLAB .mat file, atomically."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"T": prob.astype(np.float32, copy=False), "D": recon.astype(np.float32, copy=False)})
    atomic_write_bytes(path, buffer.getvalue())


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


def write_frame_maps(out: Path, name: str, prob: np.ndarray, recon: np.ndarray) -> None:
    """Write OUT/mat/NAME.mat and OUT/img/NAME.png for one frame."""
    write_mat(map_path(out, name, "mat"), prob, recon)
    write_png(map_path(out, name, "img"), to_uint8(prob))


BOX_BGR = (0, 0, 255)  # detections in red
LABEL_BGR = (0, 255, 0)  # a labelled box (when given) in green


def annotate_frame(frame: np.ndarray, detections: list[dict], box: tuple[float, float, float, float] | None = None,
                   scale: int = 2) -> np.ndarray:
    """Return an 8-bit BGR picture of a [0, 1] or uint8 grey frame, enlarged `scale` x, detections boxed with their
    peak probability; an optional label box (x, y, w, h in pixel-edge coordinates) in green."""
    grey = frame if frame.dtype == np.uint8 else to_uint8(frame)
    picture = cv2.cvtColor(cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST),
                           cv2.COLOR_GRAY2BGR)
    if box is not None:
        x, y, w, h = (v * scale for v in box)
        cv2.rectangle(picture, (int(round(x)), int(round(y))), (int(round(x + w)) - 1, int(round(y + h)) - 1),
                      LABEL_BGR, 1)
    for d in detections:
        x0, y0 = d["bbox_x"] * scale - 2, d["bbox_y"] * scale - 2
        x1, y1 = (d["bbox_x"] + d["bbox_w"]) * scale + 1, (d["bbox_y"] + d["bbox_h"]) * scale + 1
        cv2.rectangle(picture, (x0, y0), (x1, y1), BOX_BGR, 1)
        cv2.putText(picture, f"{d['peak_prob']:.2f}", (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, BOX_BGR,
                    1, cv2.LINE_AA)
    return picture


class VideoOverlay:
    """Writes annotated frames to OUT/NAME.mp4: into NAME.tmp.mp4 while running, renamed on close (never half-written).

    Use as a context manager; on an exception the partial file is removed.
    """

    def __init__(self, path: Path, fps: float, scale: int = 2):
        self.path, self.fps, self.scale = Path(path), fps if fps > 0 else 30.0, scale
        self.tmp = temp_path(self.path)
        self.writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray, detections: list[dict]) -> None:
        """Append one frame with its detections boxed."""
        picture = annotate_frame(frame, detections, scale=self.scale)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = picture.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise OSError(f"cannot write the overlay video {self.tmp}: OpenCV has no mp4v encoder here")
        self.writer.write(picture)

    def __enter__(self) -> "VideoOverlay":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self.writer is not None:
            self.writer.release()
            if kind is None:
                self.tmp.replace(self.path)
            else:
                self.tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- one run per folder


