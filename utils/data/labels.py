"""Box labels: the one reader of ``video,frame,x,y,w,h`` CSV files, for training, scoring, review and summaries.

Rules (one set, whoever reads the file):
- The header is ``video,frame,x,y,w,h``; a UTF-8 byte-order mark (as spreadsheets write) is dropped, and
  so are empty fields after the sixth (a spreadsheet's trailing commas); blank rows are skipped.
- ``frame`` is the 0-based index in decoding order; at most one row (one target) per (video, frame).
- The box is in pixel-EDGE coordinates (pixel column i spans [i, i + 1)), finite, with w > 0 and
  h > 0; x, y, w, h all empty when the target is absent from the frame.
- Every bad row is listed with its line (the first 10, then the count) in one ``DataError``.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from utils.data.frames import DataError

Box = tuple[float, float, float, float]  # (x, y, w, h) px, pixel-edge coordinates
Labels = dict[tuple[str, int], "Box | None"]  # {(video, frame): box, or None when the target is absent}
LABEL_COLUMNS = ("video", "frame", "x", "y", "w", "h")
N_SHOWN = 10  # bad rows listed before the count


def frame_name(video: str, frame: int) -> str:
    """Return 'VIDEO:FRAME', the name of a labelled frame in messages and reports."""
    return f"{video}:{frame}"


def read_csv_rows(path: str | os.PathLike, what: str, fix: str) -> list[list[str]]:
    """Return a CSV file's rows (a UTF-8 byte-order mark dropped); DataError naming the file (as ``what``) and the
    fix when it cannot be read or is not UTF-8 CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.reader(handle))
    except OSError as error:
        raise DataError(f"cannot read {what} {path} ({error.strerror or error}): {fix}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{what} {path} is not UTF-8 CSV ({error}): save it as CSV UTF-8") from None


def parse_box(fields: list[str]) -> Box | None:
    """Return the box of a row's x, y, w, h fields, None when all four are empty; ValueError says what is wrong."""
    values = [f.strip() for f in fields]
    if all(not v for v in values):
        return None
    try:
        x, y, w, h = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"box {','.join(values)!r} is not four numbers (or four empty fields for an absent "
                         "target)") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"box {','.join(values)!r} is not finite")
    if w <= 0 or h <= 0:
        raise ValueError(f"box width and height must be positive, got w={w:g}, h={h:g}")
    return (x, y, w, h)


def _parse_row(row: list[str]) -> tuple[tuple[str, int], Box | None]:
    """Return ((video, frame), box or None) of one data row; ValueError says what is wrong."""
    if len(row) < 6 or (len(row) > 6 and any(f.strip() for f in row[6:])):
        raise ValueError(f"{len(row)} fields, expected 6 ({','.join(LABEL_COLUMNS)})")
    video, frame_text = row[0].strip(), row[1].strip()
    if not video:
        raise ValueError("the video field is empty")
    try:
        frame = int(frame_text)
    except ValueError:
        raise ValueError(f"frame {frame_text!r} is not an integer") from None
    if frame < 0:
        raise ValueError(f"frame {frame} is negative (frames are 0-based)")
    return (video, frame), parse_box(row[2:6])


def read_box_labels(path: str | os.PathLike, fix: str = "fix or remove these rows") -> Labels:
    """Return {(video, frame): box (x, y, w, h) px, pixel-edge coordinates, or None = target absent} of a label CSV.

    DataError (one line) names the file, every bad row with its line number and the fix.
    """
    path = Path(path)
    rows = read_csv_rows(path, "labels", "pass a box-label CSV (video,frame,x,y,w,h)")
    header = [h.strip() for h in rows[0]] if rows else []
    while header and not header[-1]:
        header.pop()
    if header != list(LABEL_COLUMNS):
        raise DataError(f"labels {path} line 1: header is {','.join(header) or 'empty'!r}, expected "
                        f"{','.join(LABEL_COLUMNS)}: pass a box-label CSV, or fix its header")
    labels: Labels = {}
    first_line: dict[tuple[str, int], int] = {}
    bad: list[str] = []
    for line, row in enumerate(rows[1:], 2):
        if not any(f.strip() for f in row):
            continue
        try:
            key, box = _parse_row(row)
            if key in first_line:
                raise ValueError(f"{frame_name(*key)} is labelled again (first on line {first_line[key]}; at most "
                                 "one target per frame)")
        except ValueError as error:
            bad.append(f"line {line}: {error}")
            continue
        first_line[key] = line
        labels[key] = box
    check_rows(path, labels, bad, fix, "one row per labelled frame")
    return labels



