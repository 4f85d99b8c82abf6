"""Files on disk: the error type, a sample, image listing, header checks and frame/mask decoding.

Frames: PNG, TIFF, BMP, JPEG; 8- or 16-bit; grey or 3/4-channel. Intensity in [0, 1], float32:
8-bit / 255 exactly (as the release); 16-bit by ``sixteen_bit="range"`` (/ 65535) or
``"percentile"`` (per-frame 0.5-99.5 percentile stretch, for raw 14-bit sensor data).

Grey from colour: an 8-bit colour frame is decoded a second time, from the same bytes, with
``cv2.IMREAD_GRAYSCALE``, so it equals ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``, the frames
the LRRNet weights were trained on. That conversion happens inside the decoder (PNG: libpng's
rgb_to_gray; JPEG: the stored luma channel) and differs by a few grey levels from
``cv2.cvtColor`` BT.601 and from PIL's ``convert("L")``. A colour frame whose three colour
channels are equal (grey stored as colour) gives that channel, as IMREAD_GRAYSCALE does. 16-bit
and float colour frames keep ``cv2.cvtColor`` BT.601 (alpha ignored): IMREAD_GRAYSCALE would
cut them to 8 bits. Float frames (TIFF) are read as they are and must hold finite values in
[0, 1] (a DataError names "non-finite values" or "values outside [0, 1]"). Masks (0/1 or 0/255,
grey or colour) become uint8 {0, 1}; an empty mask is valid; a mask with other levels than 0
and one foreground value, or one covering the whole frame, is read with a warning.

Files are decoded with ``cv2.imdecode`` from bytes read in Python, so non-ASCII paths work.
``frame_to_unit`` scales an array already in memory the same way; having no file bytes, it
converts 8-bit colour by BT.601 too.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")  # preference order on a name clash
SIXTEEN_BIT_MODES = ("range", "percentile")
PERCENTILES = (0.5, 99.5)  # the "percentile" stretch for raw 14/16-bit sensor frames
ASPECT_TOLERANCE = 0.02  # relative; SIRST v1 Misc_111: 592x400 mask vs 325x220 frame differ by 0.2 %
_SIGNATURES = {  # leading bytes of each image format cv2 decodes here
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
THREADS = max(1, min(8, os.cpu_count() or 1))


class DataError(ValueError):
    """A problem with the data on disk; the message names the file or folder and the fix."""


@dataclass(frozen=True)
class Sample:
    """One frame: its name (the image's stem), image path and mask path (None for bare frames)."""

    name: str
    image: Path
    mask: Path | None


# ----------------------------------------------------------------------------- folders


def _is_image_file(path: Path) -> bool:
    """Return True for a visible file whose extension is an image format (skips .xml, .txt, Thumbs.db, ._*)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _require_dir(path: Path, what: str, fix: str) -> Path:
    """Return path when it is a folder; DataError naming it and the fix otherwise."""
    if not path.is_dir():
        raise DataError(f"{what} {path} is missing: {fix}")
    return path


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


# ----------------------------------------------------------------------------- bytes and headers


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes; DataError for a missing, unreadable or empty file."""
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


# ----------------------------------------------------------------------------- decoding


def _imdecode(path: Path, data: bytes, flags: int) -> np.ndarray:
    """Return cv2.imdecode(data, flags), which decodes as cv2.imread(path, flags); DataError if it cannot."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if array is None or array.size == 0:
        raise DataError(
            f"file {path} cannot be decoded (corrupt image): copy it again from the dataset source, or remove it"
        )
    return array


def _decode(path: Path) -> tuple[np.ndarray, bytes]:
    """Return (the image exactly as stored: H x W or H x W x C, uint8/uint16/float32; its file bytes)."""
    data = _read_bytes(path)
    _check_signature(path, data[:16], data[-1024:])
    return _imdecode(path, data, cv2.IMREAD_UNCHANGED), data


def _frame_grey(array: np.ndarray, data: bytes | None, path: Path | str) -> np.ndarray:
    """Return an H x W grey frame: 1 channel kept; 8-bit colour as IMREAD_GRAYSCALE; 16-bit/float colour by BT.601.

    ``data`` is the file's bytes, decoded again with IMREAD_GRAYSCALE for 8-bit colour; an
    in-memory array (``data=None``) has none and uses BT.601 (``cv2.cvtColor``) too.
    """
    if array.ndim == 2:
        return array
    channels = array.shape[2]
    if channels == 1:
        return array[..., 0]
    if channels in (3, 4) and array.dtype == np.uint8:
        blue, green, red = array[..., 0], array[..., 1], array[..., 2]
        if np.array_equal(blue, green) and np.array_equal(blue, red):
            return np.ascontiguousarray(blue)  # grey stored as colour: IMREAD_GRAYSCALE gives this channel too
        if data is not None:
            return _imdecode(Path(path), data, cv2.IMREAD_GRAYSCALE)  # the decoder's conversion: cv2.imread(path, 0)
    if channels in (3, 4) and array.dtype in (np.uint8, np.uint16, np.float32):
        return cv2.cvtColor(array, cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY)
    what = f"frame {path}" if data is not None else str(path)   # a file, or an in-memory frame named by the caller
    raise DataError(
        f"{what} has {channels} channels of {array.dtype}: save it as a grey or 3-channel 8/16-bit image"
    )


def to_unit(grey: np.ndarray, path: Path, sixteen_bit: str) -> np.ndarray:
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
        _check_float(grey, path)
        return grey.astype(np.float32)
    raise DataError(f"frame {path} has pixel type {grey.dtype}: save it as an 8- or 16-bit image")


def _check_float(grey: np.ndarray, path: Path | str) -> None:
    """Raise DataError naming the frame when a float frame holds NaN/Inf or values outside [0, 1]."""
    finite = np.isfinite(grey)
    if not finite.all():
        raise DataError(
            f"frame {path} holds non-finite values ({int((~finite).sum())} NaN or Inf pixels): "
            "export it again, or save it as an 8- or 16-bit image"
        )
    low, high = float(grey.min()), float(grey.max())
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"frame {path} holds values outside [0, 1] (from {low:g} to {high:g}): float frames are read as "
            "they are, so scale it into [0, 1] or save it as an 8- or 16-bit image"
        )


def check_sixteen_bit(sixteen_bit: str) -> None:
    """Raise ValueError naming the choices when ``sixteen_bit`` is not one of SIXTEEN_BIT_MODES."""
    if sixteen_bit not in SIXTEEN_BIT_MODES:
        raise ValueError(f"sixteen_bit={sixteen_bit!r} is unknown; choose one of {SIXTEEN_BIT_MODES}")


def _read_grey(path: Path) -> tuple[np.ndarray, str]:
    """Return (the grey frame as stored: uint8/uint16/float H x W, its kind, e.g. "8-bit grey")."""
    raw, data = _decode(path)
    grey = _frame_grey(raw, data, path)
    stored = "grey" if raw.ndim == 2 or raw.shape[2] == 1 else f"{raw.shape[2]}-channel"
    return grey, f"{grey.dtype.itemsize * 8}-bit {stored}"


def frame_to_unit(array: np.ndarray, source: str | os.PathLike = "frame", sixteen_bit: str = "range") -> np.ndarray:
    """Return an in-memory frame (H x W, H x W x 1, 1 x H x W, or H x W x 3/4 BGR(A)) as float32 H x W in [0, 1],
    scaled as read_frame.

    ``source`` names the frame in error messages. Colour is converted by BT.601 (``cv2.cvtColor``):
    an array has no file bytes to decode as IMREAD_GRAYSCALE, so pass ``cv2.imread(path, 0)`` (or
    use read_frame) to get the grey frames the released weights were trained on.
    """
    check_sixteen_bit(sixteen_bit)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1 and array.shape[2] not in (1, 3, 4):
        array = array[0]        # 1 x H x W, a single channel first (as a tensor holds it)
    if array.ndim not in (2, 3) or array.size == 0 or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise DataError(f"{source} has shape {array.shape}: pass an H x W grey (or H x W x 1, 1 x H x W) or an "
                        "H x W x 3 BGR image")
    return to_unit(_frame_grey(array, None, source), source, sixteen_bit)


def read_frame(path: str | os.PathLike, sixteen_bit: str = "range") -> np.ndarray:
    """Return the frame as float32 H x W in [0, 1] (8-bit / 255 exactly; 16-bit / 65535 or percentile-stretched)."""
    check_sixteen_bit(sixteen_bit)
    path = Path(path)
    return to_unit(_read_grey(path)[0], path, sixteen_bit)


def _binarise(array: np.ndarray) -> np.ndarray:
    """Return uint8 {0, 1}: a pixel is target above half the mask's own maximum (so 0/1 and 0/255 both work)."""
    if array.ndim == 3:
        array = array.max(axis=2)  # target where any channel is set (grey masks stored as colour, coloured labels)
    top = array.max()
    if top <= 0:
        return np.zeros(array.shape, np.uint8)  # an empty mask: a frame with no target
    return (array > top / 2).astype(np.uint8)


def _mask_notes(array: np.ndarray, mask: np.ndarray, path: Path) -> list[str]:
    """Return warnings for a mask as stored (array) and binarised (mask): not binary, or target everywhere."""
    notes = []
    grey = array.max(axis=2) if array.ndim == 3 else array
    top = grey.max()
    if top > 0:
        other = (grey != 0) & (grey != top)
        if other.any():
            levels = np.unique(grey[other])
            notes.append(
                f"mask {path} is not binary: besides 0 and {top:g} it holds {levels.size} other level(s) "
                f"({', '.join(f'{v:g}' for v in levels[:4])}{', ...' if levels.size > 4 else ''}) in "
                f"{int(other.sum())} pixels; those above {top / 2:g} count as target. Save masks as 0/255 PNG "
                "(no JPEG, no anti-aliasing)"
            )
    if mask.size and mask.all():
        notes.append(
            f"mask {path} marks the whole {mask.shape[1]}x{mask.shape[0]} frame as target: check that it is not "
            "inverted (targets white on a black background)"
        )
    return notes


def _read_mask_checked(path: Path) -> tuple[np.ndarray, list[str]]:
    """Return (the mask as uint8 H x W in {0, 1}, warnings: not binary, or covering the whole frame)."""
    array = _decode(path)[0]
    mask = _binarise(array)
    return mask, _mask_notes(array, mask, path)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Return the mask as uint8 H x W in {0, 1} (0/1 or 0/255 files, grey or colour; empty masks allowed).

    Pixels above half the mask's maximum are target. Datasets (and ``python -m utils.data``)
    warn about a mask that holds other levels than 0 and one foreground value, or whose target
    covers the whole frame.
    """
    return _binarise(_decode(Path(path))[0])


def _same_aspect(mask_hw: tuple[int, int], frame_hw: tuple[int, int]) -> bool:
    """Return True when the two (H, W) sizes have the same aspect ratio within ASPECT_TOLERANCE."""
    (mh, mw), (fh, fw) = mask_hw, frame_hw
    return abs(mh * fw - mw * fh) <= ASPECT_TOLERANCE * max(mh * fw, mw * fh)


def fit_mask(mask: np.ndarray, frame_hw: tuple[int, int], sample: Sample) -> tuple[np.ndarray, list[str]]:
    """Return (the mask at the frame's (H, W) size, warnings): same aspect -> nearest resize + note, else DataError."""
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


def load_native(sample: Sample) -> tuple[np.ndarray, np.ndarray | None, list[str], str]:
    """Return (grey frame as stored: uint8/uint16/float, mask {0,1} at the frame's size or None, warnings, kind)."""
    grey, kind = _read_grey(sample.image)
    if grey.dtype.kind == "f":
        _check_float(grey, sample.image)  # found when the split is checked, not when the frame is first used
    if sample.mask is None:
        return grey, None, [], kind
    mask, notes = _read_mask_checked(Path(sample.mask))
    mask, warnings = fit_mask(mask, grey.shape, sample)
    return grey, mask, notes + warnings, kind


def load_pair(sample: Sample, sixteen_bit: str = "range") -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Return (frame float32 H x W in [0, 1], mask uint8 H x W in {0, 1} or None if the sample has none, warnings)."""
    check_sixteen_bit(sixteen_bit)
    grey, mask, warnings, _ = load_native(sample)
    return to_unit(grey, sample.image, sixteen_bit), mask, warnings


def raise_bad(errors: Sequence[str]) -> None:
    """Raise one DataError listing every bad file (one per line when several); nothing when there are none."""
    if errors:
        raise DataError(f"{len(errors)} bad file(s):\n  " + "\n  ".join(errors) if len(errors) > 1 else errors[0])


def verify_samples(samples: Sequence[Sample], keep: bool) -> tuple[list, list[str]]:
    """Decode every pair (threaded); return (cache entries, or frame sizes if not keep; warnings)."""

    def load(sample: Sample):
        try:
            grey, mask, notes, _ = load_native(sample)
        except DataError as error:
            return None, [], str(error)
        return ((grey, np.packbits(mask), mask.shape) if keep else grey.shape), notes, None

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(load, samples))
    raise_bad([error for _, _, error in results if error])
    warnings = [note for _, notes, _ in results for note in notes]
    return [item for item, _, _ in results], warnings
