"""The run record: the one module that writes and reads an inference output folder.

An ``inference.py`` run writes one folder (``--out``), and everything that reads it (``cal_from_mask.py``,
``python -m utils.review``, ``python -m utils.strip``, ``make demo``) goes through here:

- ``prepare_out``: one folder holds one run; a folder that is not empty is refused, and with
  overwrite=True the outputs of an earlier run are removed first (only files this project writes, never one
  of the run's inputs). The temporary files of a stopped run (``NAME.tmp``, ``STEM.tmp.mp4``: ``temp_path``)
  are recognised as such and removed. inference.py holds the folder's lock (``utils.files.locked_folder``)
  from before this check to the end of the run.
- ``run_inputs``: the files and folders of a run that a command reading it must not write onto.
- ``map_path`` / ``frame_map_name``: where a frame's maps are, ``img/NAME.png`` and ``mat/NAME.mat``
  (a video frame is named ``VIDEO_FFFFFF``, its 0-based index in six digits).
- ``write_detections`` / ``read_detections``: ``detections.csv`` (one row per target) and
  ``detections.json`` (every processed frame, its size and targets, and the run's meta:
  ``detections_meta``).
- ``write_manifest`` / ``read_manifest`` / ``check_one_run``: ``manifest.json``, written last, lists the
  checkpoint and its sha256, the source, split, options and every file, so that the scorers refuse a
  folder mixing two runs' files.

No torch here: the scorers read a run without the network.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from utils.data.labels import frame_name
from utils.eval.metrics import CONNECTIVITY, THRESHOLD
from utils.files import LOCK_NAME, atomic_write_bytes, file_sha256, write_json

DETECTION_FIELDS = ("target", "x", "y", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area_px", "peak_prob", "mean_prob")
DETECTIONS_CSV, DETECTIONS_JSON, MANIFEST = "detections.csv", "detections.json", "manifest.json"
MASK_METRICS, ROC_PNG = "metrics.json", "roc.png"  # what cal_from_mask.py writes for masks
BOX_METRICS, PD_FA_PNG = "box_metrics.json", "pd_fa_curve.png"  # and for box labels
REPORT_FILES = (MASK_METRICS, ROC_PNG, BOX_METRICS, PD_FA_PNG)  # written by the scorers
KNOWN_FILES = (DETECTIONS_CSV, DETECTIONS_JSON, MANIFEST, *REPORT_FILES)  # top-level files a run may hold
MAP_FOLDERS = {"mat": (".mat",), "img": (".png",), "overlay": (".png",)}  # sub-folders of per-frame outputs
HASH_LIMIT_BYTES = 1 << 30  # checkpoints larger than this are identified by size and mtime, not sha256
N_NAMED = 5  # file names quoted in an error
COLUMN_UNITS = {"x, y": "centroid in pixels (x = column, y = row)",
                "bbox_x, bbox_y, bbox_w, bbox_h": "bounding box in pixels",
                "area_px": "pixels", "peak_prob, mean_prob": "probability over the component"}


class RecordError(ValueError):
    """An output folder that is not one run's, or a record file that cannot be read; the message names the fix."""


class OutputFolderError(RecordError):
    """The output folder holds something that is not an empty folder or this project's outputs; names the fix."""


def frame_map_name(video: str, frame: int) -> str:
    """Return the name of a video frame's maps, 'VIDEO_FFFFFF' (0-based frame index, six digits)."""
    return f"{video}_{frame:06d}"


def map_file(name: str, kind: str = "img") -> str:
    """Return the posix path, relative to the output folder, of a frame's map: img/NAME.png (8-bit round(255 p)),
    mat/NAME.mat ('T' probabilities, 'D' reconstruction) or overlay/NAME.png (the picture)."""
    return f"{kind}/{name}{MAP_FOLDERS[kind][0]}"


def map_path(out: str | Path, name: str, kind: str = "img") -> Path:
    """Return OUT/map_file(name, kind)."""
    return Path(out) / map_file(name, kind)


def frame_files(name: str, overlay: bool = False) -> list[str]:
    """Return the files a frame of a frames run writes, relative to the output folder: its .mat, .png (and overlay)."""
    return [map_file(name, "mat"), map_file(name, "img")] + ([map_file(name, "overlay")] if overlay else [])


def video_map_path(out: str | Path, video: str, frame: int) -> Path:
    """Return OUT/img/VIDEO_FFFFFF.png, where the video inference saves a frame's 8-bit probability map."""
    return map_path(out, frame_map_name(video, frame))


