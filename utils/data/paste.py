"""Targets pasted into real backgrounds with exact masks, the background's kind, and the contrast of a target.

Used by ``python -m utils.detectability`` (docs/results.md#detectability). Everything works on
8-bit grey frames (H x W uint8) in grey levels.

Target shapes (``Shape``; each a ``size`` x ``size`` px support, profile peak 1):

- ``point``: a Gaussian of sigma = size / 4 px centred on the support (size 1: one pixel); the
  edge pixels of the support sit at about exp(-2) = 0.14 of the peak.
- ``blob``: an extended target, a disc of diameter ``size`` px whose edge falls linearly over
  ``BLOB_EDGE_PX`` (optics blur a real airframe's edge about that much).
- ``drone``: a quadcopter seen from below: a body disc, four diagonal arms and four rotor discs,
  blurred by a Gaussian of ``DRONE_BLUR_PX``.

Pasting (``paste``): the increment polarity x contrast x profile is rounded half away from zero to
whole grey levels and added; the mask is exactly the pixels whose value changed, the label box the
whole support. A position where the sum would leave [0, 255] is refused by ``fits`` (no clipping),
so the peak increment is exactly the contrast asked for.

Background kinds (``kinds``), a documented rule on simple statistics, checked in this order:
``noisy`` (the frame's noise, 1.4826 x the median absolute deviation from a 3 x 3 median, is at least
``NOISY_SIGMA``), then from the ``KIND_WINDOW`` px window around the target: ``text`` (the window holds part of a character-like
component in the top or bottom ``TEXT_BORDER`` of the frame's rows, when the frame has at least ``TEXT_MIN_CHARS`` of
them: thin saturated strokes, value >= ``TEXT_LEVEL`` and ``TEXT_TOPHAT`` grey levels above a 7 x 7 opening, joined by a
3 x 3 dilation, ``TEXT_HEIGHT`` px high and at most ``TEXT_WIDTH`` px wide; a camera's overlay, and by eye also the
saturated tops of bare trees at a frame's edge), ``smooth sky`` (local std
below ``SMOOTH_STD`` and edge density below ``SMOOTH_EDGES``), ``cloud`` (edge density below
``CLOUD_EDGES``), ``buildings`` (edges mostly rectilinear: at least ``RECTILINEAR_SHARE`` of the edge
pixels within ``RECTILINEAR_DEG`` of horizontal or vertical) and ``ground clutter`` (the rest). An
edge pixel has a Sobel gradient of at least ``EDGE_GRADIENT`` grey levels per pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHAPE_KINDS = ("point", "blob", "drone")
BLOB_EDGE_PX = 1.5
DRONE_BLUR_PX = 0.6
RING_PX = 8  # the local background of a target: this band around its support (median level, std for SCR)
STD_FLOOR = 0.5  # grey levels: a flat (or saturated) ring's std is floored here, near 8-bit quantisation noise

BACKGROUND_KINDS = ("smooth sky", "cloud", "ground clutter", "buildings", "noisy", "text")
KIND_WINDOW = 48  # px: the window around a target whose statistics give its kind
TEXT_LEVEL, TEXT_TOPHAT, TEXT_HEIGHT, TEXT_WIDTH, TEXT_BORDER, TEXT_MIN_CHARS = 235, 80, (5, 20), 24, 0.16, 3
NOISY_SIGMA = 4.0  # grey levels
SMOOTH_STD, SMOOTH_EDGES = 3.0, 0.005  # grey levels, fraction of the window's pixels
CLOUD_EDGES = 0.04
RECTILINEAR_DEG, RECTILINEAR_SHARE = 10.0, 0.6
EDGE_GRADIENT = 8.0  # grey levels per px (Sobel / 8)


@dataclass(frozen=True)
class Shape:
    """A pasted target's shape: its kind (point, blob, drone) and the side of its square support (px)."""

    kind: str
    size: int

    def __post_init__(self):
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"shape kind {self.kind!r}: choose one of {SHAPE_KINDS}")
        if self.size < 1:
            raise ValueError(f"shape size {self.size} must be at least 1 px")

    @property
    def name(self) -> str:
        """Return e.g. 'point 3x3' or 'drone 40'."""
        return f"point {self.size}x{self.size}" if self.kind == "point" else f"{self.kind} {self.size}"

    def profile(self) -> np.ndarray:
        """Return the size x size float64 profile, peak exactly 1 (see the module docstring)."""
        s = self.size
        c = (s - 1) / 2
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) - c
        r = np.hypot(yy, xx)
        if self.kind == "point":
            sigma = s / 4
            p = np.exp(-(r ** 2) / (2 * sigma ** 2)) if s > 1 else np.ones((1, 1))
        elif self.kind == "blob":
            p = np.clip((s / 2 - r) / BLOB_EDGE_PX + 0.5, 0, 1)
        else:
            p = drone_profile(s)
        return p / p.max()


