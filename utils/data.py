"""Infrared small-target data: dataset layouts, frame and mask reading, one dataset class.

Three layouts are read, detected automatically or named:

- ``folder`` (the LRRNet release): ``ROOT/trainval/{images,masks}/`` and ``ROOT/test/{images,masks}/``
  (``train/`` + ``val/`` folders are also accepted); a mask has its image's name.
- ``sirst`` (the SIRST v1 devkit): ``ROOT/images/Misc_N.png``, ``ROOT/masks/Misc_N_pixels0.png``,
  ``ROOT/idx_427/{train,val,test,trainval}.txt`` (``index="idx_320"`` picks the older split).
- ``basicirstd`` (BasicIRSTD): ``ROOT/images/``, ``ROOT/masks/``, ``ROOT/img_idx/{train,test}_NAME.txt``.

Splits are "train", "val", "test" and "trainval" (= train + val). Where a layout has no val
split, val is a fixed subset of the training frames chosen by ``val_fraction`` and ``val_seed``
(never from test): a frame is in val when its salted SHA-256 rank is among the lowest
``round(val_fraction * n)``, so the subset depends only on the names, the seed and the
fraction, not on numpy's RNG or the file order. ``val_subset`` returns it so a run can save it.

Frames: PNG, TIFF, BMP, JPEG; 8- or 16-bit; grey or 3-channel. Intensity in [0, 1], float32:
8-bit / 255 exactly (as the release); 16-bit by ``sixteen_bit="range"`` (/ 65535) or
``"percentile"`` (per-frame 0.5-99.5 percentile stretch, for raw 14-bit sensor data).
Colour frames are converted to grey with the ITU-R BT.601 luma weights (``cv2.cvtColor``,
the conversion of ``cv2.IMREAD_GRAYSCALE`` and PIL's ``convert("L")``); for a frame stored
as 3-channel grey this returns the channel exactly. Masks (0/1 or 0/255, grey or colour)
become uint8 {0, 1}; an empty mask is valid.

All problems are found before any work starts and raised as ``DataError`` naming the file
and the fix; files that are not images (``.xml`` boxes, ``.txt``, ``Thumbs.db``, ``._*``
resource forks) are skipped by extension.

Command line: ``python -m utils.data --data-root DIR [--layout L] [--json]`` prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.files import atomic_write_text

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = REPO_ROOT / "datasets"

# The dataset names the LRRNet release uses; each maps to ./datasets/NAME.
RELEASE_NAMES = {
    "NUDT-SIRST": "NUDT-SIRST",
    "IRSTD-1k": "IRSTD-1k",
    "sirst_aug": "sirst_aug",
    "SIRSTv1": "SIRSTv1",
}

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")  # preference order on a name clash
LAYOUTS = ("folder", "sirst", "basicirstd")
SPLITS = ("train", "val", "test", "trainval")
SIXTEEN_BIT_MODES = ("range", "percentile")
PERCENTILES = (0.5, 99.5)  # the "percentile" stretch for raw 14/16-bit sensor frames
ASPECT_TOLERANCE = 0.02  # relative; SIRST v1 Misc_111: 592x400 mask vs 325x220 frame differ by 0.2 %
SIRST_MASK_SUFFIX = "_pixels0"
_SIGNATURES = {  # leading bytes of each image format cv2 decodes here
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
_THREADS = max(1, min(8, os.cpu_count() or 1))


class DataError(ValueError):
    """A problem with the data on disk; the message names the file or folder and the fix."""


@dataclass(frozen=True)
class Sample:
    """One frame: its name (the image's stem), image path and mask path (None for bare frames)."""

    name: str
    image: Path
    mask: Path | None


# ----------------------------------------------------------------------------- roots and folders


def resolve_data_root(name_or_path: str | os.PathLike) -> Path:
    """Return the dataset folder: a release name maps to ./datasets/NAME, anything else is a path."""
    text = str(name_or_path)
    release = {key.lower(): value for key, value in RELEASE_NAMES.items()}.get(text.lower())
    if release is not None:
        root = DATASETS_DIR / release
        if root.is_dir():
            return root
        if Path(text).is_dir():
            return Path(text)
        raise DataError(
            f"dataset {text!r} is not at {root}: download it (datasets/README.md says where), "
            f"link it with `ln -s /path/to/{release} {root}`, or pass --data-root /path/to/{release}"
        )
    root = Path(text).expanduser()
    if not root.exists():
        raise DataError(
            f"data root {root} does not exist: pass the folder that holds the dataset "
            f"(or one of the release names {sorted(RELEASE_NAMES)}, read from {DATASETS_DIR})"
        )
    if not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: pass the folder that holds the dataset")
    return root


def _is_image_file(path: Path) -> bool:
    """Return True for a visible file whose extension is an image format (skips .xml, .txt, Thumbs.db, ._*)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} {path} is missing: {fix}")
    return path


def _images_by_stem(folder: Path, warnings: list[str]) -> dict[str, Path]:
    """Return {stem: path} for the image files in ``folder``; on a clash keeps the preferred extension."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not _is_image_file(path):
            continue
        stem = path.stem
        if stem in found:
            rank = IMAGE_EXTENSIONS.index
            keep, drop = sorted([found[stem], path], key=lambda p: rank(p.suffix.lower()))
            warnings.append(f"{folder} holds both {keep.name} and {drop.name}: using {keep.name}, remove the other")
            found[stem] = keep
        else:
            found[stem] = path
    return found


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Return the image files of a bare frame folder, sorted by name; other files are skipped by extension."""
    folder = Path(folder)
    _require_dir(folder, "image folder", "pass a folder of .png/.tif/.bmp/.jpg frames")
    paths = sorted(p for p in folder.iterdir() if _is_image_file(p))
    if not paths:
        raise DataError(
            f"image folder {folder} holds no frames with extensions {IMAGE_EXTENSIONS}: pass a folder of frames"
        )
    return paths


# ----------------------------------------------------------------------------- frames and masks


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file {path} does not exist: restore it or remove it from the split") from None
    except OSError as error:
        raise DataError(
            f"file {path} cannot be read ({error.strerror}): check its permissions and that the disk is mounted"
        ) from None
    if not data:
        raise DataError(f"file {path} is empty (0 bytes): copy it again from the dataset source, or remove it")
    return data


def _check_signature(path: Path, head: bytes, tail: bytes) -> None:
    """Raise DataError when the bytes are not a known image format or a PNG/JPEG is truncated."""
    kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)
    if kind is None:
        raise DataError(
            f"file {path} is not an image (its first bytes {head[:8]!r} match no PNG/JPEG/BMP/TIFF header): "
            "replace it with the original frame, or remove it from the folder"
        )
    truncated = (kind == "png" and b"IEND" not in tail) or (kind == "jpeg" and b"\xff\xd9" not in tail)
    if truncated:
        raise DataError(
            f"file {path} is truncated (no {kind.upper()} end marker): copy it again from the dataset source"
        )


def _decode(path: Path) -> np.ndarray:
    """Return the image exactly as stored (H x W or H x W x C, uint8/uint16/float32); DataError if it cannot be."""
    # The bytes are read once here (for the size and signature checks) and handed to cv2.imdecode
    # with IMREAD_UNCHANGED, which decodes like cv2.imread(path, cv2.IMREAD_UNCHANGED) but also
    # works with non-ASCII paths.
    data = _read_bytes(path)
    _check_signature(path, data[:16], data[-1024:])
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DataError(
            f"file {path} cannot be decoded (corrupt image): copy it again from the dataset source, or remove it"
        )
    return array


def _quick_check(path: Path) -> None:
    """Raise DataError for a missing, unreadable, empty, non-image or truncated file, reading only its ends."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"file {path} is empty (0 bytes): copy it again from the dataset source, or remove it")
        with path.open("rb") as handle:
            head = handle.read(16)
            handle.seek(max(0, size - 1024))
            tail = handle.read()
    except FileNotFoundError:
        raise DataError(f"file {path} does not exist: restore it or remove it from the split") from None
    except OSError as error:
        raise DataError(f"file {path} cannot be read ({error.strerror}): check its permissions") from None
    _check_signature(path, head, tail)


def _frame_grey(array: np.ndarray, path: Path) -> np.ndarray:
    """Return an H x W grey frame: 1 channel kept, 3 (BGR) or 4 (BGRA) channels by BT.601 luma."""
    if array.ndim == 2:
        return array
    channels = array.shape[2]
    if channels == 1:
        return array[..., 0]
    if channels in (3, 4) and array.dtype in (np.uint8, np.uint16, np.float32):
        return cv2.cvtColor(array, cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY)
    raise DataError(
        f"frame {path} has {channels} channels of {array.dtype}: save it as a grey or 3-channel 8/16-bit image"
    )


def _to_unit(grey: np.ndarray, path: Path, sixteen_bit: str) -> np.ndarray:
    """Return the grey frame as float32 in [0, 1]: 8-bit / 255, 16-bit by ``sixteen_bit``, float kept if in [0, 1]."""
    if grey.dtype == np.uint8:
        return grey.astype(np.float32) / np.float32(255.0)
    if grey.dtype == np.uint16:
        if sixteen_bit == "range":
            return grey.astype(np.float32) / np.float32(65535.0)
        low, high = np.percentile(grey, PERCENTILES)
        scale = max(float(high) - float(low), 1.0)  # a flat frame maps to 0, never divides by zero
        return np.clip((grey.astype(np.float32) - np.float32(low)) / np.float32(scale), 0.0, 1.0)
    if grey.dtype in (np.float32, np.float64):
        if np.isfinite(grey).all() and grey.min() >= 0.0 and grey.max() <= 1.0:
            return grey.astype(np.float32)
        raise DataError(
            f"frame {path} holds floating-point values in [{np.nanmin(grey):g}, {np.nanmax(grey):g}]: "
            "only float frames already in [0, 1] are read; save it as 8- or 16-bit"
        )
    raise DataError(f"frame {path} has pixel type {grey.dtype}: save it as an 8- or 16-bit image")


def _check_sixteen_bit(sixteen_bit: str) -> None:
    if sixteen_bit not in SIXTEEN_BIT_MODES:
        raise ValueError(f"sixteen_bit={sixteen_bit!r} is unknown; choose one of {SIXTEEN_BIT_MODES}")


def read_frame(path: str | os.PathLike, sixteen_bit: str = "range") -> np.ndarray:
    """Return the frame as float32 H x W in [0, 1] (8-bit / 255 exactly; 16-bit / 65535 or percentile-stretched)."""
    _check_sixteen_bit(sixteen_bit)
    path = Path(path)
    return _to_unit(_frame_grey(_decode(path), path), path, sixteen_bit)


def _binarise(array: np.ndarray) -> np.ndarray:
    """Return uint8 {0, 1}: a pixel is target above half the mask's own maximum (so 0/1 and 0/255 both work)."""
    if array.ndim == 3:
        array = array.max(axis=2)  # target where any channel is set (grey masks stored as colour, coloured labels)
    top = array.max()
    if top <= 0:
        return np.zeros(array.shape, np.uint8)  # an empty mask: a frame with no target
    return (array > top / 2).astype(np.uint8)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Return the mask as uint8 H x W in {0, 1} (0/1 or 0/255 files, grey or colour; empty masks allowed)."""
    return _binarise(_decode(Path(path)))


def _same_aspect(mask_hw: tuple[int, int], frame_hw: tuple[int, int]) -> bool:
    (mh, mw), (fh, fw) = mask_hw, frame_hw
    return abs(mh * fw - mw * fh) <= ASPECT_TOLERANCE * max(mh * fw, mw * fh)


def fit_mask(mask: np.ndarray, frame_hw: tuple[int, int], sample: Sample) -> tuple[np.ndarray, list[str]]:
    """Return the mask at the frame's size: same aspect -> nearest-neighbour resize + warning, else DataError."""
    if mask.shape == frame_hw:
        return mask, []
    (mh, mw), (fh, fw) = mask.shape, frame_hw
    if not _same_aspect(mask.shape, frame_hw):
        raise DataError(
            f"mask {sample.mask} is {mw}x{mh} but its image {sample.image} is {fw}x{fh} (different aspect ratio): "
            "replace the mask with one drawn on this frame, or remove the pair"
        )
    resized = cv2.resize(mask, (fw, fh), interpolation=cv2.INTER_NEAREST_EXACT)  # pixel centres, as PIL's NEAREST
    note = (
        f"mask {sample.mask} is {mw}x{mh} but its image {sample.image} is {fw}x{fh} (same aspect ratio): "
        f"resized to {fw}x{fh} with nearest neighbour ({int(mask.sum())} -> {int(resized.sum())} target pixels)"
    )
    return resized, [note]


def _load_native(sample: Sample) -> tuple[np.ndarray, np.ndarray | None, list[str], str]:
    """Return (grey frame as stored: uint8/uint16/float, mask {0,1} at the frame's size or None, warnings, kind)."""
    raw = _decode(sample.image)
    grey = _frame_grey(raw, sample.image)
    kind = (
        f"{grey.dtype.itemsize * 8}-bit {'grey' if raw.ndim == 2 or raw.shape[2] == 1 else f'{raw.shape[2]}-channel'}"
    )
    if sample.mask is None:
        return grey, None, [], kind
    mask, warnings = fit_mask(read_mask(sample.mask), grey.shape, sample)
    return grey, mask, warnings, kind


def load_pair(sample: Sample, sixteen_bit: str = "range") -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Return (frame float32 H x W in [0, 1], mask uint8 H x W in {0, 1} or None if the sample has none, warnings)."""
    _check_sixteen_bit(sixteen_bit)
    grey, mask, warnings, _ = _load_native(sample)
    return _to_unit(grey, sample.image, sixteen_bit), mask, warnings


# ----------------------------------------------------------------------------- layouts and splits


def detect_layout(root: str | os.PathLike) -> str:
    """Return the layout of a dataset folder ("folder", "sirst" or "basicirstd"); DataError when none fits."""
    root = Path(root)
    _require_dir(root, "data root", "pass the folder that holds the dataset")
    has_pool = (root / "images").is_dir() and (root / "masks").is_dir()
    found = []
    if any((root / name / "images").is_dir() for name in ("trainval", "train", "val", "test")):
        found.append("folder")
    if has_pool and any(p.is_dir() and p.name.startswith("idx_") for p in root.iterdir()):
        found.append("sirst")
    if has_pool and (root / "img_idx").is_dir():
        found.append("basicirstd")
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(f"data root {root} fits several layouts {found}: name one with --layout")
    children = sorted(p.name for p in root.iterdir() if p.is_dir())
    hint = ""
    nested = [name for name in children if _looks_like_dataset(root / name)]
    if nested:
        hint = f"; did you mean {root / nested[0]}?"
    raise DataError(
        f"data root {root} matches no layout (it holds {children or 'no folders'}): expected trainval/ and test/ "
        "each with images/ and masks/ (folder), or images/ + masks/ + idx_427/ (sirst), or images/ + masks/ + "
        f"img_idx/ (basicirstd); see datasets/README.md{hint}"
    )


def _looks_like_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "images").is_dir() or (path / "trainval").is_dir() or (path / "test").is_dir())


def _read_list(path: Path) -> list[str]:
    """Return the names in a split list: one per line, blank lines and a missing last newline tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataError(
            f"split list {path} cannot be read ({error.strerror}): check it exists and is readable"
        ) from None
    names = []
    for line in text.splitlines():
        name = line.strip()
        if not name:
            continue
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            name = Path(name).stem  # some lists carry the extension
        names.append(Path(name).name)
    return names


def _pair(
    names: Sequence[str],
    images: dict[str, Path],
    masks: dict[str, Path],
    image_dir: Path,
    mask_dir: Path,
    listed_in: Path | None,
    suffixes: tuple[str, ...],
) -> list[Sample]:
    """Return Samples for ``names``; DataError listing every absent image, then every image without a mask."""
    absent = [name for name in names if name not in images]
    if absent:
        where = f"split list {listed_in} names" if listed_in else "these frames are"
        raise DataError(
            f"{where} {len(absent)} frame(s) absent from {image_dir}: {', '.join(absent)}; "
            "restore the frames or remove their lines from the list"
        )
    samples, no_mask = [], []
    for name in names:
        mask = next((masks[name + s] for s in suffixes if name + s in masks), None)
        if mask is None:
            no_mask.append(images[name].name)
        samples.append(Sample(name, images[name], mask))
    if no_mask:
        expected = " or ".join(f"NAME{s}.png" for s in suffixes)
        raise DataError(
            f"{len(no_mask)} image(s) in {image_dir} have no mask in {mask_dir} (expected {expected}): "
            f"{', '.join(no_mask)}; add the masks or remove these frames"
        )
    return samples


def _unique(names: list[str], where: Path, warnings: list[str]) -> list[str]:
    seen, out = set(), []
    for name in names:
        if name in seen:
            warnings.append(f"{where} lists {name} more than once: the repeat is ignored")
            continue
        seen.add(name)
        out.append(name)
    return out


def _folder_splits(root: Path, warnings: list[str]) -> dict[str, list[Sample]]:
    splits = {}
    for split in ("trainval", "train", "val", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        image_dir = _require_dir(folder / "images", "image folder", f"put the {split} frames in {folder / 'images'}")
        mask_dir = _require_dir(
            folder / "masks", "mask folder", f"put the {split} masks in {folder / 'masks'} (same names as the frames)"
        )
        images = _images_by_stem(image_dir, warnings)
        if not images:
            raise DataError(
                f"image folder {image_dir} holds no frames with extensions {IMAGE_EXTENSIONS}: add the frames"
            )
        masks = _images_by_stem(mask_dir, warnings)
        splits[split] = _pair(sorted(images), images, masks, image_dir, mask_dir, None, ("", SIRST_MASK_SUFFIX))
    if "trainval" in splits and ("train" in splits or "val" in splits):
        raise DataError(
            f"data root {root} holds trainval/ beside train/ or val/: keep trainval/ alone, or train/ with val/"
        )
    if "trainval" not in splits:
        if "train" not in splits:
            raise DataError(f"data root {root} has no trainval/ (or train/) folder: add the training frames there")
        splits["trainval"] = splits["train"] + splits.get("val", [])
        clash = sorted({s.name for s in splits["train"]} & {s.name for s in splits.get("val", [])})
        if clash:
            raise DataError(
                f"{root / 'train'} and {root / 'val'} both hold frames named {', '.join(clash)}: "
                "frame names must be unique across train and val; rename or remove the copies"
            )
        if "val" not in splits:
            del splits["train"]  # val will be carved from trainval, train is the rest
    if "test" not in splits:
        raise DataError(f"data root {root} has no test/ folder: add test/images and test/masks")
    return splits


def _pool_splits(
    root: Path,
    list_dir: Path,
    list_files: dict[str, Path],
    suffixes: tuple[str, ...],
    warnings: list[str],
    split: str | None,
) -> dict[str, list[Sample]]:
    """Return the splits of an images/ + masks/ pool with split lists (sirst and basicirstd layouts)."""
    image_dir, mask_dir = root / "images", root / "masks"
    images = _images_by_stem(image_dir, warnings)
    masks = _images_by_stem(mask_dir, warnings)
    names = {split_name: _unique(_read_list(path), path, warnings) for split_name, path in list_files.items()}
    if split in (None, "test") and "test" not in names:
        raise DataError(
            f"{list_dir} has no test list ({'test.txt' if list_dir.name != 'img_idx' else 'test_NAME.txt'}): add it"
        )
    if "train" not in names and "trainval" not in names:
        raise DataError(
            f"{list_dir} has no train or trainval list: add one (the frames used for training, one name a line)"
        )
    splits = {}
    for name, listed in names.items():
        splits[name] = _pair(listed, images, masks, image_dir, mask_dir, list_files[name], suffixes)
    if "trainval" not in splits:
        splits["trainval"] = splits["train"] + [
            s for s in splits.get("val", []) if s.name not in {t.name for t in splits["train"]}
        ]
    if "val" not in splits:
        splits.pop("train", None)  # val will be carved from trainval, train is the rest
    for a, b in (("train", "test"), ("val", "test"), ("train", "val"), ("trainval", "test")):
        if a in splits and b in splits:
            shared = sorted({s.name for s in splits[a]} & {s.name for s in splits[b]})
            if shared:
                warnings.append(f"{list_dir}: {len(shared)} frame(s) are in both {a} and {b}: {', '.join(shared[:10])}")
    return splits


def _sirst_lists(root: Path, index: str | None) -> tuple[Path, dict[str, Path]]:
    """Return (the idx_* folder, {split: list file}); idx_427 unless ``index`` names another."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("idx_"))
    if index is None:
        index = "idx_427" if "idx_427" in folders else (folders[0] if len(folders) == 1 else None)
        if index is None:
            raise DataError(
                f"data root {root} holds split folders {folders} and no idx_427: pick one with index=NAME (--index)"
            )
    list_dir = root / index
    if not list_dir.is_dir():
        raise DataError(f"split folder {list_dir} is missing: choose one of {folders} (--index)")
    files = {split: list_dir / f"{split}.txt" for split in SPLITS if (list_dir / f"{split}.txt").is_file()}
    return list_dir, files


def _basic_lists(root: Path, index: str | None) -> tuple[Path, dict[str, Path], str]:
    """Return (img_idx/, {split: list file}, the dataset NAME of the train_NAME.txt lists)."""
    list_dir = root / "img_idx"
    names = sorted(p.name[len("train_") : -len(".txt")] for p in list_dir.glob("train_*.txt"))
    if index is None:
        if len(names) == 1:
            index = names[0]
        elif root.name in names:
            index = root.name
        else:
            raise DataError(
                f"{list_dir} holds {'no train_NAME.txt list' if not names else f'lists for several datasets {names}'}: "
                + ("add train_NAME.txt and test_NAME.txt" if not names else "pick one with index=NAME (--index)")
            )
    if index not in names:
        raise DataError(f"{list_dir / f'train_{index}.txt'} is missing: lists present are for {names}")
    files = {
        split: list_dir / f"{split}_{index}.txt" for split in SPLITS if (list_dir / f"{split}_{index}.txt").is_file()
    }
    return list_dir, files, index


def _salted_rank(name: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()


def _carve(trainval: list[Sample], val_fraction: float, val_seed: int) -> tuple[list[Sample], list[Sample]]:
    """Return (train, val): val is the ``round(val_fraction * n)`` frames of lowest salted hash, kept in order."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction={val_fraction} must be in (0, 1): it is the share of training frames held out for validation"
        )
    if len(trainval) < 2:
        raise DataError(f"only {len(trainval)} training frame(s): at least 2 are needed to hold out a validation frame")
    n_val = min(max(1, round(val_fraction * len(trainval))), len(trainval) - 1)  # at least one frame each side
    chosen = set(sorted((s.name for s in trainval), key=lambda n: _salted_rank(n, val_seed))[:n_val])
    return [s for s in trainval if s.name not in chosen], [s for s in trainval if s.name in chosen]


@dataclass
class _Indexed:
    """A dataset folder indexed without decoding: its layout, split lists used and splits."""

    root: Path
    layout: str
    index: str | None  # the split lists used: "idx_427"/"idx_320" (sirst), NAME (basicirstd), None (folder)
    splits: dict[str, list[Sample]]
    val_official: bool
    warnings: list[str]


def _index(
    root, split: str | None, layout: str | None, val_fraction: float, val_seed: int, index: str | None
) -> _Indexed:
    """Return the indexed dataset (every split, val carved where the layout has none) without decoding any frame."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; choose one of {SPLITS}")
    root = resolve_data_root(root)
    if layout is None:
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is unknown; choose one of {LAYOUTS}")
    warnings: list[str] = []
    if layout == "folder":
        splits = _folder_splits(root, warnings)
        index = None
    else:
        for sub in ("images", "masks"):
            _require_dir(
                root / sub, f"{sub} folder", f"the {layout} layout keeps all frames in images/ and all masks in masks/"
            )
        if layout == "sirst":
            list_dir, files = _sirst_lists(root, index)
            index, suffixes = list_dir.name, (SIRST_MASK_SUFFIX, "")
        else:
            _require_dir(
                root / "img_idx", "split folder", "the basicirstd layout keeps img_idx/train_NAME.txt and test_NAME.txt"
            )
            list_dir, files, index = _basic_lists(root, index)
            suffixes = ("", SIRST_MASK_SUFFIX)
        splits = _pool_splits(root, list_dir, files, suffixes, warnings, split)
    if split is not None and split not in splits and split != "val" and not (split == "train" and "trainval" in splits):
        raise DataError(f"data root {root} has no {split!r} split (it has {sorted(splits)}): add it")
    official_val = "val" in splits
    if not official_val:
        splits["train"], splits["val"] = _carve(splits["trainval"], val_fraction, val_seed)
    for name, samples in splits.items():
        if not samples:
            raise DataError(f"split {name!r} of {root} is empty: add frames (or lines to its list)")
    return _Indexed(root, layout, index, splits, official_val, warnings)


def _verify(samples: Sequence[Sample], keep: bool) -> tuple[list, list[str]]:
    """Decode every pair (threaded); return (cache entries, or frame sizes if not keep; warnings)."""

    def load(sample: Sample):
        try:
            grey, mask, notes, _ = _load_native(sample)
        except DataError as error:
            return None, [], str(error)
        return ((grey, np.packbits(mask), mask.shape) if keep else grey.shape), notes, None

    with ThreadPoolExecutor(_THREADS) as pool:
        results = list(pool.map(load, samples))
    errors = [error for _, _, error in results if error]
    if errors:
        raise DataError(f"{len(errors)} bad file(s):\n  " + "\n  ".join(errors) if len(errors) > 1 else errors[0])
    warnings = [note for _, notes, _ in results for note in notes]
    return [item for item, _, _ in results], warnings


def list_split(
    root,
    split: str,
    layout: str | None = None,
    val_fraction: float = 0.1,
    val_seed: int = 0,
    *,
    index: str | None = None,
    decode: bool = True,
) -> tuple[list[Sample], list[str]]:
    """Return (the split's samples, warnings) after checking every file; DataError names each bad file and the fix.

    ``index`` picks the split lists (sirst: "idx_427" or "idx_320"; basicirstd: NAME of
    train_NAME.txt). ``decode=False`` checks only names, sizes in bytes and file headers (fast
    indexing); the default decodes every frame and mask, which also finds corrupt files and
    mask/frame size mismatches.
    """
    indexed = _index(root, split, layout, val_fraction, val_seed, index)
    samples, warnings = indexed.splits[split], indexed.warnings
    if decode:
        _, notes = _verify(samples, keep=False)
        warnings += notes
    else:
        for sample in samples:
            for path in (sample.image, sample.mask):
                _quick_check(path)
    return samples, warnings


def val_subset(
    root, layout: str | None = None, val_fraction: float = 0.1, val_seed: int = 0, *, index: str | None = None
) -> dict:
    """Return a JSON-ready description of the val split: layout, official or carved, fraction, seed and frame names."""
    indexed = _index(root, "val", layout, val_fraction, val_seed, index)
    official = indexed.val_official
    return {
        "root": str(indexed.root),
        "layout": indexed.layout,
        "index": indexed.index,
        "source": "official" if official else "carved from trainval",
        "val_fraction": None if official else val_fraction,
        "val_seed": None if official else val_seed,
        "names": [s.name for s in indexed.splits["val"]],
    }


def write_names(names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write frame names one per line (a split list), atomically; return the path."""
    return atomic_write_text(path, "".join(f"{name}\n" for name in names))


# ----------------------------------------------------------------------------- dataset


class IRSTDDataset:
    """One split of a dataset in any layout; items: {"image": 1xHxW float [0,1], "mask": 1xHxW float {0,1}, "name"}.

    Every file is decoded once at construction (so bad files fail before training starts);
    with ``cache=True`` the decoded frames are kept in memory (as stored: uint8/uint16, masks
    bit-packed, about 1.1 bytes a pixel) and DataLoader workers share them. ``transform`` is
    called as ``transform(image, mask) -> (image, mask)`` on 1 x H x W tensors.
    """

    def __init__(
        self,
        root,
        split: str,
        layout: str | None = None,
        transform=None,
        cache: bool = True,
        val_fraction: float = 0.1,
        val_seed: int = 0,
        sixteen_bit: str = "range",
        *,
        index: str | None = None,
    ):
        _check_sixteen_bit(sixteen_bit)
        indexed = _index(root, split, layout, val_fraction, val_seed, index)
        self.root, self.layout, self.index, self.split = indexed.root, indexed.layout, indexed.index, split
        self.val_official, self.warnings = indexed.val_official, indexed.warnings
        self.samples: list[Sample] = indexed.splits[split]
        self.transform = transform
        self.sixteen_bit = sixteen_bit
        items, notes = _verify(self.samples, keep=cache)
        self.warnings += notes
        for note in self.warnings:
            logger.warning(note)
        self._cache = items if cache else None
        self.sizes: list[tuple[int, int]] = [item[2] for item in items] if cache else list(items)  # (H, W) per frame

    @property
    def names(self) -> list[str]:
        """Return the frame names of this split, in dataset order."""
        return [s.name for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        if self._cache is not None:
            grey, packed, shape = self._cache[i]
            mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape)
            frame = _to_unit(grey, sample.image, self.sixteen_bit)
        else:
            frame, mask, _ = load_pair(sample, self.sixteen_bit)
        import torch  # here, not at module level: the scorer reads masks through this module without torch

        image = torch.from_numpy(frame)[None]  # 1 x H x W float32 in [0, 1]
        target = torch.from_numpy(mask.astype(np.float32))[None]  # 1 x H x W float32 in {0, 1}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return {"image": image, "mask": target, "name": sample.name}


def size_batches(dataset: IRSTDDataset, batch_size: int) -> list[list[int]]:
    """Return index batches (<= batch_size) whose frames share one native size, for DataLoader(batch_sampler=)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(dataset.sizes):
        groups.setdefault(tuple(size), []).append(i)
    return [indices[k : k + batch_size] for indices in groups.values() for k in range(0, len(indices), batch_size)]


# ----------------------------------------------------------------------------- summary (command line)


def summarize(
    root, layout: str | None = None, val_fraction: float = 0.1, val_seed: int = 0, *, index: str | None = None
) -> dict:
    """Return a JSON-ready summary: layout, split sizes, frame sizes, targets per frame, target areas (px), warnings."""
    indexed = _index(root, None, layout, val_fraction, val_seed, index)
    splits, official, warnings = indexed.splits, indexed.val_official, indexed.warnings
    unique = {s.image: s for samples in splits.values() for s in samples}
    ordered = sorted(unique.values(), key=lambda s: str(s.image))

    def stats(sample: Sample):
        try:
            grey, mask, notes, kind = _load_native(sample)
        except DataError as error:
            return None, str(error)
        count, _, cc, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)  # 8-connected targets, as scored
        return (grey.shape, kind, cc[1:, cv2.CC_STAT_AREA].tolist(), notes), None

    with ThreadPoolExecutor(_THREADS) as pool:
        results = dict(zip((s.image for s in ordered), pool.map(stats, ordered)))
    errors = [error for _, error in results.values() if error]
    if errors:
        raise DataError(f"{len(errors)} bad file(s):\n  " + "\n  ".join(errors) if len(errors) > 1 else errors[0])
    info = {path: item for path, (item, _) in results.items()}
    for path in sorted(info, key=str):
        warnings += info[path][3]
    sizes = Counter((w, h) for (h, w), *_ in info.values())
    areas = sorted(a for item in info.values() for a in item[2])
    per_frame = Counter(len(item[2]) for item in info.values())
    split_targets = {name: sum(len(info[s.image][2]) for s in samples) for name, samples in splits.items()}
    return {
        "root": str(indexed.root),
        "layout": indexed.layout,
        "index": indexed.index,
        "val": "official" if official else f"carved from trainval (val_fraction={val_fraction}, val_seed={val_seed})",
        "splits": {name: len(splits[name]) for name in SPLITS if name in splits},
        "targets": {name: split_targets[name] for name in SPLITS if name in splits},
        "frames": len(info),
        "frame_kinds": dict(Counter(item[1] for item in info.values()).most_common()),
        "frame_sizes": {
            "distinct": len(sizes),
            "smallest_wxh": list(min(sizes, key=lambda s: s[0] * s[1])),
            "largest_wxh": list(max(sizes, key=lambda s: s[0] * s[1])),
            "most_common_wxh": [[w, h, n] for (w, h), n in sizes.most_common(3)],
        },
        "targets_per_frame": {
            "min": min(per_frame),
            "max": max(per_frame),
            "mean": round(sum(k * n for k, n in per_frame.items()) / len(info), 3),
            "histogram": {str(k): per_frame[k] for k in sorted(per_frame)},
        },
        "target_area_px": {
            "count": len(areas),
            "min": areas[0] if areas else None,
            "median": float(np.median(areas)) if areas else None,
            "max": areas[-1] if areas else None,
        },
        "warnings": warnings,
    }


def _format_summary(s: dict) -> str:
    lines = [
        f"{s['root']}",
        f"layout: {s['layout']}" + (f" ({s['index']})" if s["index"] else "") + f"; val: {s['val']}",
        "",
    ]
    lines.append(f"{'split':<10} {'frames':>7} {'targets':>8}")
    lines += [f"{name:<10} {n:>7} {s['targets'][name]:>8}" for name, n in s["splits"].items()]
    fs, tp, ta = s["frame_sizes"], s["targets_per_frame"], s["target_area_px"]
    lines += [
        "",
        f"frames: {s['frames']} ({', '.join(f'{n} {k}' for k, n in s['frame_kinds'].items())})",
        f"frame sizes (W x H px): {fs['distinct']} distinct, smallest {fs['smallest_wxh'][0]}x{fs['smallest_wxh'][1]}, "
        f"largest {fs['largest_wxh'][0]}x{fs['largest_wxh'][1]}, most common "
        + ", ".join(f"{w}x{h} ({n})" for w, h, n in fs["most_common_wxh"]),
        f"targets per frame (8-connected): {tp['min']}-{tp['max']}, mean {tp['mean']}; "
        + ", ".join(f"{k}: {n}" for k, n in tp["histogram"].items()),
        f"target area (px): {ta['count']} targets, min {ta['min']}, median {ta['median']}, max {ta['max']}",
        "",
        f"warnings ({len(s['warnings'])}):" if s["warnings"] else "warnings: none",
    ]
    lines += [f"  - {w}" for w in s["warnings"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print a dataset summary (text, or one JSON object with --json); return 0, or 2 with the DataError message."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.data", description="Check a dataset folder and print a summary."
    )
    parser.add_argument(
        "--data-root",
        required=True,
        help=f"dataset folder, or a release name {sorted(RELEASE_NAMES)} read from ./datasets/",
    )
    parser.add_argument("--layout", choices=LAYOUTS, default=None, help="dataset layout (default: detected)")
    parser.add_argument(
        "--index",
        default=None,
        help="split lists: idx_427/idx_320 (sirst) or NAME of img_idx/train_NAME.txt (basicirstd)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of training frames held out as val where the layout has none",
    )
    parser.add_argument("--val-seed", type=int, default=0, help="seed of that held-out subset")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.data_root, args.layout, args.val_fraction, args.val_seed, index=args.index)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else _format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