def detections_meta(checkpoint: str | Path, source: str | Path, *, backend: str, device: str, dtype: str,
                    verifier: dict | None, **extra) -> dict:
    """Return the meta of detections.json: checkpoint, source, the source-specific ``extra`` (split and tiling, or
    videos and every), backend, device, dtype, the detection rule (threshold, connectivity) and the verifier."""
    return {"checkpoint": str(checkpoint), "source": str(source), **extra, "backend": backend, "device": str(device),
            "dtype": dtype, "threshold": THRESHOLD, "connectivity": CONNECTIVITY, "verifier": verifier}


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
    atomic_write_bytes(out / DETECTIONS_CSV, buffer.getvalue().encode("utf-8"))
    head = {**meta, "columns": COLUMN_UNITS,
            "errors": list(errors or [])}
    # One frame a line: readable, and json's fast C encoder (indent= falls back to pure Python).
    text = "{\n" + "".join(f"{json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    text += '"frames": [\n' + ",\n".join(json.dumps(f) for f in listed) + "\n]\n}\n"
    atomic_write_bytes(out / DETECTIONS_JSON, text.encode("utf-8"))


def _earlier_videos(out: Path) -> set[str]:
    """Return the overlay videos an earlier run's manifest lists (STEM.mp4), empty when there is none."""
    try:
        content = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return {str(f) for f in content.get("files", []) if str(f).lower().endswith(".mp4") and "/" not in str(f)}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return set()


def temp_path(path: Path) -> Path:
    """Return where a file is written before it is renamed to path: NAME.tmp (utils.files.atomic_write), or
    STEM.tmp.mp4 for a video (OpenCV picks the container by the suffix; writers.VideoOverlay)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return path.with_name(path.stem + ".tmp" + path.suffix)
    return path.with_name(path.name + ".tmp")


def _is_temp(name: str) -> bool:
    """Return True for the name of a temporary file this project writes (temp_path), which a stopped run leaves."""
    return name.endswith(".tmp") or name.lower().endswith(".tmp.mp4")


def _is_known(name: str) -> bool:
    """Return True for a top-level file name this project writes (or its .tmp left by a stopped run)."""
    base = name[:-4] if name.endswith(".tmp") else name
    return base in KNOWN_FILES or _is_temp(name)


def run_inputs(pred_dir: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Return (files, folders) of a run folder that a command reading it reads: its record files, and the folders of
    maps and overlays (utils.files.check_output's ``inputs`` and ``folders``)."""
    pred_dir = Path(pred_dir)
    files = [("the run's record", pred_dir / name) for name in (DETECTIONS_CSV, DETECTIONS_JSON, MANIFEST)]
    return files, [("the run's maps", pred_dir / sub) for sub in MAP_FOLDERS]


def _inputs_in(paths: list[Path], inputs: Iterable[Path]) -> list[str]:
    """Return the paths (as given) that are one of inputs, lie directly in an input folder, or hold an input."""
    resolved = {Path(i).resolve() for i in inputs}
    hits = []
    for path in paths:
        real = path.resolve()
        if real in resolved or real.parent in resolved or (path.is_dir() and any(i.is_relative_to(real)
                                                                                 for i in resolved)):
            hits.append(str(path))
    return hits


