"""A pack: the frames a run reads, every split of every source, in one file (for a GPU machine without the datasets).

A pack is an uncompressed ``.npz`` (no pickled objects) whose frames are lossless WebP (a third
smaller than PNG on NUDT-SIRST) and masks PNG, each encoded on its own. It holds, for each source
of a run and each split the run reads (the test split may be left out), the 8-bit grey frames as the dataset classes decode them, the masks
(frame datasets) or the boxes (box-labelled video, whose pseudo-masks are recomputed from frame
and box when read, as ``VideoFrameDataset`` does), and the frame names. ``meta`` is a JSON
string: the format version, the data options the pack was made with and its sources.

- ``write_pack(path, meta, splits)``: ``splits`` maps (source index, split) to a dataset
  (``IRSTDDataset`` or ``VideoFrameDataset``); writes atomically.
- ``read_pack(path)`` returns a ``Pack``: ``meta`` and ``split(source, name)``, a
  ``PackedSplit`` whose items equal those of the dataset it was made from.

``python -m utils.train.pack`` packs what a named config reads; docs/gpu.md says how a GPU
window uses it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from utils.data.frames import DataError
from utils.data.video import pseudo_mask
from utils.files import atomic_write

PACK_FORMAT = 1
WEBP_LOSSLESS = 101     # OpenCV's WebP quality above 100 means lossless


def grey_levels(image: np.ndarray, where: str) -> np.ndarray:
    """Return a frame in [0, 1] (float) as the 8-bit grey levels it was decoded from; DataError when it has none."""
    grey = np.rint(image * 255.0)
    if not np.array_equal((grey / 255.0).astype(np.float32), image.astype(np.float32)):
        raise DataError(f"frame {where} is not an 8-bit frame (16-bit or float source): a pack holds 8-bit frames "
                        "only; train such data from its folder")
    return grey.astype(np.uint8)


def encode_frame(array: np.ndarray, where: str) -> np.ndarray:
    """Return the lossless WebP bytes of an H x W uint8 array as a uint8 vector (a third smaller than PNG on
    NUDT-SIRST's frames)."""
    ok, data = cv2.imencode(".webp", array, [cv2.IMWRITE_WEBP_QUALITY, WEBP_LOSSLESS])
    if not ok:
        raise DataError(f"{where}: cannot be encoded as WebP")
    return data.reshape(-1)


def encode_mask(array: np.ndarray, where: str) -> np.ndarray:
    """Return the PNG bytes of an H x W {0, 1} uint8 mask as a uint8 vector."""
    ok, data = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise DataError(f"{where}: cannot be encoded as PNG")
    return data.reshape(-1)


def join(chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return (the chunks concatenated, the end offset of each)."""
    ends = np.cumsum([len(c) for c in chunks], dtype=np.int64)
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)), ends


def split_key(source: int, split: str) -> str:
    """Return the key prefix of one split of one source inside a pack."""
    return f"s{source}_{split}"


def write_pack(path: str | os.PathLike, meta: Mapping[str, Any], splits: Mapping[tuple[int, str], Any],
               progress=None) -> Path:
    """Write the splits (datasets without transforms) and meta into one .npz at path, atomically; return path.

    ``progress(iterable, desc)`` wraps the frame loop of each split (e.g. tqdm), or None.
    """
    arrays: dict[str, np.ndarray] = {}
    listing = []
    for (source, split), dataset in splits.items():
        prefix = split_key(source, split)
        boxed = getattr(dataset, "box_labelled", False)
        frames, masks, boxes = [], [], []
        items = range(len(dataset))
        for i in (progress(items, f"pack {prefix}") if progress else items):
            item = dataset[i]
            where = f"{item['name']} of split {split!r} of source {source}"
            frames.append(encode_frame(grey_levels(item["image"][0].numpy(), where), where))
            if boxed:   # the labels' own numbers (float64), from which the pseudo-mask is computed
                box = dataset.entries[i][2]
                boxes.append(box if box is not None else (math.nan,) * 4)
            else:
                masks.append(encode_mask((item["mask"][0].numpy() > 0).astype(np.uint8), where))
        arrays[f"{prefix}_frames"], arrays[f"{prefix}_frame_ends"] = join(frames)
        if boxed:
            arrays[f"{prefix}_boxes"] = np.asarray(boxes, np.float64).reshape(-1, 4)
        else:
            arrays[f"{prefix}_masks"], arrays[f"{prefix}_mask_ends"] = join(masks)
        arrays[f"{prefix}_names"] = np.asarray(dataset.names, dtype=str)
        listing.append({"source": source, "split": split, "frames": len(dataset), "box_labelled": boxed,
                        "layout": getattr(dataset, "layout", "video")})
    arrays["meta"] = np.asarray(json.dumps({**meta, "format": PACK_FORMAT, "splits": listing}))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def cut(data: np.ndarray, ends: np.ndarray, i: int) -> np.ndarray:
    """Return chunk i of data whose chunks end at ends."""
    return data[(ends[i - 1] if i else 0):ends[i]]


def decode(data: np.ndarray, where: str) -> np.ndarray:
    """Return the H x W uint8 array of WebP or PNG bytes; DataError naming where when they do not decode."""
    array = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)    # WebP decodes to three equal channels: exact grey
    if array is None or array.ndim != 2:
        raise DataError(f"{where} does not decode: the pack is damaged; write it again (python -m utils.train.pack)")
    return array


class PackedSplit:
    """One split of one source read from a pack; items as ``IRSTDDataset`` (frame datasets) or ``VideoFrameDataset``
    (box-labelled: "ignore" and "box" as well), decoded once and kept as uint8.

    ``transform(image, target)`` as the dataset classes call it (target: the mask, or mask and
    ignore stacked for box-labelled frames).
    """

    def __init__(self, path: Path, source: int, split: str, frames: list[np.ndarray], masks: list[np.ndarray] | None,
                 boxes: np.ndarray | None, names: list[str], layout: str, transform=None):
        self.root, self.source, self.split, self.layout = path, source, split, f"pack ({layout})"
        self.frames, self.masks, self.boxes, self.transform = frames, masks, boxes, transform
        self.box_labelled = boxes is not None
        self._names = names
        self.sizes: list[tuple[int, int]] = [f.shape for f in frames]
        self.warnings: list[str] = []
        self.val_official = False

    @property
    def names(self) -> list[str]:
        """Return the frame names of this split, in pack order."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        import torch  # here, as in IRSTDDataset: the package imports without torch

        grey = self.frames[i]
        image = torch.from_numpy(grey.astype(np.float32) / np.float32(255.0))[None]
        item: dict[str, Any] = {"name": self._names[i]}
        if self.box_labelled:
            box = self.boxes[i]
            present = bool(np.isfinite(box).all())
            mask, ignore = pseudo_mask(grey, tuple(float(v) for v in box) if present else None)
            target = torch.from_numpy(np.stack([mask, ignore]).astype(np.float32))
            item["box"] = torch.from_numpy(box.astype(np.float32))   # NaN when the target is absent
        else:
            target = torch.from_numpy(self.masks[i].astype(np.float32))[None]
        if self.transform is not None:
            image, target = self.transform(image, target)
        item.update(image=image, mask=target[:1])
        if self.box_labelled:
            item["ignore"] = target[1:]
        return item


@dataclass
class Pack:
    """A pack read into memory: its meta and its splits' encoded arrays (decoded by ``split``)."""

    path: Path
    meta: dict
    arrays: dict

    def has(self, source: int, split: str) -> bool:
        """Return True when the pack holds that split of that source."""
        return f"{split_key(source, split)}_frames" in self.arrays

    def split(self, source: int, split: str, transform=None) -> PackedSplit:
        """Return one split of one source, decoded; DataError when the pack does not hold it."""
        prefix = split_key(source, split)
        if not self.has(source, split):
            held = ", ".join(f"source {s['source']} {s['split']}" for s in self.meta["splits"])
            raise DataError(f"pack {self.path} holds no {split!r} split of source {source} (it holds {held}): "
                            "pack again with the run's config (python -m utils.train.pack)")
        a = self.arrays
        names = [str(n) for n in a[f"{prefix}_names"]]
        frames = [decode(cut(a[f"{prefix}_frames"], a[f"{prefix}_frame_ends"], i), f"{self.path}: frame {n}")
                  for i, n in enumerate(names)]
        boxes = a.get(f"{prefix}_boxes")
        masks = None
        if boxes is None:
            masks = [decode(cut(a[f"{prefix}_masks"], a[f"{prefix}_mask_ends"], i), f"{self.path}: mask {n}")
                     for i, n in enumerate(names)]
        layout = next((s["layout"] for s in self.meta["splits"] if s["source"] == source and s["split"] == split), "")
        return PackedSplit(self.path, source, split, frames, masks, boxes, names, layout, transform)


def read_pack(path: str | os.PathLike) -> Pack:
    """Return the pack at path (its arrays read into memory); DataError naming the file when it is no pack."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pack {path} does not exist: write it with python -m utils.train.pack --config NAME "
                        "(make gpu-pack), or give the right --pack")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"pack {path} cannot be read ({err}): write it again with python -m utils.train.pack") from None
    if meta.get("format") != PACK_FORMAT:
        raise DataError(f"pack {path} has format {meta.get('format')}, this code reads {PACK_FORMAT}: write it again")
    return Pack(path, meta, arrays)
