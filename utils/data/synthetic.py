"""Synthetic infrared small-target scenes, deterministic by seed, with exact masks.

A scene is a low-rank-like background plus sparse small targets, the model LRRNet is built on:

- background (grey levels 0-255): a sky with a vertical and horizontal gradient, smooth cloud
  (low-pass noise: random grids upsampled bicubically, summed over octaves), and, in most
  scenes, a horizon (a gently undulating edge) with sea (horizontal streaks) or terrain
  (rougher texture) below it;
- sensor noise: white Gaussian noise (sigma 1.5-4 grey levels) and a weak column pattern;
- 1-5 targets: 2-D Gaussian blobs, slightly elliptical and rotated, whose half-maximum
  diameter is 3-9 px; each blob's peak is ``scr`` times the standard deviation of the local
  background (signal-to-clutter ratio, SCR, drawn in 3-8) above the local mean;
- mask: exactly the pixels where a blob exceeds ``MASK_FRACTION`` of its own peak.

``write_dataset`` writes scenes in the folder-split layout (``trainval/`` and ``test/`` with
``images/`` and ``masks/``), which ``utils.data.IRSTDDataset`` reads.
Command line: ``python -m utils.synthetic --out DIR [--n-trainval 64 --n-test 32 --seed 0]``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.cli import ArgumentParser, BoolFlag, fail
from utils.files import write_json, write_png

MASK_FRACTION = 0.5  # mask = blob above half its peak: the blob's full width at half maximum
DIAMETER_PX = (3.0, 9.0)  # half-maximum diameter of a target
SCR_RANGE = (3.0, 8.0)  # peak above local mean, in local standard deviations
NOISE_SIGMA = (1.5, 4.0)  # sensor noise, grey levels
MAX_TARGETS = 5
EDGE_MARGIN_PX = 12  # target centres stay this far from the border
MIN_SEPARATION_PX = 20  # between target centres
CLUTTER_WINDOW_PX = 15  # half-size of the window the local mean and std are measured in
FAINT_DIAMETER_PX = (1.5, 6.0)  # a faint point target's half-maximum diameter (paste_targets' faint share)
FAINT_PEAK = (6.0, 40.0)  # its peak in grey levels above the background, drawn log-uniformly, whatever the clutter
MIN_PEAK = 4.0  # the least peak of a pasted target, grey levels
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(1.0 / MASK_FRACTION))  # diameter at MASK_FRACTION of peak / sigma
SYNTHETIC_JSON = "synthetic.json"  # what the generator wrote (seed, sizes), beside the scenes
SCENE_NAME = re.compile(r"[01]\d{5}\.png")  # a scene: split id (0 trainval, 1 test), index in five digits


def _lowpass(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int], octaves: int) -> np.ndarray:
    """Return smooth noise, H x W float32 of unit std: random grids upsampled bicubically, summed over octaves."""
    out = np.zeros((height, width), np.float32)
    rows, cols = cells
    for octave in range(octaves):
        grid = rng.standard_normal((rows * 2**octave + 1, cols * 2**octave + 1)).astype(np.float32)
        out += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * 0.5**octave
    return (out - out.mean()) / (out.std() + 1e-6)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Return a clean background, H x W float32 grey levels: sky gradient, cloud, maybe a horizon over sea/terrain."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    sky = rng.uniform(60, 140) + rng.uniform(-40, 40) * rows + rng.uniform(-15, 15) * cols
    cloud = _lowpass(rng, height, width, (2, 2), 4)
    cover = rng.uniform(-0.5, 1.0)  # how much of the sky is cloud
    cloud = np.clip(cloud - cover, 0.0, None)  # patches of cloud on clear sky
    sky = sky + rng.uniform(5, 35) * cloud
    kind = rng.choice(["sky", "sea", "terrain"], p=[0.35, 0.35, 0.3])
    if kind == "sky":
        return sky.astype(np.float32)
    horizon = rng.uniform(0.45, 0.85) * height
    tilt = rng.uniform(-0.05, 0.05) * height * (cols[0] - 0.5)
    wobble = (rng.uniform(1, 4) if kind == "sea" else rng.uniform(4, 16)) * _lowpass(rng, 1, width, (1, 3), 3)[0]
    edge = horizon + tilt + wobble  # horizon row per column
    below = (np.arange(height, dtype=np.float32)[:, None] - edge[None, :]).clip(-1.0, 1.0) * 0.5 + 0.5  # 1-px soft edge
    level = rng.uniform(30, 150)
    if kind == "sea":
        streaks = _lowpass(rng, height, width, (12, 1), 2)  # long horizontal swell
        ground = level + rng.uniform(3, 10) * streaks + rng.uniform(-20, 20) * rows
    else:
        ground = level + rng.uniform(8, 25) * _lowpass(rng, height, width, (4, 4), 4) + rng.uniform(-25, 25) * rows
    return (sky * (1.0 - below) + ground * below).astype(np.float32)


def _place(rng: np.random.Generator, n: int, height: int, width: int) -> list[tuple[float, float]]:
    """Return up to n sub-pixel target centres (row, col), inside the margin and apart from each other."""
    centres: list[tuple[float, float]] = []
    for _ in range(50 * n):
        if len(centres) == n:
            break
        row = rng.uniform(EDGE_MARGIN_PX, height - EDGE_MARGIN_PX)
        col = rng.uniform(EDGE_MARGIN_PX, width - EDGE_MARGIN_PX)
        if all((row - r) ** 2 + (col - c) ** 2 >= MIN_SEPARATION_PX**2 for r, c in centres):
            centres.append((row, col))
    return centres


def make_scene(
    seed: int, height: int = 256, width: int = 256, n_targets: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame uint8 H x W grey levels, mask uint8 H x W in {0, 1}) of one synthetic scene; same seed, same scene.

    ``n_targets`` None draws 1-5; on a small frame fewer may fit (centres 20 px apart, 12 px from the border).
    """
    if height < 2 * EDGE_MARGIN_PX + 1 or width < 2 * EDGE_MARGIN_PX + 1:
        raise ValueError(f"scene {width}x{height} px is too small: both sides must exceed {2 * EDGE_MARGIN_PX} px")
    if n_targets is not None and not 0 <= n_targets <= MAX_TARGETS:
        raise ValueError(f"n_targets={n_targets} must be in 0..{MAX_TARGETS} (or None for a random 1..{MAX_TARGETS})")
    rng = np.random.default_rng(seed)
    clean = _background(rng, height, width)
    sigma_noise = rng.uniform(*NOISE_SIGMA)
    noise = sigma_noise * rng.standard_normal((height, width)).astype(np.float32)
    noise += rng.uniform(0.0, 1.0) * rng.standard_normal((1, width)).astype(np.float32)  # column fixed pattern
    observed = clean + noise
    n = int(rng.integers(1, MAX_TARGETS + 1)) if n_targets is None else n_targets
    signal = np.zeros((height, width), np.float32)
    mask = np.zeros((height, width), np.uint8)
    for row, col in _place(rng, n, height, width):
        window, shape = _blob(rng, row, col, height, width)
        scr = rng.uniform(*SCR_RANGE)
        peak = scr * float(observed[_clutter_window(row, col, height, width)].std())
        signal[window] += peak * shape
        mask[window] |= (shape > MASK_FRACTION).astype(np.uint8)
    frame = np.clip(np.rint(observed + signal), 0, 255).astype(np.uint8)
    return frame, mask