def gaussian_profile(sigma: float, size: int) -> np.ndarray:
    """Return a size x size float64 Gaussian of sigma px centred on the support, peak 1 (a real target's twin)."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - c
    p = np.exp(-(yy ** 2 + xx ** 2) / (2 * max(sigma, 1e-3) ** 2))
    return p / p.max()


def drone_profile(size: int) -> np.ndarray:
    """Return a size x size float64 quadcopter (body, four diagonal arms, four rotors), blurred, peak 1."""
    s = size
    c = (s - 1) / 2
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) - c
    rotor = max(s / 8, 0.75)
    body = max(s / 10, 0.75)
    reach = max(s / 2 - rotor - 0.5, 0.0) / math.sqrt(2)  # rotor centres on the diagonals
    arm = max(s / 16, 0.5)
    shape = np.hypot(yy, xx) <= body
    for sy in (-1, 1):
        for sx in (-1, 1):
            shape |= np.hypot(yy - sy * reach, xx - sx * reach) <= rotor
            along = (sy * yy + sx * xx) / math.sqrt(2)   # distance along the arm's diagonal
            across = np.abs(sx * yy - sy * xx) / math.sqrt(2)
            shape |= (along >= 0) & (along <= reach * math.sqrt(2)) & (across <= arm)
    p = cv2.GaussianBlur(shape.astype(np.float64), (0, 0), DRONE_BLUR_PX, borderType=cv2.BORDER_CONSTANT)
    return p if p.max() > 0 else np.ones((s, s))


def quantised_increment(profile: np.ndarray, contrast: float, polarity: int) -> np.ndarray:
    """Return polarity x contrast x profile rounded half away from zero to whole grey levels (int16)."""
    return (polarity * np.floor(contrast * profile + 0.5)).astype(np.int16)


def fits(grey: np.ndarray, top: int, left: int, increment: np.ndarray) -> bool:
    """Return True when the increment lies inside the frame at (top, left) and the sum stays within [0, 255]."""
    h, w = increment.shape
    if top < 0 or left < 0 or top + h > grey.shape[0] or left + w > grey.shape[1]:
        return False
    total = grey[top:top + h, left:left + w].astype(np.int16) + increment
    return bool(total.min() >= 0 and total.max() <= 255)


def paste(grey: np.ndarray, top: int, left: int, increment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (a copy of the uint8 frame with the increment added at (top, left), the H x W bool mask of the pixels
    that changed); ValueError where ``fits`` is False (no clipping ever)."""
    if not fits(grey, top, left, increment):
        raise ValueError(f"a {increment.shape[0]} x {increment.shape[1]} target at row {top}, column {left} leaves the "
                         f"{grey.shape[0]} x {grey.shape[1]} frame or the 0-255 range")
    h, w = increment.shape
    out = grey.copy()
    out[top:top + h, left:left + w] = (grey[top:top + h, left:left + w].astype(np.int16) + increment).astype(np.uint8)
    mask = np.zeros(grey.shape, bool)
    mask[top:top + h, left:left + w] = increment != 0
    return out, mask


def ring_stats(grey: np.ndarray, top: int, left: int, h: int, w: int, ring: int = RING_PX) -> tuple[float, float]:
    """Return (median, std) in grey levels of the ``ring``-px band around the h x w support at (top, left), clipped to
    the frame; std floored at STD_FLOOR."""
    r0, c0 = max(top - ring, 0), max(left - ring, 0)
    r1, c1 = min(top + h + ring, grey.shape[0]), min(left + w + ring, grey.shape[1])
    window = grey[r0:r1, c0:c1].astype(np.float64)
    band = np.ones(window.shape, bool)
    band[max(top - r0, 0):top + h - r0, max(left - c0, 0):left + w - c0] = False
    values = window[band]
    if values.size == 0:
        return float(np.median(window)), STD_FLOOR
    return float(np.median(values)), max(float(values.std()), STD_FLOOR)


