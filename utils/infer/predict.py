"""Prediction: LRRNet on frames of any size and bit depth -> probability map T, reconstruction D, targets.

    from models import load_model
    from utils.infer.predict import predict_frame
    from utils.verify.apply import load_verification
    net, meta = load_model("checkpoints/lrrnet_sirst_v1.pt")   # ours, or the authors' raw state_dict
    result = predict_frame(net, frame)    # frame: H x W numpy array, uint8 / uint16 / float in [0, 1]
    result.prob        # H x W float32 probabilities sigmoid(T)
    result.recon       # H x W float32 reconstruction D
    result.detections  # one dict per target: centroid, box, area, peak and mean probability
    # with a checkpoint's second stage (utils.verify), as inference.py applies it:
    result = predict_frame(net, frame, verification=load_verification(meta))

What the command-line tools share lives here: the forward pass of a batch of same-size frames,
whole or as blended tiles (``predict_maps``), the batching plan (``plan_batches``) and the
detection of targets (``detect_targets``, through ``utils.eval.metrics.find_components``, the
project's one connected-component labelling). ``utils.infer.writers`` writes the files and
``utils.infer.runner`` runs a whole folder, split or video (``utils.export`` writes the ONNX export).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from utils.data import frame_to_unit
from utils.eval.metrics import THRESHOLD, find_components
from utils.infer.device import Predictor, select_device

TILE_ABOVE_PX = 1024 * 1024  # frames with more pixels than this are tiled (a 1024 x 1024 frame still runs whole)
TILE_PX = 512  # tile side: the size the release trains NUDT-SIRST and IRSTD-1k at
OVERLAP_PX = 64  # tile overlap: the blend ramp's width
# Default batch sizes. On the CPU a batch is slower per frame than single frames (measured at 512 x 512,
# one thread: fp32 0.8 s/frame alone vs 1.2 s/frame in fours; bf16 0.4 vs 0.65): the activations of
# one frame fit the caches, four do not. On a GPU batches fill the device.
CPU_BATCH, CUDA_BATCH = 1, 8


@dataclass(frozen=True)
class PredictOptions:
    """How frames are run: batch size (frames), tiling (pixels) and the detection threshold (probability)."""

    batch_size: int = CPU_BATCH
    tile_above: float = TILE_ABOVE_PX  # math.inf: never tile
    tile: int = TILE_PX
    overlap: int = OVERLAP_PX
    threshold: float = THRESHOLD

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size} must be at least 1")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap {self.overlap} must be 0 or more and smaller than tile {self.tile}")
        if self.tile % 8:
            raise ValueError(f"tile {self.tile} must be a multiple of 8 (the network pads to one; tiles should not)")

    def tiled(self, hw: tuple[int, int]) -> bool:
        """Return True when a frame of this size (pixels) runs as tiles."""
        return hw[0] * hw[1] > self.tile_above


def default_batch_size(device: torch.device) -> int:
    """Return the default frames per forward pass on this device."""
    return CUDA_BATCH if device.type == "cuda" else CPU_BATCH


# ----------------------------------------------------------------------------- tiles


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Return tile start offsets (px) covering 0..length: stride tile - overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def ramp(size: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """Return a 1-D blend weight (float32, in (0, 1]): linear ramps of `overlap` px on sides that meet another tile."""
    weight = np.ones(size, np.float32)
    if overlap <= 0:
        return weight
    n = min(overlap, size)
    up = (np.arange(n, dtype=np.float32) + 0.5) / np.float32(overlap)  # never 0: every pixel keeps some weight
    if rise:
        weight[:n] = np.minimum(weight[:n], up)
    if fall:
        weight[size - n:] = np.minimum(weight[size - n:], up[::-1])
    return weight


def predict_tiled(predictor: Predictor, frame: torch.Tensor, tile: int, overlap: int,
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (D, T logits), each H x W float32 on the CPU, for a 1 x 1 x H x W frame run as blended tiles.

    Tiles of tile x tile px overlap by at least `overlap` px; each tile's outputs are weighted
    by the outer product of two linear ramps that rise over the overlap on every side that
    meets another tile (weight 1 at the frame's own borders), and the weighted sums are
    divided by the summed weights. The network normalises (GroupNorm) and attends over
    whatever it is given, so a tile's statistics are the tile's, not the frame's: tiled maps
    are close to, not equal to, whole-frame maps (tests/test_predict.py measures it).
    """
    _, _, h, w = frame.shape
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]
    weights = {}
    d_sum, t_sum, w_sum = torch.zeros(h, w), torch.zeros(h, w), torch.zeros(h, w)
    for k in range(0, len(boxes), batch_size):
        chunk = boxes[k:k + batch_size]
        d, t = predictor(torch.cat([frame[..., y:y + th, x:x + tw] for y, x in chunk]))  # B x 1 x th x tw
        d, t = d[:, 0].cpu(), t[:, 0].cpu()
        for i, (y, x) in enumerate(chunk):
            key = (y > 0, y + th < h, x > 0, x + tw < w)  # which sides meet another tile
            if key not in weights:
                weights[key] = torch.from_numpy(np.outer(ramp(th, overlap, key[0], key[1]),
                                                         ramp(tw, overlap, key[2], key[3])))
            wt = weights[key]
            d_sum[y:y + th, x:x + tw] += wt * d[i]
            t_sum[y:y + th, x:x + tw] += wt * t[i]
            w_sum[y:y + th, x:x + tw] += wt
    return d_sum / w_sum, t_sum / w_sum


