"""The files inference writes, each written once here and atomically: maps, overlays and target lists.

- ``mat/STEM.mat``: 'T' float32 probability map sigmoid(logits), 'D' float32 reconstruction, both H x W;
- ``img/STEM.png``: 8-bit round(255 T), what ``cal_from_mask.py`` reads when no .mat is there;
- ``overlay/STEM.png``: the frame with ground-truth contours green, detections red (yellow where they
  coincide), a white gap, then D;
- ``detections.csv`` / ``detections.json``: one row per detected target (``utils.predict.detect_targets``);
- ``manifest.json``: written last, what this run wrote (checkpoint and its sha256, source, split, options,
  frames or videos, every file), so that the scorers refuse a folder mixing two runs' files.

One folder holds one run: ``prepare_out`` refuses a folder that is not empty, and with
overwrite=True removes the outputs of an earlier run first (only files this module or the
scorers write; a folder holding anything else is refused, nothing removed).
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import scipy.io

from utils.files import atomic_write_bytes, file_sha256, write_json, write_png
from utils.metrics import THRESHOLD
from utils.predict import DETECTION_FIELDS

OVERLAY_GAP_PX = 4  # white gap between the overlay and D
GT_BGR, DET_BGR, BOTH_BGR = (0, 255, 0), (0, 0, 255), (0, 255, 255)  # green, red, yellow
COLUMN_UNITS = {"x, y": "centroid in pixels (x = column, y = row)",
                "bbox_x, bbox_y, bbox_w, bbox_h": "bounding box in pixels",
                "area_px": "pixels", "peak_prob, mean_prob": "probability over the component"}


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
    write_mat(out / "mat" / f"{name}.mat", prob, recon)
    write_png(out / "img" / f"{name}.png", to_uint8(prob))


def _rounded(key: str, value):
    """Return value rounded for the CSV: centroids to 1e-3 px, probabilities to 1e-6."""
    if key in ("x", "y"):
        return round(value, 3)
    if key in ("peak_prob", "mean_prob"):
        return round(value, 6)
    return value


def write_detections(out: Path, frames: Iterable[tuple[dict, dict]], meta: dict,
                     errors: list[dict] | None = None) -> None:
    """Write OUT/detections.csv (one row per target) and OUT/detections.json (every frame), atomically.

    ``frames`` yields (keys, entry): keys are the leading columns that identify the frame (e.g.
    {"frame": name} or {"video": stem, "frame": index}); entry is {"size_hw": [h, w], "targets":
    detect_targets(...)}. Every frame goes into the JSON; the CSV lists the targets only. ``errors``
    lists what was skipped, e.g. [{"frame": name, "error": text}].
    """
    frames = list(frames)
    keys = list(frames[0][0]) if frames else ["frame"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*keys, *DETECTION_FIELDS], lineterminator="\n")
    writer.writeheader()
    listed = []
    for ident, entry in frames:
        for row in entry["targets"]:
            writer.writerow({**ident, **{k: _rounded(k, v) for k, v in row.items()}})
        listed.append({**ident, **entry})
    atomic_write_bytes(out / "detections.csv", buffer.getvalue().encode("utf-8"))
    head = {**meta, "columns": COLUMN_UNITS,
            "errors": list(errors or [])}
    # One frame a line: readable, and json's fast C encoder (indent= falls back to pure Python).
    text = "{\n" + "".join(f"{json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    text += '"frames": [\n' + ",\n".join(json.dumps(f) for f in listed) + "\n]\n}\n"
    atomic_write_bytes(out / "detections.json", text.encode("utf-8"))


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
        self.tmp = self.path.with_name(self.path.stem + ".tmp" + self.path.suffix)
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

MANIFEST = "manifest.json"
MAP_FOLDERS = {"mat": (".mat",), "img": (".png",), "overlay": (".png",)}  # sub-folders of per-frame outputs
KNOWN_FILES = ("detections.csv", "detections.json", MANIFEST, "metrics.json", "roc.png", "box_metrics.json",
               "pd_fa_curve.png")
HASH_LIMIT_BYTES = 1 << 30  # checkpoints larger than this are identified by size and mtime, not sha256
N_NAMED = 5


class OutputFolderError(ValueError):
    """The output folder holds something that is not an empty folder or this project's outputs; names the fix."""