def _blob(rng: np.random.Generator, row: float, col: float, height: int, width: int,
          diameters: tuple[float, float] = DIAMETER_PX) -> tuple[tuple[slice, slice], np.ndarray]:
    """Return (window, shape): a random target's unit-peak Gaussian blob centred at (row, col), cut to the frame.

    Half-maximum diameter drawn in ``diameters``, axes 0.8-1.25 x that, random orientation.
    """
    diameter = rng.uniform(*diameters)
    sigma = diameter / FWHM_PER_SIGMA
    sx, sy = sigma * rng.uniform(0.8, 1.25), sigma * rng.uniform(0.8, 1.25)
    angle = rng.uniform(0.0, np.pi)
    half = int(np.ceil(4 * max(sx, sy)))  # the blob is below 1e-3 of its peak beyond this
    r0, r1 = max(0, int(row) - half), min(height, int(row) + half + 2)
    c0, c1 = max(0, int(col) - half), min(width, int(col) + half + 2)
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dy, dx = yy - row, xx - col
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    shape = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))  # peak 1 at the (sub-pixel) centre
    return (slice(r0, r1), slice(c0, c1)), shape


def _clutter_window(row: float, col: float, height: int, width: int) -> tuple[slice, slice]:
    """Return the window around (row, col) in which a target's signal-to-clutter ratio is measured."""
    return (slice(max(0, int(row) - CLUTTER_WINDOW_PX), min(height, int(row) + CLUTTER_WINDOW_PX + 1)),
            slice(max(0, int(col) - CLUTTER_WINDOW_PX), min(width, int(col) + CLUTTER_WINDOW_PX + 1)))