def measure_target(grey: np.ndarray, rows: slice, cols: slice, ring: int = 4) -> tuple[int, float, int]:
    """Return (polarity +1 hot / -1 cold, peak contrast in grey levels over the ring median, half-maximum area in px)
    of the target inside the box pixels (rows, cols): the same measurement for real and pasted targets.

    The polarity is the side whose peak deviation from the median of the ``ring``-px band around the box is larger;
    the half-maximum area counts the box pixels at least half the peak contrast that are 8-connected to the peak.
    """
    h, w = rows.stop - rows.start, cols.stop - cols.start
    if h <= 0 or w <= 0:
        return 1, 0.0, 0
    level, _ = ring_stats(grey, rows.start, cols.start, h, w, ring)
    deviation = grey[rows, cols].astype(np.float64) - level
    polarity = 1 if deviation.max() >= -deviation.min() else -1
    signed = polarity * deviation
    peak = float(signed.max())
    if peak <= 0:
        return polarity, 0.0, 0
    half = (signed >= peak / 2).astype(np.uint8)
    _, labels = cv2.connectedComponents(half, connectivity=8)
    at = np.unravel_index(int(np.argmax(signed)), signed.shape)
    return polarity, peak, int((labels == labels[at]).sum())


# ----------------------------------------------------------------------------- background kinds


@dataclass
class KindMaps:
    """A frame's statistics for ``kinds``: frame flags and per-pixel window means (float32 H x W)."""

    text: np.ndarray   # the window's share of character-like pixels
    noisy: bool
    noise_sigma: float
    text_chars: int   # character-like saturated components in the densest band of rows
    local_std: np.ndarray
    edges: np.ndarray
    rectilinear: np.ndarray


def kind_maps(grey: np.ndarray) -> KindMaps:
    """Return the frame's KindMaps (the noise flag; the KIND_WINDOW window's share of text pixels, std, edge density
    and share of rectilinear edges at every pixel)."""
    g = grey.astype(np.float32)
    k = (KIND_WINDOW, KIND_WINDOW)
    strokes = (cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, np.ones((7, 7), np.uint8)) >= TEXT_TOPHAT) & (grey >= TEXT_LEVEL)
    joined = cv2.dilate(strokes.astype(np.uint8), np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    top, h, w = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_WIDTH]
    rows = grey.shape[0]
    chars = ((h >= TEXT_HEIGHT[0]) & (h <= TEXT_HEIGHT[1]) & (w <= TEXT_WIDTH)
             & ((top + h <= TEXT_BORDER * rows) | (top >= (1 - TEXT_BORDER) * rows)))
    chars[0] = False   # the background component
    text_chars = int(chars.sum())
    text = chars[labels] if text_chars >= TEXT_MIN_CHARS else np.zeros(grey.shape, bool)
    noise = 1.4826 * float(np.median(np.abs(g - cv2.medianBlur(grey, 3).astype(np.float32))))
    mean = cv2.blur(g, k, borderType=cv2.BORDER_REFLECT)
    square = cv2.blur(g * g, k, borderType=cv2.BORDER_REFLECT)
    local_std = np.sqrt(np.maximum(square - mean * mean, 0))
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8
    edge = np.hypot(gx, gy) >= EDGE_GRADIENT
    angle = np.degrees(np.arctan2(gy, gx)) % 90.0
    straight = edge & ((angle <= RECTILINEAR_DEG) | (angle >= 90.0 - RECTILINEAR_DEG))
    edges = cv2.blur(edge.astype(np.float32), k, borderType=cv2.BORDER_REFLECT)
    straight_share = cv2.blur(straight.astype(np.float32), k, borderType=cv2.BORDER_REFLECT) / np.maximum(edges, 1e-6)
    return KindMaps(cv2.blur(text.astype(np.float32), k, borderType=cv2.BORDER_REFLECT), noise >= NOISY_SIGMA, noise, text_chars, local_std, edges, straight_share)


def kinds(maps: KindMaps, rows: np.ndarray, cols: np.ndarray) -> list[str]:
    """Return the background kind (BACKGROUND_KINDS) at each (row, col) pixel of a frame, by the module's rule."""
    if maps.noisy:
        return ["noisy"] * len(rows)
    out = []
    for r, c in zip(rows, cols):
        std, edges, straight = maps.local_std[r, c], maps.edges[r, c], maps.rectilinear[r, c]
        if maps.text[r, c] > 0:
            out.append("text")
        elif std < SMOOTH_STD and edges < SMOOTH_EDGES:
            out.append("smooth sky")
        elif edges < CLOUD_EDGES:
            out.append("cloud")
        elif straight >= RECTILINEAR_SHARE:
            out.append("buildings")
        else:
            out.append("ground clutter")
    return out
