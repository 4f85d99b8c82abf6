"""The ``video`` layout: box-labelled infrared videos (IR-Drone-Video), streamed frame by frame.

Layout: ``ROOT/videos/<STEM>.mp4`` (stem ``IR_<CLASS>_<NNN>``), ``ROOT/labels.csv`` with the
header ``video,frame,x,y,w,h`` (one row per labelled frame; ``frame`` 0-based in decoding
order; box in pixel-edge coordinates, pixel column i spans [i, i+1); x, y, w, h empty when the
target is absent), and ``ROOT/train.txt`` / ``ROOT/val.txt`` listing video stems. Splits are
"train", "val" and "trainval" (both); there is no test split.

- ``index_videos`` (``VideoItem``; the labels through ``utils.data.labels``), ``iter_video_frames``
  and ``count_frames`` read it; decoding streams one frame at a time through ``cv2.VideoCapture``.
- ``pseudo_mask`` turns a box into a training target (a pixel mask plus an ignore region);
  docs/video.md gives the rule and why.
- ``VideoFrameDataset`` yields every k-th labelled frame of each video of a split as
  ``IRSTDDataset`` does, plus "ignore" and "box".
- ``utils.data.video_summary`` backs ``python -m utils.data`` on such a root.
"""

from __future__ import annotations

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
from tqdm import tqdm

from utils.data.frames import THREADS, DataError
from utils.data.labels import Box, by_video, read_box_labels
from utils.data.layouts import VIDEO_EXTENSION, resolve_data_root

logger = logging.getLogger(__name__)

VIDEO_SPLITS = ("train", "val", "trainval")
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
    ``labels`` (``by_video(read_box_labels(...))``) saves re-reading labels.csv.
    """
    root = Path(root)
    videos = root / "videos"
    if not videos.is_dir():
        raise DataError(f"video folder {videos} is missing: the video layout keeps videos/<STEM>.mp4 under the root")
    stems = split_stems(root, split)
    if labels is None:
        labels = by_video(read_box_labels(root / "labels.csv"))
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


def open_video(path: Path, full_depth: bool = False) -> cv2.VideoCapture:
    """Return an opened capture of the video; DataError naming the file when it is missing or unreadable.

    full_depth: a 16-bit grey video (FFV1 gray16le) is read as it is stored, H x W uint16 (OpenCV's
    FFmpeg backend with CONVERT_RGB off); a grey video of another depth above 8 bits, which OpenCV
    reads only at 8 bits, is refused. Otherwise (pictures for people) frames are OpenCV's 8-bit BGR.
    """
    if not path.is_file():
        raise DataError(f"video {path} does not exist: restore it, or remove its stem from the split list")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(
            f"video {path} cannot be opened by OpenCV (not a video, truncated, or a codec it lacks): "
            "re-encode it as H.264 .mp4 or replace the file"
        )
    if full_depth:
        pixels = (int(capture.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)) & 0xFFFFFFFF).to_bytes(4, "little")
        deep_grey = pixels[:3] == GREY_FOURCC and pixels[3] > 8   # FFmpeg's raw fourcc: "Y1", 0, bits
        if deep_grey and not (pixels == GREY16_FOURCC and capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)):
            capture.release()
            raise DataError(f"video {path} stores {pixels[3]}-bit grey frames, which this OpenCV reads only at 8 bits: "
                            "re-encode it as 16-bit grey FFV1 (gray16le) or save its frames as 16-bit PNGs")
    return capture


GREY_FOURCC = b"Y1\x00"               # FFmpeg's raw pixel-format fourcc of grey, followed by its bits per pixel
GREY16_FOURCC = GREY_FOURCC + b"\x10"  # gray16le: what FFV1 stores for a 16-bit grey video


def _to_grey(frame: np.ndarray) -> np.ndarray:
    """Return an H x W uint8 frame: a grey frame stored in 3 equal channels gives its channel exactly."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1 or (np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0], frame[..., 2])):
        return np.ascontiguousarray(frame[..., 0])
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # a colour video: OpenCV's luma


def iter_video_frames(path: str | os.PathLike, every: int = 1, start: int = 0,
                      full_depth: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Return an iterator of (frame index, H x W uint8 grey frame) for frames start, start+every, ... in decoding order.

    full_depth: a 16-bit grey video gives H x W uint16 frames as stored (``open_video``).

    Frames are decoded one at a time (skipped ones are grabbed, not converted), so memory holds
    one frame. The file is opened at the call: DataError when it is missing or unreadable, and
    at the end of iteration when it held no decodable frame at all.
    """
    if every < 1 or start < 0:
        raise ValueError(f"every={every} must be >= 1 and start={start} >= 0 (frame indices, 0-based)")
    path = Path(path)
    capture = open_video(path, full_depth)

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
    (``utils.data.transforms`` do). ``sizes`` holds each frame's (H, W) for ``size_batches``.
    """

    box_labelled = True     # scored by box counts (utils.train.validate), as a pack's video splits are

    def __init__(self, root, split: str, every: int = 30, transform=None, *, start: int = 0, progress: bool = False):
        self.root = resolve_data_root(root)
        self.split, self.every, self.start, self.transform = split, every, start, transform
        self.videos = index_videos(self.root, split)
        self.warnings: list[str] = []

        def decode(item: VideoItem):
            return [(index, grey) for index, grey in iter_video_frames(item.path, every, start) if index in item.labels]

        self.frames: list[np.ndarray] = []
        self.entries: list[tuple[str, int, Box | None]] = []  # (stem, frame, box)
        with ThreadPoolExecutor(THREADS) as pool:
            results = pool.map(decode, self.videos)
            if progress:
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
        import torch  # optional heavy dependency, imported here as in IRSTDDataset: the scorers import utils.data without torch

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
