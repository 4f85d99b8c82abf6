"""Several training sources in one run: weighted sampling, pasted synthetic targets and mined false alarms.

A ``MixedTrainSet`` joins the training splits of datasets with pixel masks (``IRSTDDataset``),
of box-labelled videos (``VideoFrameDataset``) and of box-labelled still frames (``StillBoxDataset``). Its
items are those of any, with an ``ignore`` map (1 = unknown: the part of a labelled box outside its
pseudo-mask; all 0 for a frame with an exact mask). Per item, before the geometric transform:

- with probability ``copy_paste`` a frame gets 1-3 synthetic targets pasted onto its background
  away from real targets (``utils.data.synthetic.paste_targets``: exact masks on real clutter);
- a frame with mined false alarms (``hard_points``, refreshed by ``utils.train.mining.mine_hard_negatives``) has
  its crop centred on one of them half of the time.

``sample_weights`` gives each source its weight's share of the draws, split evenly among its
frames, and the frames holding false alarms ``hard_frac`` of all draws. The recipe and its
ablations: docs/protocols.md#general-model.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from utils.data.frames import DataError
from utils.data.synthetic import paste_targets

logger = logging.getLogger(__name__)
FOCUS_PROB = 0.5        # chance that a frame with mined false alarms is cropped around one of them
PASTE_COUNT = (1, 3)    # synthetic targets pasted per chosen frame


class MixedTrainSet:
    """The training frames of several sources; items {"image", "mask", "ignore" (1 x h x w each), "name", "source"}.

    ``parts``: [(source name, dataset)], each dataset built without a transform; ``weights``: one
    positive number per source; ``transform(image, target, focus=None)`` is applied to the
    frame and the stacked (mask, ignore) target, as ``utils.data.transforms.TrainTransform`` does.
    """

    def __init__(self, parts: Sequence[tuple[str, object]], weights: Sequence[float], transform=None,
                 copy_paste: float = 0.0, hard_frac: float = 0.25, paste_faint: float = 0.0):
        if len(parts) != len(weights) or not parts:
            raise ValueError(f"{len(parts)} source(s) and {len(weights)} weight(s): give one weight per source")
        for (name, dataset), weight in zip(parts, weights):
            if len(dataset) == 0:
                raise DataError(f"source {name}: its training split has no frames; remove it from --sources")
            if weight <= 0:
                raise ValueError(f"source {name}: weight {weight} must be positive")
        self.parts, self.weights = list(parts), [float(w) for w in weights]
        self.transform, self.copy_paste, self.hard_frac = transform, copy_paste, hard_frac
        self.paste_faint = paste_faint
        self.offsets = np.cumsum([0] + [len(d) for _, d in self.parts])
        self.source_of = np.repeat(np.arange(len(self.parts)), np.diff(self.offsets))
        self.sizes: list[tuple[int, int]] = [tuple(s) for _, d in self.parts for s in d.sizes]
        self.part_names = [list(d.names) for _, d in self.parts]   # built once: items name themselves by it
        self.hard_points: dict[int, np.ndarray] = {}   # frame index -> K x 2 (row, col) false-alarm centroids
        self.split, self.layout = "train", "mixed"
        self.warnings = [w for _, d in self.parts for w in getattr(d, "warnings", [])]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def names(self) -> list[str]:
        """Return "<source>/<frame name>" for every frame, in dataset order."""
        return [f"{name}/{frame}" for (name, _), frames in zip(self.parts, self.part_names) for frame in frames]

    def locate(self, i: int) -> tuple[int, int]:
        """Return (source index, index within that source) of frame i."""
        s = int(self.source_of[i])
        return s, i - int(self.offsets[s])

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return frame i as stored: (image H x W float32 in [0, 1], mask uint8, ignore uint8), no augmentation."""
        s, j = self.locate(i)
        item = self.parts[s][1][j]
        image = item["image"][0].numpy()
        mask = (item["mask"][0].numpy() > 0).astype(np.uint8)
        ignore = (item["ignore"][0].numpy() > 0).astype(np.uint8) if "ignore" in item else np.zeros_like(mask)
        return image, mask, ignore

    def __getitem__(self, i: int) -> dict:
        import torch  # here, as in IRSTDDataset: the package imports without torch

        s, j = self.locate(i)
        image, mask, ignore = self.raw(i)
        if self.copy_paste > 0 and float(torch.rand(())) < self.copy_paste:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))  # follows torch's seeded RNG
            n = int(rng.integers(PASTE_COUNT[0], PASTE_COUNT[1] + 1))
            image, pasted = paste_targets(image, (mask | ignore) > 0, rng, n, self.paste_faint)
            mask = mask | pasted
        focus = None
        points = self.hard_points.get(i)
        if points is not None and len(points) and float(torch.rand(())) < FOCUS_PROB:
            focus = tuple(points[int(torch.randint(0, len(points), ()))])
        frame = torch.from_numpy(np.ascontiguousarray(image))[None]
        target = torch.from_numpy(np.stack([mask, ignore]).astype(np.float32))
        if self.transform is not None:
            frame, target = self.transform(frame, target, focus=focus)
        return {"image": frame, "mask": target[:1], "ignore": target[1:],
                "name": f"{self.parts[s][0]}/{self.part_names[s][j]}", "source": s}

    def sample_weights(self) -> np.ndarray:
        """Return one sampling weight per frame (summing to 1): sources by weight, mined frames hard_frac of it all."""
        share = np.asarray(self.weights) / sum(self.weights)
        counts = np.diff(self.offsets)
        weights = (share / counts)[self.source_of]
        hard = np.zeros(len(self), bool)
        hard[list(self.hard_points)] = True
        if hard.any() and not hard.all() and self.hard_frac > 0:
            weights[hard] *= self.hard_frac / weights[hard].sum()
            weights[~hard] *= (1 - self.hard_frac) / weights[~hard].sum()
        return weights / weights.sum()