# ----------------------------------------------------------------------------- forward passes


def predict_maps(predictor: Predictor, frames: Sequence[np.ndarray], opts: PredictOptions = PredictOptions(),
                 verification=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return (probabilities, reconstructions), H x W float32 each, for same-size frames (float32 in [0, 1]).

    Frames above ``opts.tile_above`` pixels run one by one as tiles; the others in one batch. A
    ``verification`` (``utils.verify``; default: the one attached to the predictor, if any) puts its
    rejected candidates below ``opts.threshold`` in the probabilities.
    """
    if not frames:
        return [], []
    x = torch.from_numpy(np.stack(frames))[:, None]  # N x 1 x H x W
    if opts.tiled(frames[0].shape):
        outputs = [predict_tiled(predictor, x[k:k + 1], opts.tile, opts.overlap, opts.batch_size)
                   for k in range(len(frames))]
        probs, recons = [torch.sigmoid(t).numpy() for _, t in outputs], [d.numpy() for d, _ in outputs]
    else:
        d, t = predictor(x)
        probs, recons = list(torch.sigmoid(t[:, 0]).cpu().numpy()), list(d[:, 0].cpu().numpy())
    if verification is None:   # utils.verify: the second stage given, else the one attached to the predictor
        verification = getattr(predictor, "verification", None)
    if verification is not None:
        probs = [verification(frame, prob, opts.threshold) for frame, prob in zip(frames, probs)]
    return probs, recons


def plan_batches(sizes: dict[int, tuple[int, int]], opts: PredictOptions) -> list[list[int]]:
    """Return batches of frame indices: frames of one size together (in index order), each frame to tile alone."""
    by_size: dict[tuple[int, int], list[int]] = {}
    tiled = []
    for i in sorted(sizes):
        if opts.tiled(sizes[i]):
            tiled.append([i])
        else:
            by_size.setdefault(tuple(sizes[i]), []).append(i)
    batches = [group[k:k + opts.batch_size] for group in by_size.values()
               for k in range(0, len(group), opts.batch_size)]
    return sorted(batches, key=lambda b: b[0]) + tiled


# ----------------------------------------------------------------------------- detections

DETECTION_FIELDS = ("target", "x", "y", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area_px", "peak_prob", "mean_prob")


def component_table(prob: np.ndarray, comps) -> dict[str, np.ndarray]:
    """Return per-component arrays (length n) of prob's components: y, x (centroid, pixels), top, left,
    height, width (box, pixels), area (pixels), peak and mean (probabilities)."""
    n, label, width = comps.n, comps.label, comps.shape[1]
    rows, cols = comps.index // width, comps.index % width
    values = np.asarray(prob).ravel()[comps.index].astype(np.float64)
    area = comps.areas()
    top = np.full(n + 1, np.iinfo(np.int64).max)
    left = top.copy()
    bottom = np.full(n + 1, -1, np.int64)
    right = bottom.copy()
    peak = np.full(n + 1, -np.inf)
    np.minimum.at(top, label, rows)
    np.minimum.at(left, label, cols)
    np.maximum.at(bottom, label, rows)
    np.maximum.at(right, label, cols)
    np.maximum.at(peak, label, values)
    centroid = comps.centroids().reshape(-1, 2)  # n x 2 (row, col)
    return {"y": centroid[:, 0], "x": centroid[:, 1], "top": top[1:], "left": left[1:],
            "height": bottom[1:] - top[1:] + 1, "width": right[1:] - left[1:] + 1, "area": area, "peak": peak[1:],
            "mean": np.bincount(label, weights=values, minlength=n + 1)[1:] / np.maximum(area, 1)}


def detect_targets(prob: np.ndarray, threshold: float = THRESHOLD) -> list[dict]:
    """Return one dict per 8-connected component of prob > threshold, in raster order of its first pixel.

    Keys (DETECTION_FIELDS): target (1, 2, ...), x, y (centroid in pixels, x = column, y = row,
    origin at the centre of the top-left pixel), bbox_x, bbox_y, bbox_w, bbox_h (pixels), area_px,
    peak_prob and mean_prob (probabilities over the component).
    """
    prob = np.asarray(prob)
    comps = find_components(prob > threshold)
    if comps.n == 0:
        return []
    t = component_table(prob, comps)
    return [{"target": k + 1, "x": float(t["x"][k]), "y": float(t["y"][k]), "bbox_x": int(t["left"][k]),
             "bbox_y": int(t["top"][k]), "bbox_w": int(t["width"][k]), "bbox_h": int(t["height"][k]),
             "area_px": int(t["area"][k]), "peak_prob": float(t["peak"][k]), "mean_prob": float(t["mean"][k])}
            for k in range(comps.n)]


# ----------------------------------------------------------------------------- one frame, from Python


@dataclass
class FramePrediction:
    """The outputs for one frame: probabilities and reconstruction (H x W float32) and the detected targets."""

    prob: np.ndarray
    recon: np.ndarray
    detections: list[dict] = field(default_factory=list)


def predict_frame(model: nn.Module | Predictor, frame: np.ndarray, *, dtype: str = "fp32", device: str = "auto",
                  sixteen_bit: str = "range", opts: PredictOptions = PredictOptions(),
                  verification=None) -> FramePrediction:
    """Return the FramePrediction for one H x W (or H x W x 1, 1 x H x W, H x W x 3 BGR) numpy frame.

    8-bit frames are divided by 255 (as the release does), 16-bit ones scaled by ``sixteen_bit``
    ("range": / 65535, "percentile": a 0.5-99.5 percentile stretch), float frames must already lie
    in [0, 1]. ``model`` is a network (wrapped on the fly in a Predictor on ``device`` with
    ``dtype``) or a Predictor made once for many frames, which is faster. ``verification``
    (``utils.verify.load_verification(meta)``) re-scores the candidates, as inference.py does.
    """
    predictor = model if isinstance(model, Predictor) else Predictor(model, select_device(device), dtype)
    unit = frame_to_unit(np.asarray(frame), "the frame", sixteen_bit)
    probs, recons = predict_maps(predictor, [unit], opts, verification)   # the caller's predictor is left as it was
    return FramePrediction(probs[0], recons[0], detect_targets(probs[0], opts.threshold))


# ----------------------------------------------------------------------------- temporal confirmation


class TemporalConfirmer:
    """Keeps a detection only when detections lie within `radius` px of it in at least k of the last n frames.

    The window is the current frame and the n - 1 frames before it (frames as processed, so
    with ``--every 3`` the last n processed frames); the current frame counts for its own
    detections. History holds every raw detection, confirmed or not. This removes flicker
    (one-frame false alarms), not static clutter, which is present in every frame.
    """

    def __init__(self, k: int, n: int, radius: float = 5.0):
        if not 1 <= k <= n:
            raise ValueError(f"confirmation {k}/{n}: need 1 <= K <= N (K of the last N frames)")
        if not radius > 0:
            raise ValueError(f"confirmation radius {radius} must be > 0 (pixels)")
        self.k, self.n, self.radius = k, n, float(radius)
        self.history: list[np.ndarray] = []  # centroids (m x 2, x and y) of the previous n - 1 frames

    def reset(self) -> None:
        """Forget the history (a new video starts)."""
        self.history.clear()

    def __call__(self, detections: list[dict]) -> list[dict]:
        """Return the confirmed detections of the current frame (renumbered 1..) and remember all of them."""
        points = np.array([[d["x"], d["y"]] for d in detections], np.float64).reshape(-1, 2)
        support = np.ones(len(points), np.int64)  # the current frame
        for past in self.history:
            if len(past) and len(points):
                dist2 = ((points[:, None, :] - past[None, :, :]) ** 2).sum(-1)  # current x past
                support += (dist2 <= self.radius ** 2).any(axis=1)
        self.history.append(points)
        if len(self.history) > self.n - 1:
            self.history.pop(0)
        kept = [d for d, s in zip(detections, support) if s >= self.k]
        return [{**d, "target": i + 1} for i, d in enumerate(kept)]


def parse_confirm(text: str) -> tuple[int, int]:
    """Return (K, N) from "K/N" (e.g. "3/5"); ValueError naming the text otherwise."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--confirm {text!r}: write K/N, e.g. 3/5 (a detection in at least K of the last N frames)") \
            from None
    if not 1 <= k <= n:
        raise ValueError(f"--confirm {text!r}: need 1 <= K <= N")
    return k, n