def _earlier_videos(out: Path) -> set[str]:
    """Return the overlay videos an earlier run's manifest lists (STEM.mp4), empty when there is none."""
    try:
        content = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return {str(f) for f in content.get("files", []) if str(f).lower().endswith(".mp4") and "/" not in str(f)}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return set()


def _is_known(name: str) -> bool:
    """Return True for a top-level file name this project writes (or its .tmp left by a stopped run)."""
    base = name[:-4] if name.endswith(".tmp") else name
    return base in KNOWN_FILES


def prepare_out(out: Path, overwrite: bool = False) -> list[Path]:
    """Make out ready for one run: create it when absent; return the earlier outputs removed (overwrite=True).

    OutputFolderError when out is not empty and overwrite is False, or holds files this project
    does not write (named; nothing is removed then); OSError when out is a file or cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(20, "not a folder", str(out))
    if not out.is_dir():
        out.mkdir(parents=True)
        return []
    entries = sorted(out.iterdir())
    if not entries:
        return []
    videos = _earlier_videos(out)
    known: list[Path] = []
    unknown: list[str] = []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink() and entry.name in MAP_FOLDERS:
            for item in sorted(entry.iterdir()):
                name = item.name[:-4] if item.name.endswith(".tmp") else item.name
                if item.is_file() and not item.is_symlink() and name.lower().endswith(MAP_FOLDERS[entry.name]):
                    known.append(item)
                else:
                    unknown.append(f"{entry.name}/{item.name}")
            known.append(entry)
        elif entry.is_file() and not entry.is_symlink() and (_is_known(entry.name) or entry.name in videos):
            known.append(entry)
        else:
            unknown.append(entry.name + ("/" if entry.is_dir() else ""))
    if unknown:
        raise OutputFolderError(
            f"--out {out} is not empty and holds {len(unknown)} file(s) inference.py did not write: "
            f"{', '.join(unknown[:N_NAMED])}{' ...' if len(unknown) > N_NAMED else ''}; pass another --out (nothing "
            "was changed; --overwrite removes only this project's outputs, so it cannot clear this folder)")
    if not overwrite:
        raise OutputFolderError(
            f"--out {out} already holds the outputs of an earlier run ({', '.join(e.name for e in entries[:N_NAMED])}"
            f"{' ...' if len(entries) > N_NAMED else ''}): pass --overwrite to replace it, or another --out")
    for path in known:  # files first, then their (now empty) folders
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    return known


def checkpoint_identity(path: Path) -> dict:
    """Return {"path", "size", "sha256"} of a checkpoint file ({"path", "size", "mtime"} above HASH_LIMIT_BYTES)."""
    path = Path(path)
    stat = path.stat()
    ident = {"path": str(path.resolve()), "size": stat.st_size}
    if path.is_file() and stat.st_size <= HASH_LIMIT_BYTES:
        ident["sha256"] = file_sha256(path)
    else:
        ident["mtime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime))
    return ident


def write_manifest(out: Path, checkpoint: Path, source: Path, split: str | None, options: dict, files: list[str],
                   frames: list[str] | None = None, videos: list[str] | None = None) -> Path:
    """Write OUT/manifest.json atomically (last, once the run's files are written); return its path.

    files: every file this run wrote, relative to out (posix); frames / videos: the names written.
    detections.json's sha256 is kept, so the box scorer can tell it from another run's.
    """
    out = Path(out)
    detections = out / "detections.json"
    content = {"tool": "inference.py", "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "checkpoint": checkpoint_identity(checkpoint), "source": str(source), "split": split,
               "options": options, "frames": frames, "videos": videos,
               "detections_sha256": file_sha256(detections) if detections.is_file() else None,
               "files": sorted(set(files))}
    return write_json(out / MANIFEST, content)
