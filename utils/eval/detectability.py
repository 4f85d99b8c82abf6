"""Counting a detectability map: Wilson intervals, the reference detectors, cells, the faintest contrast at Pd 0.9,
the tables and the heat map of ``python -m utils.detectability`` (docs/results.md#detectability). No torch.

Reference detectors, each run on the same frames as the model and scored by the same box rule
(``utils.eval.boxes.inside_grown_box``; their detections are the plateaus of local maxima of
their statistic, ``peaks``):

- the matched filter (``matched_filter``): the frame minus its local mean (a box filter of the
  target's size + ``MF_BACKGROUND_PX``) correlated with the target's own profile, divided by the
  frame's robust noise (1.4826 x MAD of that difference) and the profile's norm. On white Gaussian
  noise of known sigma this is the optimal detector of a known shape; its value at the target is
  N(contrast x ||profile|| / sigma, 1) (``tests/test_detectability.py`` checks the theory).
- the top-hat (``top_hat``): the white (hot) or black (cold) morphological top-hat with a square
  element ``TOPHAT_MARGIN_PX`` wider than the target, in grey levels: the classical baseline.

Their thresholds are set so that their false alarms per frame on the untouched backgrounds equal
the model's (``threshold_for``): the k-th largest of their peaks outside every label, k the model's
number of false alarms there (k = 0: above the largest, no false alarm).

The white-noise limit (``limit_rows``): the Pd of the matched filter if each target's background were
white Gaussian noise of its ring's std, at a threshold h giving the model's false alarms per frame on
white noise (h = Phi^-1(1 - FA per frame / pixels per frame), at least one false alarm in the set):
Pd = Phi(SCR x ||profile|| - h), at each cell's median SCR. It needs no frames: it says what the
contrast of a cell would allow on an ideal background.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Sequence

import cv2
import numpy as np

from utils.eval.boxes import inside_grown_box
from utils.files import atomic_write

WILSON_Z = 1.959964  # 95 % two-sided
PD_TARGET = 0.9
MF_BACKGROUND_PX = 16
NOISE_FLOOR = 0.5  # grey levels: the matched filter's noise is at least this (8-bit quantisation), else a frame whose
# residual is mostly exactly 0 (flat or saturated areas) would have a robust sigma of 0 and scores of millions
TOPHAT_MARGIN_PX = 4
PEAKS_KEPT = 256  # per frame and detector: the largest peaks outside labels kept for choosing a threshold
DETECTORS = ("model", "matched filter", "top-hat")
LIMIT = "white-noise limit"


def wilson(successes: int, n: int, z: float = WILSON_Z) -> tuple[float | None, float | None]:
    """Return the Wilson score interval (low, high) of a proportion successes / n (fractions); (None, None) for n = 0."""
    if n == 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- reference detectors


def robust_sigma(values: np.ndarray) -> float:
    """Return 1.4826 x the median absolute deviation of the values (grey levels), at least 1e-6."""
    values = np.asarray(values, np.float64).ravel()
    return max(1.4826 * float(np.median(np.abs(values - np.median(values)))), 1e-6)


def matched_filter(grey: np.ndarray, profile: np.ndarray, polarity: int, sigma: float | None = None) -> np.ndarray:
    """Return the matched-filter statistic (float32 H x W, units of the noise sigma) of a target of this profile and
    polarity centred at each pixel; ``sigma`` (grey levels) given, or the frame's robust noise."""
    g = np.asarray(grey, np.float32)
    side = profile.shape[0] + MF_BACKGROUND_PX
    residual = g - cv2.blur(g, (side, side), borderType=cv2.BORDER_REFLECT)
    sigma = max(robust_sigma(residual), NOISE_FLOOR) if sigma is None else sigma
    kernel = (profile / np.linalg.norm(profile)).astype(np.float32)
    # correlation; an even kernel's anchor is its lower centre, so the peak lies half a pixel off the support's centre
    score = cv2.filter2D(residual, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
    return polarity * score / np.float32(sigma)


def top_hat(grey: np.ndarray, size: int, polarity: int) -> np.ndarray:
    """Return the white (polarity +1) or black (-1) top-hat of the frame, float32 grey levels, with a square element of
    size + TOPHAT_MARGIN_PX px."""
    element = np.ones((size + TOPHAT_MARGIN_PX, size + TOPHAT_MARGIN_PX), np.uint8)
    op = cv2.MORPH_TOPHAT if polarity > 0 else cv2.MORPH_BLACKHAT
    return cv2.morphologyEx(np.asarray(grey, np.uint8), op, element).astype(np.float32)


def peaks(score: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (x, y, value) of the positive local maxima of a score map (centre coordinates, px): each plateau of
    pixels equal to their window x window maximum is one peak at its centroid, with the plateau's value."""
    window = max(3, window | 1)
    top = cv2.dilate(score, np.ones((window, window), np.uint8))
    binary = ((score >= top) & (score > 0)).astype(np.uint8)
    n, labels, _, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    value = np.zeros(n, np.float64)
    np.maximum.at(value, labels.ravel(), score.ravel().astype(np.float64))
    return centroids[1:, 0], centroids[1:, 1], value[1:]


def any_inside(x: np.ndarray, y: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return bool (len(x),): each point (centre coordinates) inside at least one of the N x 4 edge boxes grown by
    the box rule's 2 px."""
    if len(x) == 0 or len(boxes) == 0:
        return np.zeros(len(x), bool)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n, m = len(x), len(boxes)
    inside = inside_grown_box(np.repeat(x, m), np.repeat(y, m), np.tile(boxes, (n, 1)))
    return inside.reshape(n, m).any(axis=1)


def detected_boxes(x: np.ndarray, y: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return bool (N,): each of the N x 4 edge boxes holds at least one of the points inside its grown box."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(x) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), bool)
    n, m = len(boxes), len(x)
    inside = inside_grown_box(np.tile(x, n), np.tile(y, n), np.repeat(boxes, m, axis=0))
    return inside.reshape(n, m).any(axis=1)


def threshold_for(values: Sequence[np.ndarray], k: int) -> float:
    """Return the threshold (detect strictly above it) leaving exactly the k largest of the values above it: the
    (k+1)-th largest value, or 0 (every peak is positive) when there are no more than k values."""
    flat = np.sort(np.concatenate([np.asarray(v, np.float64).ravel() for v in values] or [np.zeros(0)]))[::-1]
    return float(flat[k]) if k < flat.size else 0.0


def noise_threshold(fa_per_frame: float, pixels_per_frame: float) -> float:
    """Return h (in noise sigmas) at which white Gaussian noise gives fa_per_frame false alarms a frame (one test per
    pixel): Phi^-1(1 - fa_per_frame / pixels_per_frame)."""
    return NormalDist().inv_cdf(1.0 - fa_per_frame / pixels_per_frame)


def limit_rows(rows: Sequence[dict], norms: dict[str, float], h: float) -> list[dict]:
    """Return the white-noise limit's rows beside the model's: Pd = Phi(median SCR x ||profile|| - h) per cell
    (norms: {shape name: the L2 norm of its peak-1 profile}); detected and the interval are None."""
    out = []
    for r in rows:
        if r["detector"] == "model":
            pd = NormalDist().cdf(r["median_scr"] * norms[r["shape"]] - h)
            out.append({**r, "detector": LIMIT, "detected": None, "pd": pd, "pd_low": None, "pd_high": None})
    return out


# ----------------------------------------------------------------------------- cells and tables


@dataclass
class Cell:
    """The counts of one cell of the map: targets pasted, detected per detector, and their SCRs."""

    n: int = 0
    hits: dict = field(default_factory=lambda: {d: 0 for d in DETECTORS})
    scr: list = field(default_factory=list)


def cell_rows(records: Sequence[dict], detectors: Sequence[str] = DETECTORS) -> list[dict]:
    """Return the CSV rows of pasted-target records (keys shape, size, polarity, kind, contrast, scr and one bool per
    detector): one row per detector x shape x polarity x kind (and kind "all") x contrast, with n, detected, pd and its
    Wilson interval, and the median SCR."""
    cells: dict[tuple, Cell] = {}
    for r in records:
        for kind in ("all", r["kind"]):
            cell = cells.setdefault((r["shape"], r["size"], r["polarity"], kind, r["contrast"]), Cell())
            cell.n += 1
            cell.scr.append(r["scr"])
            for d in detectors:
                cell.hits[d] += bool(r[d])
    rows = []
    for d in detectors:
        for (shape, size, polarity, kind, contrast), cell in cells.items():
            lo, hi = wilson(cell.hits[d], cell.n)
            rows.append({"detector": d, "shape": shape, "size_px": size, "polarity": polarity, "kind": kind,
                         "contrast": contrast, "n": cell.n, "detected": cell.hits[d], "pd": cell.hits[d] / cell.n,
                         "pd_low": lo, "pd_high": hi, "median_scr": float(np.median(cell.scr))})
    order = {"all": -1}
    return sorted(rows, key=lambda r: (DETECTORS.index(r["detector"]) if r["detector"] in DETECTORS else 9,
                                       r["shape"], r["polarity"], order.get(r["kind"], 0), r["kind"], r["contrast"]))


def faintest(rows: Sequence[dict], target: float = PD_TARGET) -> dict[tuple, dict]:
    """Return {(detector, shape, polarity, kind): {"contrast", "scr", "n"}}: the faintest contrast of the grid from
    which Pd >= target at it and at every brighter contrast with targets (contrast None: never reached)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["detector"], r["shape"], r["polarity"], r["kind"]), []).append(r)
    out = {}
    for key, cells in groups.items():
        cells = sorted(cells, key=lambda r: r["contrast"])
        found = None
        for r in reversed(cells):
            if r["pd"] < target:
                break
            found = r
        out[key] = {"contrast": None if found is None else found["contrast"],
                    "scr": None if found is None else found["median_scr"],
                    "n": sum(r["n"] for r in cells)}
    return out


def format_faintest(table: dict[tuple, dict], shapes: Sequence[str], kinds: Sequence[str], polarity: int,
                    detector: str = "model") -> str:
    """Return a markdown table: rows shapes, columns kinds, each cell the faintest contrast (grey levels) at Pd 0.9
    and its median SCR, '>max' where the grid never reaches it, '' where the kind has no targets."""
    lines = ["| shape | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for shape in shapes:
        cells = []
        for kind in kinds:
            entry = table.get((detector, shape, polarity, kind))
            if entry is None:
                cells.append("")
            elif entry["contrast"] is None:
                cells.append(f"never (n={entry['n']})")
            else:
                cells.append(f"{entry['contrast']:g} (SCR {entry['scr']:.1f})")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_check_rows(real: Sequence[dict], size_edges: Sequence[float], contrast_edges: Sequence[float]) -> list[dict]:
    """Return one row per (size bin, contrast bin) with targets, and a last row 'all': real and pasted (twin) targets'
    n, Pd and Wilson interval, and Pd pasted - Pd real. ``real``: dicts with size (sqrt of the half-maximum area,
    px), contrast (grey levels), real and twin (detected, bool) and twin_size, twin_contrast (measured the same way)."""
    def bin_of(value: float, edges: Sequence[float]) -> int:
        return int(np.searchsorted(np.asarray(edges), value, side="right")) - 1

    def label(i: int, edges: Sequence[float]) -> str:
        hi = edges[i + 1] if i + 1 < len(edges) else None
        return f"{edges[i]:g}-{hi:g}" if hi is not None else f">= {edges[i]:g}"

    real_cells: dict[tuple, list[bool]] = {}
    twin_cells: dict[tuple, list[bool]] = {}
    for r in real:
        real_cells.setdefault((bin_of(r["size"], size_edges), bin_of(r["contrast"], contrast_edges)), []).append(r["real"])
        if r.get("twin") is not None:
            key = (bin_of(r["twin_size"], size_edges), bin_of(r["twin_contrast"], contrast_edges))
            twin_cells.setdefault(key, []).append(r["twin"])
    rows = []
    for key in sorted(set(real_cells) | set(twin_cells)):
        if key[0] < 0 or key[1] < 0:
            continue
        rows.append(_compare(f"{label(key[0], size_edges)} px", f"{label(key[1], contrast_edges)}",
                             real_cells.get(key, []), twin_cells.get(key, [])))
    rows.append(_compare("all", "all", [r["real"] for r in real], [r["twin"] for r in real if r.get("twin") is not None]))
    return rows


def _compare(size: str, contrast: str, real: list[bool], twin: list[bool]) -> dict:
    """Return a real-check row: n, Pd and Wilson interval of real and pasted targets, and the difference."""
    row = {"size": size, "contrast": contrast}
    for name, hits in (("real", real), ("pasted", twin)):
        lo, hi = wilson(sum(hits), len(hits))
        row.update({f"n_{name}": len(hits), f"pd_{name}": sum(hits) / len(hits) if hits else None,
                    f"pd_{name}_low": lo, f"pd_{name}_high": hi})
    row["difference"] = (row["pd_pasted"] - row["pd_real"]
                         if row["pd_pasted"] is not None and row["pd_real"] is not None else None)
    return row


def format_real_check(rows: Sequence[dict]) -> str:
    """Return the real-check rows as a markdown table (Pd in %, 95 % Wilson intervals)."""
    def pd(row: dict, name: str) -> str:
        if row[f"pd_{name}"] is None:
            return "-"
        return (f"{100 * row[f'pd_{name}']:.0f} [{100 * row[f'pd_{name}_low']:.0f}, "
                f"{100 * row[f'pd_{name}_high']:.0f}]")

    lines = ["| size (sqrt half-max area) | contrast (grey levels) | real n | real Pd % | pasted n | pasted Pd % | "
             "pasted - real (points) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "-" if r["difference"] is None else f"{100 * r['difference']:+.0f}"
        lines.append(f"| {r['size']} | {r['contrast']} | {r['n_real']} | {pd(r, 'real')} | {r['n_pasted']} | "
                     f"{pd(r, 'pasted')} | {diff} |")
    return "\n".join(lines)


def _panel(ax, rows: Sequence[dict], detector: str, polarity: int, shapes: Sequence[str], contrasts: Sequence[float],
           name_rows: bool, title: str):
    """Draw one map panel (Pd of every shape x contrast cell of a detector and polarity over all kinds, the number in
    each cell) on ax; return its image."""
    index = {(r["detector"], r["shape"], r["polarity"], r["contrast"]): r for r in rows if r["kind"] == "all"}
    grid = np.full((len(shapes), len(contrasts)), np.nan)
    for i, shape in enumerate(shapes):
        for j, c in enumerate(contrasts):
            r = index.get((detector, shape, polarity, c))
            if r is not None:
                grid[i, j] = r["pd"]
                ax.text(j, i, f"{100 * r['pd']:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if r["pd"] < 0.5 else "black")
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(contrasts)), [f"{c:g}" for c in contrasts], fontsize=7)
    ax.set_yticks(range(len(shapes)), shapes if name_rows else [], fontsize=7)
    ax.set_xlabel("peak contrast (grey levels)", fontsize=7)
    ax.set_title(title, fontsize=8)
    return image


def plot_side_by_side(path: str | os.PathLike, reports: Sequence[tuple[str, dict]]) -> Path:
    """Write the model's maps of several detectability reports ((label, report) pairs, one grid) side by side as a
    PNG atomically: one column per report, hot above cold, each titled with its false alarms a frame; return the
    path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional heavy dependency (0.5 s): imported here
    from matplotlib.figure import Figure

    shapes, contrasts = reports[0][1]["shapes"], reports[0][1]["contrasts"]
    for label, report in reports:
        if report["shapes"] != shapes or report["contrasts"] != contrasts:
            raise ValueError(f"report {label!r} has another grid than {reports[0][0]!r}: compare maps of one grid")
    polarities = [1 if p == "hot" else -1 for p in reports[0][1]["polarities"]]
    figure = Figure(figsize=(3.6 * len(reports) + 1.2, 0.3 * len(shapes) * len(polarities) + 1.0 * len(polarities)),
                    dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(polarities), len(reports), squeeze=False)
    image = None
    for i, polarity in enumerate(polarities):
        for j, (label, report) in enumerate(reports):
            title = (f"{label}, {'hot' if polarity > 0 else 'cold'}; false alarms/frame "
                     f"{report['fa_per_frame']:.3f}")
            image = _panel(axes[i][j], report["rows"], "model", polarity, shapes, contrasts, j == 0, title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="Pd (centroid in the box + 2 px)")
    figure.suptitle("the model's Pd of pasted targets on val backgrounds, all kinds", fontsize=8)
    return atomic_write(path, lambda f: figure.savefig(f, format="png"))


def plot_heatmap(path: str | os.PathLike, rows: Sequence[dict], shapes: Sequence[str], contrasts: Sequence[float],
                 polarities: Sequence[int], fa_per_frame: float | None, title: str) -> Path:
    """Write the map as a PNG atomically (one panel per detector and polarity: Pd of every shape x contrast cell over
    all background kinds, the number in each cell); return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional heavy dependency (0.5 s): imported here
    from matplotlib.figure import Figure

    detectors = [d for d in (*DETECTORS, LIMIT) if any(r["detector"] == d for r in rows)]
    panels = [(d, p) for p in polarities for d in detectors]
    figure = Figure(figsize=(3.6 * len(detectors) + 1.2, 0.3 * len(shapes) * len(polarities) + 1.0 * len(polarities)),
                    dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(polarities), len(detectors), squeeze=False)
    image = None
    for k, (detector, polarity) in enumerate(panels):
        image = _panel(axes[k // len(detectors)][k % len(detectors)], rows, detector, polarity, shapes, contrasts,
                       k % len(detectors) == 0, f"{detector}, {'hot' if polarity > 0 else 'cold'}")
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="Pd (centroid in the box + 2 px)")
    fa = "" if fa_per_frame is None else f"; false alarms per frame on the untouched backgrounds {fa_per_frame:.3f}"
    figure.suptitle(f"{title}{fa}", fontsize=8)
    return atomic_write(path, lambda f: figure.savefig(f, format="png"))
