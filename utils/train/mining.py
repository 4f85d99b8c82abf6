"""Hard negatives: the network's false alarms on its own training frames, mined between epochs.

A component of p > t that lies within ``CLEAR_PX`` of a labelled target (or of the unknown part of a
labelled box) is not a false alarm; every other one is, and its centroid becomes a point that
``utils.data.mixture.MixedTrainSet`` centres crops on (``hard_points``). The verifier labels its
candidates with the same rule (``touches_known``).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from tqdm import tqdm

from utils.data import size_batches
from utils.data.mixture import MixedTrainSet
from utils.eval.metrics import THRESHOLD, find_components
from utils.infer.device import autocast, fixed_algorithms

CLEAR_PX = 3  # a detection within this many px of a target or box is not a false alarm



def touches_known(comps, known: np.ndarray) -> np.ndarray:
    """Return bool (n,): which components (``utils.eval.metrics.Components``) lie within CLEAR_PX of a known pixel."""
    near = cv2.dilate(known.astype(np.uint8), np.ones((2 * CLEAR_PX + 1,) * 2, np.uint8)).ravel() > 0
    return np.bincount(comps.label, weights=near[comps.index], minlength=comps.n + 1)[1:] > 0


def false_alarm_points(prob: np.ndarray, known: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Return K x 2 (row, col) centroids of the components of prob > threshold that touch no known pixel.

    ``known``: H x W bool, the targets and the unknown box pixels; a component within CLEAR_PX of
    them is not a false alarm.
    """
    comps = find_components(prob > threshold)
    if comps.n == 0:
        return np.zeros((0, 2), np.float32)
    return comps.centroids()[~touches_known(comps, known)].astype(np.float32)


def mine_hard_negatives(net, train: MixedTrainSet, device, dtype=None, threshold: float = THRESHOLD,
                        max_frames: int = 0, seed: int = 0, batch_size: int = 1, progress: bool = False
                        ) -> dict[int, np.ndarray]:
    """Return {frame index: K x 2 false-alarm centroids} of net on the training frames (whole native frames).

    ``max_frames`` > 0 scans that many frames drawn with ``seed``; batches group frames of one size.
    The network is left in eval mode.
    """
    indices = np.arange(len(train))
    if 0 < max_frames < len(train):
        indices = np.sort(np.random.default_rng(seed).choice(len(train), max_frames, replace=False))
    sizes = [train.sizes[i] for i in indices]
    found: dict[int, np.ndarray] = {}
    net.eval()
    with torch.no_grad(), fixed_algorithms():
        for batch in tqdm(size_batches(sizes, batch_size), desc="mine false alarms", leave=False, disable=not progress):
            frames = [train.raw(int(indices[k])) for k in batch]
            x = torch.from_numpy(np.stack([f[0] for f in frames]))[:, None].to(device)
            with autocast(device, dtype or torch.float32):
                _, t = net(x)
            probs = torch.sigmoid(t.float())[:, 0].cpu().numpy()
            for k, prob, (_, mask, ignore) in zip(batch, probs, frames):
                points = false_alarm_points(prob, (mask | ignore) > 0, threshold)
                if len(points):
                    found[int(indices[k])] = points
    return found
