"""The dataset class (one split, decoded and checked once, optionally cached) and size-grouped batches."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from utils.data.frames import DataError, Sample, check_sixteen_bit, load_pair, to_unit, verify_samples
from utils.data.layouts import index_samples

logger = logging.getLogger(__name__)


class IRSTDDataset:
    """One split of a dataset in any layout; items: {"image": 1xHxW float [0,1], "mask": 1xHxW float {0,1}, "name"}.

    Every file is decoded once at construction (so bad files fail before training starts);
    with ``cache=True`` the decoded frames are kept in memory (as stored: uint8/uint16, masks
    bit-packed, about 1.1 bytes a pixel) and DataLoader workers share them. ``transform`` is
    called as ``transform(image, mask) -> (image, mask)`` on 1 x H x W tensors. ``sizes`` holds
    each frame's native (H, W) in pixels, for ``size_batches``.
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
        check_sixteen_bit(sixteen_bit)
        indexed = index_samples(root, split, layout, val_fraction, val_seed, index)
        if indexed.layout == "boxes":
            raise DataError(f"data root {indexed.root} holds frames with box labels (the boxes layout), not masks: "
                            "read it with utils.data.StillBoxDataset, or train on it as a --sources entry")
        self.root, self.layout, self.index, self.split = indexed.root, indexed.layout, indexed.index, split
        self.val_official, self.warnings = indexed.val_official, indexed.warnings
        self.samples: list[Sample] = indexed.splits[split]
        self.transform = transform
        self.sixteen_bit = sixteen_bit
        items, notes = verify_samples(self.samples, keep=cache)
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
            frame = to_unit(grey, sample.image, self.sixteen_bit)
        else:
            frame, mask, _ = load_pair(sample, self.sixteen_bit)
        import torch  # here, not at module level: the scorer reads masks through this package without torch

        image = torch.from_numpy(frame)[None]  # 1 x H x W float32 in [0, 1]
        target = torch.from_numpy(mask.astype(np.float32))[None]  # 1 x H x W float32 in {0, 1}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return {"image": image, "mask": target, "name": sample.name}


def size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Return index batches (<= batch_size) whose frames share one (H, W) size, for DataLoader(batch_sampler=).

    ``sizes[i]`` is frame i's size (e.g. ``IRSTDDataset.sizes``); batches follow the first
    appearance of each size, indices ascending within a size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if hasattr(sizes, "sizes"):
        raise TypeError("size_batches takes the frame sizes, not a dataset: pass dataset.sizes")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    return [indices[k : k + batch_size] for indices in groups.values() for k in range(0, len(indices), batch_size)]
