"""False-alarm reviews: the CSV that ``python -m utils.review`` writes and a person fills in, read back to count
apart the false alarms that are real objects the labels do not box (``cal_from_mask.py --boxes --reviewed``).

Columns ``REVIEW_COLUMNS``; a verdict is "object" (a real object the labels do not box: a second bird,
a target labelled absent), "clutter" or empty (not reviewed). A false alarm is the reviewed one when
its centroid lies within ``REVIEW_RADIUS_PX`` of the row's, in the same frame; the nearest row decides.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from utils.data.frames import DataError
from utils.data.labels import read_csv_rows

REVIEW_COLUMNS = ("id", "video", "frame", "x", "y", "peak_prob", "absent", "verdict", "note")
VERDICTS = ("object", "clutter", "")  # object: a real object the labels do not box; "": not reviewed
REVIEW_RADIUS_PX = 3.0  # a false alarm is the reviewed one when its centroid lies this close, same frame


def read_review(path: str | Path) -> dict[tuple[str, int], list[tuple[float, float, str, str]]]:
    """Return {(video, frame): [(x, y, verdict, note), ...]} from a review CSV (REVIEW_COLUMNS; ``python -m utils.review``
    writes it, a person fills in the verdicts: object, clutter or empty)."""
    path = Path(path)
    rows = read_csv_rows(path, "review", "pass the false_alarms.csv that python -m utils.review wrote, with its verdicts "
                     "filled in")
    header = [h.strip() for h in rows[0]] if rows else []
    missing = [c for c in ("video", "frame", "x", "y", "verdict") if c not in header]
    if missing:
        raise DataError(f"review {path} line 1: no {', '.join(missing)} column(s): pass the false_alarms.csv "
                            "that python -m utils.review wrote")
    column = {name: header.index(name) for name in ("video", "frame", "x", "y", "verdict", "note") if name in header}
    review: dict[tuple[str, int], list[tuple[float, float, str, str]]] = {}
    for line, cells in enumerate(rows[1:], 2):
        if not cells or all(not c.strip() for c in cells):
            continue
        row = {name: (cells[k].strip() if k < len(cells) else "") for name, k in column.items()}
        where = f"review {path} line {line}"
        verdict = row["verdict"].lower()
        if verdict not in VERDICTS:
            raise DataError(f"{where}: verdict {row['verdict']!r} is not object, clutter or empty: fix the row")
        try:
            frame, x, y = int(row["frame"]), float(row["x"]), float(row["y"])
            valid = bool(row["video"]) and frame >= 0 and math.isfinite(x) and math.isfinite(y)
        except ValueError:
            valid = False
        if not valid:
            raise DataError(f"{where}: video, frame, x, y {row['video']!r}, {row['frame']!r}, {row['x']!r}, "
                                f"{row['y']!r} are not a name, a 0-based frame and two finite numbers: fix the row")
        review.setdefault((row["video"], frame), []).append((x, y, verdict, row.get("note", "")))
    return review


def nearest_review(review: dict, key: tuple[str, int], x: float, y: float,
                   radius: float = REVIEW_RADIUS_PX) -> tuple[float, float, str, str] | None:
    """Return the review row of frame ``key`` nearest to (x, y), whatever its verdict, when within radius px; else
    None. The nearest row decides: a false alarm on a clutter row stays clutter beside an object 2 px away."""
    rows = review.get(key)
    if not rows:
        return None
    d2 = ((np.asarray([r[:2] for r in rows], np.float64) - (x, y)) ** 2).sum(1)
    k = int(np.argmin(d2))
    return rows[k] if d2[k] <= radius ** 2 else None


def assign_review(review: dict, points) -> tuple[list, set]:
    """Return, for points (frame key, x, y), each one's nearest review row within REVIEW_RADIUS_PX (None when none
    is near), and the set of (frame key, (x, y)) of the review rows so taken."""
    hits, taken = [], set()
    for key, x, y in points:
        hit = nearest_review(review, key, x, y)
        hits.append(hit)
        if hit is not None:
            taken.add((key, hit[:2]))
    return hits, taken
