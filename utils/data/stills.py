"""The ``boxes`` layout's training and validation items: still frames with box labels (IRSTD-1K-boxes).

Layout (``utils.data.layouts``): ``ROOT/images/NAME.png`` and ``ROOT/labels.csv`` with the header
``frame,x,y,w,h``, one row per target box, read by ``utils.data.labels.read_still_labels``. Splits
"trainval", "train" and "val" (val: ``STILL_VAL_FRACTION`` of the frames, by ``STILL_VAL_SEED``).

A frame's training target is the video layout's box-to-target rule (``utils.data.video.pseudo_mask``,
docs/video.md) applied to each of its boxes: the mask is the union of the boxes' pseudo-masks, the
ignore region the boxes' other pixels (``boxes_pseudo_mask``).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from utils.data.frames import THREADS, DataError, check_sixteen_bit, load_native, raise_bad, to_unit
from utils.data.labels import Box, read_still_labels
from utils.data.layouts import STILL_LABELS, index_samples
from utils.data.video import pseudo_mask

logger = logging.getLogger(__name__)
STILL_SPLITS = ("train", "val", "trainval")


def boxes_pseudo_mask(grey: np.ndarray, boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """Return (mask, ignore), H x W uint8 in {0, 1}, of a frame with several target boxes: the union of each box's
    ``pseudo_mask``, and the boxes' other pixels (no box: all background)."""
    mask = np.zeros(grey.shape, np.uint8)
    ignore = np.zeros(grey.shape, np.uint8)
    for box in boxes:
        one, unknown = pseudo_mask(grey, box)
        mask |= one
        ignore |= unknown
    ignore &= 1 - mask  # a pixel another box's rule keeps as target stays target
    return mask, ignore


class StillBoxDataset:
    """One split of a ``boxes`` root; items as ``IRSTDDataset``'s plus "ignore" and "boxes".

    Item: {"image": 1 x H x W float32 in [0, 1], "mask": 1 x H x W float32 {0, 1} (the pseudo-mask),
    "ignore": 1 x H x W float32 {0, 1} (box pixels outside it: left out of the loss), "boxes": K x 4
    float32 (x, y, w, h) px in native pixel-edge coordinates (K = 0 for a target-free frame; not moved by
    ``transform``), "name"}. Every frame is decoded once at construction and kept as stored.
    ``transform(image, target)`` gets the 2 x H x W target (mask, ignore). ``sizes``: each frame's (H, W).
    """

    box_labelled = True     # scored by box counts (utils.train.validate), as videos are

    def __init__(self, root, split: str, transform=None, *, sixteen_bit: str = "range", progress: bool = False):
        if split not in STILL_SPLITS:
            raise DataError(f"split {split!r} does not exist in the boxes layout of {root}: choose one of "
                            f"{STILL_SPLITS} (there is no test split)")
        check_sixteen_bit(sixteen_bit)
        indexed = index_samples(root, split, "boxes", 0.1, 0, None)   # its own val: the fraction is not used
        self.root, self.split, self.transform, self.sixteen_bit = indexed.root, split, transform, sixteen_bit
        self.layout, self.warnings = "boxes", list(indexed.warnings)
        self.samples = indexed.splits[split]
        labels = read_still_labels(Path(self.root) / STILL_LABELS)
        self.boxes: list[list[Box]] = [labels[s.name] for s in self.samples]

        def load(sample):
            try:
                return load_native(sample)[0], None
            except DataError as error:
                return None, str(error)

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(load, self.samples))
        raise_bad([error for _, error in results if error])
        self.frames: list[np.ndarray] = [grey for grey, _ in results]
        for note in self.warnings:
            logger.warning(note)
        if not self.samples:
            raise DataError(f"split {split!r} of {self.root} has no labelled frame: add rows to {STILL_LABELS}")
        self.sizes: list[tuple[int, int]] = [tuple(f.shape[:2]) for f in self.frames]

    @property
    def names(self) -> list[str]:
        """Return the frame names of this split, in dataset order."""
        return [s.name for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        import torch  # optional heavy dependency, as in IRSTDDataset: the scorers import utils.data without torch

        grey = self.frames[i]
        unit = to_unit(grey, self.samples[i].image, self.sixteen_bit)
        levels = grey if grey.dtype == np.uint8 else unit * 255.0   # the rule's floor is in 8-bit grey levels
        mask, ignore = boxes_pseudo_mask(levels, self.boxes[i])
        image = torch.from_numpy(unit)[None]
        target = torch.from_numpy(np.stack([mask, ignore]).astype(np.float32))
        if self.transform is not None:
            image, target = self.transform(image, target)
        boxes = torch.tensor(self.boxes[i], dtype=torch.float32).reshape(-1, 4)
        return {"image": image, "mask": target[:1], "ignore": target[1:], "boxes": boxes, "name": self.samples[i].name}
