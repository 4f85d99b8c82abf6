"""The scorers' charts: the ROC of the mask scorer (a logarithmic x axis, drawn with OpenCV) and the box
scorer's Pd / false-alarms-per-frame curve (``plot_pd_fa``, drawn with matplotlib: its points carry threshold
labels that are placed and kept apart by matplotlib's annotation layout).

matplotlib takes about 0.5 s of CPU to import and 0.2 s to draw a figure; the scorer's whole
run on the 664 NUDT-SIRST test frames takes under a second, so its picture is drawn here with
OpenCV, which the scorer has loaded anyway (a few milliseconds). The chart is drawn at twice
its size and shrunk with area averaging, which smooths lines and text.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.files import atomic_write

SCALE = 2  # drawn at 2x, shrunk with INTER_AREA: anti-aliasing for free
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, GREY, LIGHT = (0, 0, 0), (110, 110, 110), (225, 225, 225)
BLUE, RED = (180, 119, 31), (40, 39, 214)  # BGR of matplotlib's tab:blue and tab:red


@dataclass
class Series:
    """One line (or one marker when it has a single point) and its legend label; colour in BGR."""

    x: np.ndarray
    y: np.ndarray
    label: str
    colour: tuple[int, int, int] = BLUE
    marker: bool = False


def _text(image: np.ndarray, text: str, origin: tuple[int, int], size: float, colour=BLACK,
          anchor: str = "left") -> None:
    """Draw text with its baseline at origin; anchor left, centre or right."""
    (w, _), _ = cv2.getTextSize(text, FONT, size, SCALE)
    x = origin[0] - (w if anchor == "right" else w // 2 if anchor == "centre" else 0)
    cv2.putText(image, text, (x, origin[1]), FONT, size, colour, SCALE, cv2.LINE_AA)


def _vertical_text(image: np.ndarray, text: str, centre: tuple[int, int], size: float) -> None:
    """Draw text turned 90 degrees anticlockwise, centred at centre (the y axis label)."""
    (w, h), base = cv2.getTextSize(text, FONT, size, SCALE)
    patch = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(patch, text, (2, h + 2), FONT, size, BLACK, SCALE, cv2.LINE_AA)
    patch = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0, x0 = centre[1] - patch.shape[0] // 2, centre[0] - patch.shape[1] // 2
    region = image[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]]
    np.minimum(region, patch[:region.shape[0], :region.shape[1]], out=region)


def log_chart(series: list[Series], x_label: str, y_label: str, title: str, y_range: tuple[float, float] = (0, 1.02),
              size: tuple[int, int] = (600, 480)) -> np.ndarray:
    """Return a BGR uint8 image (size = width x height) of the series over a log x axis (points with x > 0)."""
    width, height = size[0] * SCALE, size[1] * SCALE
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 78 * SCALE, width - 18 * SCALE, 34 * SCALE, height - 52 * SCALE
    xs = np.concatenate([s.x[s.x > 0] for s in series] or [np.array([1e-6, 1e-3])])
    if xs.size == 0:
        xs = np.array([1e-6, 1e-3])
    lo, hi = math.floor(math.log10(xs.min())), math.ceil(math.log10(xs.max()))
    hi = max(hi, lo + 1)

    def px(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = (np.log10(x) - lo) / (hi - lo)
        v = (np.asarray(y, float) - y_range[0]) / (y_range[1] - y_range[0])
        return np.stack([left + u * (right - left), bottom - v * (bottom - top)], axis=1)

    for decade in range(lo, hi + 1):  # grid: every decade and its 2..9 multiples
        for k in range(1, 10) if decade < hi else (1,):
            x = int(round(px(np.array([k * 10.0 ** decade]), [0])[0, 0]))
            cv2.line(image, (x, top), (x, bottom), LIGHT if k > 1 else (200, 200, 200), SCALE // 2 + (k == 1))
        x = int(round(px(np.array([10.0 ** decade]), [0])[0, 0]))
        cv2.line(image, (x, bottom), (x, bottom + 6 * SCALE), BLACK, SCALE)
        _text(image, f"1e{decade}", (x, bottom + 24 * SCALE), 0.45 * SCALE, anchor="centre")
    for y in np.arange(0, y_range[1] + 1e-9, 0.2):
        v = int(round(px(np.array([1.0 ** 0]), [y])[0, 1]))
        cv2.line(image, (left, v), (right, v), LIGHT, SCALE // 2 + 1)
        cv2.line(image, (left - 6 * SCALE, v), (left, v), BLACK, SCALE)
        _text(image, f"{y:.1f}", (left - 10 * SCALE, v + 5 * SCALE), 0.45 * SCALE, anchor="right")
    cv2.rectangle(image, (left, top), (right, bottom), BLACK, SCALE)

    legend = []
    for s in series:
        keep = s.x > 0
        points = px(s.x[keep], s.y[keep])
        if not len(points):
            continue
        pts = np.round(points * 16).astype(np.int32)  # 4 fractional bits: sub-pixel positions
        if s.marker:
            for p in pts:
                cv2.circle(image, (int(p[0]), int(p[1])), (6 * SCALE) << 4, s.colour, -1, cv2.LINE_AA, 4)
        else:
            cv2.polylines(image, [pts.reshape(-1, 1, 2)], False, s.colour, 2 * SCALE, cv2.LINE_AA, 4)
        legend.append(s)
    for i, s in enumerate(legend):  # legend, bottom right
        y = bottom - (len(legend) - i) * 24 * SCALE + 6 * SCALE
        x = right - 190 * SCALE
        if s.marker:
            cv2.circle(image, (x + 14 * SCALE, y - 5 * SCALE), 6 * SCALE, s.colour, -1, cv2.LINE_AA)
        else:
            cv2.line(image, (x, y - 5 * SCALE), (x + 28 * SCALE, y - 5 * SCALE), s.colour, 2 * SCALE, cv2.LINE_AA)
        _text(image, s.label, (x + 36 * SCALE, y), 0.45 * SCALE)
    _text(image, x_label, ((left + right) // 2, height - 10 * SCALE), 0.45 * SCALE, anchor="centre")
    _vertical_text(image, y_label, (16 * SCALE, (top + bottom) // 2), 0.45 * SCALE)
    _text(image, title, ((left + right) // 2, top - 12 * SCALE), 0.42 * SCALE, anchor="centre")
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def import_matplotlib() -> None:
    """Import the Agg canvas and Figure (about 0.5 s of CPU), so that a thread can overlap the import with scoring."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def plot_pd_fa(path: str | os.PathLike, report: dict) -> Path:
    """Write the Pd / false-alarms-per-frame curve (points labelled by threshold) as a PNG atomically; return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional heavy dependency (0.5 s): imported here
    from matplotlib.figure import Figure

    curve = report["curve"]
    fa = np.array([np.nan if v is None else v for v in curve["fa_per_frame"]], np.float64)
    pd = np.array([np.nan if v is None else v for v in curve["pd"]], np.float64)
    ok = np.array(curve["meaningful"], bool)
    figure = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(fa[ok], pd[ok], "o-", color="tab:blue", label=f"from {curve['source']}")
    if (~ok).any():
        axes.plot(fa[~ok], pd[~ok], "o", mfc="none", color="grey",
                  label=f"t < {curve['meaningful_from']:g}: not meaningful without maps")
    groups: dict[tuple[float, float], list[float]] = {}  # coinciding points get one label, "t1-t2"
    for t, x, y, good in zip(curve["thresholds"], fa, pd, ok):
        if good and np.isfinite(x) and np.isfinite(y):
            groups.setdefault((float(x), float(y)), []).append(t)
    for (x, y), ts in groups.items():
        text = f"{ts[0]:g}" if len(ts) == 1 else f"{ts[0]:g}-{ts[-1]:g}"
        axes.annotate(text, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    axes.set_xlabel("false alarms per frame")
    axes.set_ylabel("Pd (targets with a detection in the box + 2 px)")
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=7)
    title = f"Pd / FA over thresholds ({curve['source']})"
    if curve["source"] == "peaks":
        title += f": only t >= {curve['meaningful_from']:g} meaningful (no maps)"
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return atomic_write(path, lambda f: figure.savefig(f, format="png"))