def paste_targets(frame: np.ndarray, busy: np.ndarray, rng: np.random.Generator, n: int, faint: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame, mask): up to n synthetic targets pasted onto a real frame, and their exact mask.

    ``frame``: H x W float32 in [0, 1] (not modified); ``busy``: H x W bool, True where no target
    may go (real targets, unknown box pixels). Targets follow ``make_scene``'s model (half-maximum
    diameter 3-9 px, SCR 3-8 against the local clutter of the real frame, at least MIN_PEAK grey
    levels), centres at least EDGE_MARGIN_PX from the border and MIN_SEPARATION_PX from busy pixels
    and each other; the mask holds the pixels above MASK_FRACTION of their own peak. With
    probability ``faint`` a target is instead a faint point: half-maximum diameter FAINT_DIAMETER_PX
    and a peak of FAINT_PEAK grey levels (log-uniform) whatever the clutter around it, the targets
    a clutter-relative contrast rarely makes on smooth sky. The result is clipped to [0, 1] and
    quantised to 8 bits like the frames it joins.
    """
    height, width = frame.shape
    mask = np.zeros((height, width), np.uint8)
    if height < 2 * EDGE_MARGIN_PX + 1 or width < 2 * EDGE_MARGIN_PX + 1 or n < 1:
        return frame, mask
    free = ~cv2.dilate(busy.astype(np.uint8), np.ones((2 * MIN_SEPARATION_PX + 1,) * 2, np.uint8)).astype(bool)
    scaled = frame.astype(np.float32) * 255.0
    signal = np.zeros((height, width), np.float32)
    for row, col in _place(rng, 4 * n, height, width):
        if not free[int(row), int(col)]:
            continue
        if faint > 0 and rng.uniform() < faint:      # (no draw when faint is 0: the default stream is kept)
            window, shape = _blob(rng, row, col, height, width, FAINT_DIAMETER_PX)
            peak = float(np.exp(rng.uniform(*np.log(FAINT_PEAK))))
        else:
            window, shape = _blob(rng, row, col, height, width)
            scr = rng.uniform(*SCR_RANGE)
            peak = max(scr * float(scaled[_clutter_window(row, col, height, width)].std()), MIN_PEAK)
        signal[window] += peak * shape
        mask[window] |= (shape > MASK_FRACTION).astype(np.uint8)
        n -= 1
        if n == 0:
            break
    out = np.clip(np.rint(scaled + signal), 0, 255) / np.float32(255.0)
    return out.astype(np.float32), mask


def _scene_seed(seed: int, split: int, i: int) -> int:
    """Return the seed of scene i of a split (0 trainval, 1 test): independent streams, no collisions."""
    return int(np.random.SeedSequence([seed, split, i]).generate_state(1, np.uint64)[0])


def write_dataset(
    root: str | os.PathLike, n_trainval: int = 64, n_test: int = 32, size: tuple[int, int] = (256, 256), seed: int = 0
) -> Path:
    """Write synthetic scenes in the folder-split layout (size = (height, width) px, masks 0/255 PNG); return root."""
    root = Path(root)
    height, width = size
    for split_id, (split, count) in enumerate((("trainval", n_trainval), ("test", n_test))):
        if count < 1:
            raise ValueError(f"n_{split}={count} must be at least 1")
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            frame, mask = make_scene(_scene_seed(seed, split_id, i), height, width)
            name = f"{split_id}{i:05d}.png"
            write_png(root / split / "images" / name, frame)
            write_png(root / split / "masks" / name, mask * np.uint8(255))
    meta = {
        "generator": "utils.synthetic",
        "seed": seed,
        "n_trainval": n_trainval,
        "n_test": n_test,
        "size_hw": [height, width],
        "diameter_px": DIAMETER_PX,
        "scr": SCR_RANGE,
        "mask_fraction": MASK_FRACTION,
    }
    write_json(root / SYNTHETIC_JSON, meta)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Write a synthetic dataset from the command line; return 0."""
    parser = ArgumentParser(
        prog="python -m utils.synthetic", description="Write synthetic infrared scenes (folder-split layout)."
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    parser.add_argument("--n-trainval", type=int, default=64)
    parser.add_argument("--n-test", type=int, default=32)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action=BoolFlag,
                        help="replace the scenes of an earlier python -m utils.synthetic in --out (nothing else)")
    args = parser.parse_args(argv)
    if min(args.n_trainval, args.n_test, args.height, args.width) < 1:
        parser.error("--n-trainval, --n-test, --height and --width must be at least 1")
    out = args.out
    if out.exists() and not out.is_dir():
        return fail(f"--out {out} is a file: pass a folder (new or empty)")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SYNTHETIC_JSON).is_file():
            return fail(f"--out {out} is not empty and holds no {SYNTHETIC_JSON} (not written by utils.synthetic): "
                        "pass a new or empty --out (nothing was written)")
        if not args.overwrite:
            return fail(f"--out {out} already holds generated scenes: pass --overwrite to replace them, or another "
                        "--out (nothing was written)")
        for old in out.glob("*/*/*.png"):   # the earlier scenes alone: a smaller set must not keep its extra frames
            if old.parent.name in ("images", "masks") and old.parent.parent.name in ("trainval", "test") \
                    and SCENE_NAME.fullmatch(old.name):
                old.unlink()
    root = write_dataset(out, args.n_trainval, args.n_test, (args.height, args.width), args.seed)
    print(f"wrote {args.n_trainval} trainval + {args.n_test} test scenes to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