def check_rows(path, labels: dict, bad: list[str], fix: str, one_row_per: str) -> None:
    """Raise DataError listing the first bad rows of a label file (with the fix), or saying it has no rows."""
    if bad:
        shown = "; ".join(bad[:N_SHOWN]) + (f"; ... {len(bad) - N_SHOWN} more" if len(bad) > N_SHOWN else "")
        raise DataError(f"labels {path} has {len(bad)} bad row(s): {shown}; {fix}")
    if not labels:
        raise DataError(f"labels {path} has no rows: pass a box-label CSV with {one_row_per}")

def by_video(labels: Labels) -> dict[str, dict[int, Box | None]]:
    """Return {video: {frame: box or None}} of read_box_labels' flat mapping (frames in file order)."""
    grouped: dict[str, dict[int, Box | None]] = {}
    for (video, frame), box in labels.items():
        grouped.setdefault(video, {})[frame] = box
    return grouped


# ----------------------------------------------------------------------------- still frames
# The same reader for box labels of still frames (a folder of images): ``frame,x,y,w,h``, several rows a frame.

STILL_COLUMNS = ("frame", "x", "y", "w", "h")
StillLabels = dict[str, list[Box]]  # {frame name (image stem): its target boxes; [] = labelled target-free}


def label_columns(path: str | os.PathLike) -> tuple[str, ...]:
    """Return the header of a label CSV (trailing empty fields dropped): LABEL_COLUMNS for video labels,
    STILL_COLUMNS for still frames; DataError naming the file when it is neither."""
    rows = read_csv_rows(path, "labels", "pass a box-label CSV (video,frame,x,y,w,h or frame,x,y,w,h)")
    header = [h.strip() for h in rows[0]] if rows else []
    while header and not header[-1]:
        header.pop()
    if tuple(header) not in (LABEL_COLUMNS, STILL_COLUMNS):
        raise DataError(f"labels {path} line 1: header is {','.join(header) or 'empty'!r}, expected "
                        f"{','.join(LABEL_COLUMNS)} (videos) or {','.join(STILL_COLUMNS)} (still frames): pass a "
                        "box-label CSV, or fix its header")
    return tuple(header)


def read_still_labels(path: str | os.PathLike, fix: str = "fix or remove these rows") -> StillLabels:
    """Return {frame: [box (x, y, w, h) px, pixel-edge coordinates, ...]} of a ``frame,x,y,w,h`` label CSV.

    The rules of the video labels (``parse_box``: pixel-edge boxes, w, h > 0; UTF-8 BOM, trailing empty
    fields and blank rows tolerated; every bad row listed in one DataError), except that a frame is an
    image's name (its stem, no extension) and may have several rows, one per target; a row with x, y, w,
    h all empty labels the frame target-free and must be its only row. The same box twice is a bad row.
    """
    path = Path(path)
    if label_columns(path) != STILL_COLUMNS:
        raise DataError(f"labels {path} are video labels ({','.join(LABEL_COLUMNS)}): still frames need "
                        f"{','.join(STILL_COLUMNS)} (one row per target box)")
    rows = read_csv_rows(path, "labels", "pass a box-label CSV (frame,x,y,w,h)")
    labels: StillLabels = {}
    first_line: dict[str, int] = {}
    bad: list[str] = []
    for line, row in enumerate(rows[1:], 2):
        if not any(f.strip() for f in row):
            continue
        try:
            if len(row) < 5 or (len(row) > 5 and any(f.strip() for f in row[5:])):
                raise ValueError(f"{len(row)} fields, expected 5 ({','.join(STILL_COLUMNS)})")
            frame = row[0].strip()
            if not frame:
                raise ValueError("the frame field is empty")
            box = parse_box(row[1:5])
            known = labels.get(frame)
            if known is not None and (box is None or not known):
                raise ValueError(f"frame {frame} has a target-free row (empty box) and other rows (first on line "
                                 f"{first_line[frame]}): keep the boxes, or the one empty row")
            if box is not None and box in (known or []):
                raise ValueError(f"frame {frame} has the box {','.join(f'{v:g}' for v in box)} twice")
        except ValueError as error:
            bad.append(f"line {line}: {error}")
            continue
        first_line.setdefault(frame, line)
        labels.setdefault(frame, [])
        if box is not None:
            labels[frame].append(box)
    check_rows(path, labels, bad, fix, "one row per target box")
    return labels