def prepare_out(out: Path, overwrite: bool = False, inputs: Iterable[Path] = ()) -> list[Path]:
    """Make out ready for one run: create it when absent; return the earlier outputs removed (overwrite=True).

    OutputFolderError when out is not empty and overwrite is False, or holds files this project
    does not write (named; nothing is removed then), or when an earlier output to remove is one of
    ``inputs`` (files and folders the run reads: a video, the frames' folder) or holds one; OSError when
    out is a file or cannot be written. A folder holding nothing but a stopped run's temporary files (and
    the lock) is cleaned without overwrite.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(20, "not a folder", str(out))
    if not out.is_dir():
        out.mkdir(parents=True)
        return []
    entries = sorted(e for e in out.iterdir() if e.name != LOCK_NAME)  # the lock is this run's (locked_folder)
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
    leftovers = all(_is_temp(p.name) or (p.is_dir() and p in entries) for p in known)
    if not overwrite and not leftovers:
        raise OutputFolderError(
            f"--out {out} already holds the outputs of an earlier run ({', '.join(e.name for e in entries[:N_NAMED])}"
            f"{' ...' if len(entries) > N_NAMED else ''}): pass --overwrite to replace it, or another --out")
    hits = _inputs_in(known, inputs)
    if hits:
        raise OutputFolderError(
            f"--out {out} holds this run's input(s) among an earlier run's outputs ({', '.join(hits[:N_NAMED])}): "
            "--overwrite would remove them before they are read; copy them elsewhere or pass another --out (nothing "
            "was changed)")
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
    detections = out / DETECTIONS_JSON
    content = {"tool": "inference.py", "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "checkpoint": checkpoint_identity(checkpoint), "source": str(source), "split": split,
               "options": options, "frames": frames, "videos": videos,
               "detections_sha256": file_sha256(detections) if detections.is_file() else None,
               "files": sorted(set(files))}
    return write_json(out / MANIFEST, content)


def read_manifest(pred_dir: Path) -> dict | None:
    """Return PRED/manifest.json (None when there is none); RecordError when it is unreadable."""
    path = Path(pred_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RecordError(f"{path} cannot be read as JSON ({error}): rerun inference.py into that folder with "
                           "--overwrite") from None
    if not isinstance(content, dict) or not isinstance(content.get("files"), list):
        raise RecordError(f"{path} has no \"files\" list: it was not written by inference.py; rerun inference.py "
                           "into that folder with --overwrite")
    return content


def _prediction_files(pred_dir: Path) -> list[str]:
    """Return every map file a scorer could read, relative to pred_dir (posix): mat/*.mat, img/*.png, *.mat, *.png."""
    names = []
    for sub, suffix in (("mat", ".mat"), ("", ".mat"), ("img", ".png"), ("", ".png")):
        folder = pred_dir / sub if sub else pred_dir
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if (entry.name.lower().endswith(suffix) and not entry.name.startswith(".") and entry.is_file()
                        and not (not sub and entry.name in REPORT_FILES)):
                    names.append(f"{sub}/{entry.name}" if sub else entry.name)
    return sorted(names)


def check_one_run(pred_dir: Path, kind: str = "maps") -> list[str]:
    """Check that pred_dir holds the outputs of one inference.py run, as its manifest.json lists them.

    Returns warnings (no manifest: predictions from another tool, not checked); RecordError when
    map files are there that the manifest does not list (another run's), or listed ones are missing.
    kind "maps" checks the probability maps; "boxes" also checks detections.json against its sha256.
    """
    pred_dir = Path(pred_dir)
    manifest = read_manifest(pred_dir)
    if manifest is None:
        return [f"{pred_dir} has no {MANIFEST}: its predictions cannot be checked as one run's (files of several "
                "runs would be mixed silently); inference.py writes one"]
    listed = {str(f) for f in manifest["files"]}
    present = _prediction_files(pred_dir)
    extra = [f for f in present if f not in listed]
    wanted = [f for f in sorted(listed) if f.endswith((".mat", ".png")) and f.split("/")[0] in ("mat", "img")]
    missing = [f for f in wanted if not (pred_dir / f).is_file()]
    fix = ("rerun inference.py into an empty --out (or with --overwrite), or score the folder of one run")
    if extra:
        raise RecordError(f"{pred_dir} mixes runs: {len(extra)} prediction file(s) are not listed in its {MANIFEST} "
                           f"(another run's or copied in): {', '.join(extra[:N_NAMED])}"
                           f"{' ...' if len(extra) > N_NAMED else ''}; {fix}")
    if missing:
        raise RecordError(f"{pred_dir} is incomplete: {len(missing)} file(s) listed in its {MANIFEST} are missing: "
                           f"{', '.join(missing[:N_NAMED])}{' ...' if len(missing) > N_NAMED else ''}; {fix}")
    if kind == "boxes" and manifest.get("detections_sha256"):
        path = pred_dir / DETECTIONS_JSON
        if path.is_file() and file_sha256(path) != manifest["detections_sha256"]:
            raise RecordError(f"{path} is not the one its {MANIFEST} lists (another run's, or edited): {fix}")
    return []


@dataclass
class Detections:
    """The processed frames of a prediction folder and their detections, as flat arrays."""

    frames: list[tuple[str, int]]  # every processed frame, in file order (a frames run's: its names, stills=True)
    sizes: list[tuple[int, int]]  # its (h, w)
    frame_of: np.ndarray  # (D,) int64 index into frames of each detection
    x: np.ndarray  # (D,) centroid column, pixel-centre coordinates
    y: np.ndarray  # (D,) centroid row, pixel-centre coordinates
    peak: np.ndarray  # (D,) peak probability
    pred_dir: Path
    min_threshold: float = THRESHOLD  # the inference's threshold: peak_prob is meaningful from here up
    errors: list[str] = field(default_factory=list)  # what the inference reported as failed (videos or frames)
    maps_saved: bool | None = None  # the run's --save-maps (None: not recorded); False: maps in img/ are not this run's
    confirm: str | None = None  # the run's --confirm K/N: its maps are from before confirmation


def read_detections_json(pred_dir: str | Path, writer: str = "inference.py") -> dict:
    """Return the content of PRED/detections.json: its meta and "frames" (every processed frame, {"video" or
    "frame", "size_hw", "targets"}); RecordError naming the file and the fix (rerun ``writer``) when it is absent
    or not one."""
    pred_dir = Path(pred_dir)
    path = pred_dir / DETECTIONS_JSON
    if not path.is_file():
        if (pred_dir / DETECTIONS_CSV).is_file():
            raise RecordError(f"{path} is missing, only detections.csv is there: the frame list in detections.json "
                              f"is needed (frames without detections have no CSV row); rerun {writer}")
        raise RecordError(f"no detections.json in {pred_dir}: pass the --out folder of {writer}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RecordError(f"{path} cannot be read as JSON ({error}): rerun {writer}") from None
    if not isinstance(content, dict) or not isinstance(content.get("frames"), list):
        raise RecordError(f"{path} has no \"frames\" list: write it with {writer}")
    return content


def video_targets(pred_dir: str | Path, video: str) -> dict[int, list[dict]]:
    """Return {frame: [target dicts as detect_targets gives them]} of one video of a video run's detections.json."""
    try:
        return {int(e["frame"]): list(e["targets"]) for e in read_detections_json(pred_dir, "inference.py --video")["frames"]
                if str(e["video"]) == video}
    except (KeyError, TypeError, ValueError) as error:
        raise RecordError(f"{Path(pred_dir) / DETECTIONS_JSON} is not inference.py --video output ({error}): pass "
                          "its --out folder") from None


def read_detections(pred_dir: str | Path, stills: bool = False) -> Detections:
    """Return the Detections of PRED/detections.json (every processed frame, with or without targets).

    A video run's frames are keyed (video, frame index); with ``stills=True``, a frames run's (a split or a
    folder of frames: entries {"frame": name}) are keyed by the frame's name, the image's stem.
    """
    pred_dir = Path(pred_dir)
    path = pred_dir / DETECTIONS_JSON
    writer = "inference.py --data-root/--images" if stills else "inference.py --video"
    content = read_detections_json(pred_dir, writer)
    frames, sizes, seen = [], [], set()
    frame_of, xs, ys, peaks = [], [], [], []
    for i, entry in enumerate(content["frames"]):
        try:
            if stills and "video" in entry:
                raise RecordError(f"{path} holds video frames: score it against video labels "
                                  "(video,frame,x,y,w,h), or still-frame labels against a frames run")
            key = str(entry["frame"]) if stills else (str(entry["video"]), int(entry["frame"]))
            h, w = (int(v) for v in entry.get("size_hw", (0, 0)))
            targets = entry["targets"]
            rows = [(float(t["x"]), float(t["y"]), float(t["peak_prob"])) for t in targets]
        except (KeyError, TypeError, ValueError) as error:
            raise RecordError(f"{path}: frames[{i}] lacks {'' if stills else 'video, '}frame, targets or a target's x, "
                              f"y, peak_prob ({type(error).__name__}: {error}): rerun {writer}") from None
        if key in seen:
            raise RecordError(f"{path}: frame {key if stills else frame_name(*key)} is listed twice (frames[{i}]): "
                              "rerun the inference into an empty folder")
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
    threshold = content.get("threshold", THRESHOLD)
    threshold = float(threshold) if isinstance(threshold, (int, float)) else THRESHOLD
    maps_saved = content.get("save_maps") if isinstance(content.get("save_maps"), bool) else None
    confirm = content.get("confirm") if isinstance(content.get("confirm"), str) else None
    return Detections(frames, sizes, np.asarray(frame_of, np.int64), np.asarray(xs, np.float64),
                      np.asarray(ys, np.float64), np.asarray(peaks, np.float64), pred_dir, threshold, errors,
                      maps_saved, confirm)
