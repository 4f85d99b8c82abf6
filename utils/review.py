"""Pictures of a video run's false alarms, for a person to review: ``python -m utils.review``.

    python -m utils.review --boxes datasets/IR-Drone-Video/labels.csv --pred results/video

A box-scored run's false alarms are a mix: clutter the detector should not fire on, and real
objects that the labels do not box (a second bird; a target in a frame labelled absent). Only a
person can tell them apart, and only by looking. This writes, for the false alarms at
``--threshold`` (the scorer's rules, utils/boxscore.py):

- OUT/sheet_NNN.png: one tile per false alarm: the whole frame with the detection boxed, then
  64 x 64 crops around it (shown x 2) at frames t - C, t and t + C (C = ``--context``, 10 by
  default), the same place in all three, so that motion against the scene shows.
- OUT/false_alarms.csv: one row per false alarm: id (as on the tiles), video, frame, x, y
  (centroid, pixel-centre coordinates), peak_prob, absent (1 in a target-absent frame), verdict
  and note, both empty. Fill in verdict: ``object`` (a real object the labels do not box),
  ``clutter``, or leave it empty (not reviewed).

``cal_from_mask.py --boxes LABELS --pred PRED --reviewed OUT/false_alarms.csv`` then reports the
scores without the false alarms marked object beside the unchanged ones. ``--carry OLD.csv`` copies
an earlier review's verdicts and notes to the false alarms within 3 px of its rows in the same
frame (the same object seen by another checkpoint); with ``--unreviewed-only`` the sheets show only
the false alarms still without a verdict (ids as in the CSV). OUT defaults to PRED/review; a filled-in
review there is never overwritten (pass it as ``--carry``, or choose another ``--out``), an unfilled one or
earlier sheets only with ``--overwrite``; OUT is never the run folder itself or one of its map folders (the
scorers would read the sheets as another run's files).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from utils.cli import ArgumentParser, BoolFlag, fail, finite_float, positive_int
from utils.data.frames import DataError
from utils.data.labels import read_box_labels
from utils.data.video import iter_video_frames, video_files
from utils.eval.boxscore import DEFAULT_THRESHOLD, BoxScoreError, check_review_threshold, false_alarm_rows, match
from utils.eval.reviews import REVIEW_COLUMNS, assign_review, read_review
from utils.files import OutputError, atomic_write_text, check_output, is_within, same_path, write_png
from utils.infer.record import RecordError, read_detections, run_inputs

CROP = 64  # px of the frame around the false alarm
ZOOM = 2  # crops are shown this many times larger
OVERVIEW_H = 128  # px height of the whole-frame panel
CAPTION_H = 18  # px of text above each tile
GAP = 4  # px between panels and tiles
RED = (0, 0, 255)
SHEET = re.compile(r"sheet_\d{3,}\.png")  # the sheets this tool writes


class ReviewError(ValueError):
    """A user error of ``python -m utils.review``; the message names the file or value and the fix."""


def find_videos(folder: Path, stems: Sequence[str]) -> dict[str, Path]:
    """Return {stem: video file} for the stems (any suffix inference.py --video reads, in any case); ReviewError naming
    those with no file in the folder."""
    listed = {}
    for path in video_files(folder) if folder.is_dir() else []:
        listed.setdefault(path.stem, path)
    found = {stem: listed[stem] for stem in stems if stem in listed}
    missing = [stem for stem in stems if stem not in listed]
    if missing:
        raise ReviewError(f"{len(missing)} video(s) of the false alarms are not in {folder} (first "
                          f"{', '.join(missing[:5])}): pass the videos' folder with --videos")
    return found


def needed_frames(rows: Sequence[dict], context: int) -> dict[str, set[int]]:
    """Return {video: the frame indices the tiles show} (t - context, t, t + context of each false alarm)."""
    need: dict[str, set[int]] = {}
    for row in rows:
        need.setdefault(row["video"], set()).update({row["frame"] - context, row["frame"], row["frame"] + context})
    return need


def read_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Return {index: H x W uint8 grey frame} for the wanted indices that the video holds (one decoding pass)."""
    last = max(wanted)
    frames = {}
    for index, frame in iter_video_frames(path):
        if index in wanted:
            frames[index] = frame
        if index >= last:
            break
    return frames


def crop(frame: np.ndarray | None, x: float, y: float, size: int = CROP) -> np.ndarray:
    """Return the size x size BGR crop centred on pixel (round(x), round(y)) (black beyond the frame; a dark grey
    panel when there is no frame), enlarged ZOOM times, with corner marks around the centre."""
    if frame is None:
        panel = np.full((size * ZOOM, size * ZOOM, 3), 40, np.uint8)
        cv2.putText(panel, "no frame", (8, size * ZOOM // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1)
        return panel
    half = size // 2
    padded = np.pad(frame, half)
    cx, cy = int(round(x)) + half, int(round(y)) + half
    patch = padded[cy - half:cy - half + size, cx - half:cx - half + size]
    panel = cv2.cvtColor(cv2.resize(patch, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST),
                         cv2.COLOR_GRAY2BGR)
    c, r, a = half * ZOOM, 8 * ZOOM, 4 * ZOOM  # centre, mark radius, mark arm
    for sx in (-1, 1):
        for sy in (-1, 1):
            corner = (c + sx * r, c + sy * r)
            cv2.line(panel, corner, (corner[0] - sx * a, corner[1]), RED, 1)
            cv2.line(panel, corner, (corner[0], corner[1] - sy * a), RED, 1)
    return panel


def overview(frame: np.ndarray, x: float, y: float) -> np.ndarray:
    """Return the whole frame, scaled to OVERVIEW_H px high, BGR, with the false alarm boxed."""
    scale = OVERVIEW_H / frame.shape[0]
    small = cv2.resize(frame, (max(1, round(frame.shape[1] * scale)), OVERVIEW_H), interpolation=cv2.INTER_AREA)
    panel = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    px, py = int(round(x * scale)), int(round(y * scale))
    cv2.rectangle(panel, (px - 6, py - 6), (px + 6, py + 6), RED, 1)
    return panel


def tile(row: dict, frames: dict[int, np.ndarray], context: int) -> np.ndarray:
    """Return one false alarm's tile: a caption over the whole frame and the crops at t - context, t, t + context."""
    t, x, y = row["frame"], row["x"], row["y"]
    panels = [overview(frames[t], x, y)] + [crop(frames.get(t + d), x, y) for d in (-context, 0, context)]
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    out = np.full((CAPTION_H + height, width, 3), 255, np.uint8)
    left = 0
    for k, panel in enumerate(panels):
        out[CAPTION_H:CAPTION_H + panel.shape[0], left:left + panel.shape[1]] = panel
        if k:
            label = ("t-%d" % context, "t", "t+%d" % context)[k - 1]
            cv2.putText(out, label, (left + 3, CAPTION_H + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1)
        left += panel.shape[1] + GAP
    absent = "  target absent" if row["absent"] else ""
    caption = f"#{row['id']}  {row['video']}:{t}  p={row['peak_prob']:.2f}{absent}"
    cv2.putText(out, caption, (2, CAPTION_H - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def sheet(tiles: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Return the tiles laid out in rows of ``columns`` on white."""
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + GAP) + GAP, min(columns, len(tiles)) * (w + GAP) + GAP, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        out[GAP + r * (h + GAP):GAP + r * (h + GAP) + t.shape[0], GAP + c * (w + GAP):GAP + c * (w + GAP) + t.shape[1]] = t
    return out


def rows_csv(rows: Sequence[dict]) -> str:
    """Return the rows as CSV text with the REVIEW_COLUMNS header."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=REVIEW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def carry_verdicts(rows: list[dict], old: dict) -> tuple[int, int]:
    """Copy the verdicts and notes of an earlier review (``read_review``) to the rows whose nearest old row lies within
    3 px in the same frame; return (rows that got a verdict, reviewed old rows that no row took)."""
    hits, taken = assign_review(old, [((r["video"], r["frame"]), r["x"], r["y"]) for r in rows])
    n = 0
    for row, hit in zip(rows, hits):
        if hit is not None:
            row["verdict"], row["note"] = hit[2], hit[3]
            n += bool(hit[2])
    left = sum(1 for key, entries in old.items() for e in entries if e[2] and (key, e[:2]) not in taken)
    return n, left


def check_target(path: Path, is_carry: bool) -> dict | None:
    """Return the review already at path (None when there is none); ReviewError when it holds someone's verdicts
    (and is not the --carry source, ``is_carry``) or is unreadable: a review is never overwritten."""
    if not path.exists():
        return None
    try:
        existing = read_review(path)
        filled = any(r[2] for rows in existing.values() for r in rows)
    except DataError as error:
        raise ReviewError(f"{path} exists and is not a review this tool can read ({error}): move it away or choose "
                          "another --out") from None
    if filled and not is_carry:
        raise ReviewError(f"{path} holds a filled-in review: pass it as --carry to keep its verdicts, or choose "
                          "another --out")
    return existing


def write_outputs(out: Path, sheets: Iterator[np.ndarray], rows: Sequence[dict]) -> int:
    """Write the sheets and false_alarms.csv into OUT/.review.partial, then move them into OUT (removing an earlier
    run's sheets), so OUT never holds sheets and a CSV of different runs; return the number of sheets."""
    staging = out / ".review.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    n = 0
    try:
        for n, image in enumerate(sheets, 1):
            write_png(staging / f"sheet_{n:03d}.png", image)
        atomic_write_text(staging / "false_alarms.csv", rows_csv(rows))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)   # nothing half-made stays behind; OUT is as it was
        raise
    for old in out.iterdir():
        if old.is_file() and SHEET.fullmatch(old.name):
            old.unlink()
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)
    staging.rmdir()
    return n


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(prog="python -m utils.review",
                                     description="Write pictures and a CSV of a video run's false alarms for a person "
                                                 "to review (verdicts: object, clutter).")
    parser.add_argument("--boxes", type=Path, required=True, metavar="LABELS.csv", help="the box labels scored against")
    parser.add_argument("--pred", type=Path, required=True, help="the --out folder of inference.py --video")
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder of the videos (default: videos/ beside LABELS.csv)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default PRED/review)")
    parser.add_argument("--threshold", type=finite_float, default=DEFAULT_THRESHOLD,
                        help=f"a detection counts when its peak_prob >= this (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--context", type=positive_int, default=10, help="frames before and after shown (default 10)")
    parser.add_argument("--per-sheet", type=positive_int, default=24, help="tiles per sheet (default 24)")
    parser.add_argument("--columns", type=positive_int, default=3, help="tiles per row (default 3)")
    parser.add_argument("--carry", type=Path, default=None, metavar="OLD.csv",
                        help="copy an earlier review's verdicts to the false alarms within 3 px of its rows")
    parser.add_argument("--unreviewed-only", action=BoolFlag,
                        help="with --carry: draw only the false alarms left without a verdict (the CSV lists all)")
    parser.add_argument("--overwrite", action=BoolFlag,
                        help="replace an earlier review at --out that holds no verdicts (one with verdicts is never "
                             "replaced: pass it as --carry)")
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    return parser.parse_args(argv)


def check_out(out: Path, pred: Path, boxes: Path, overwrite: bool, carry_is_target: bool) -> None:
    """ReviewError when --out is the run folder or one of its map folders (the scorers would read the sheets as
    another run's files), when false_alarms.csv would replace an input, or, without overwrite, when out already
    holds an earlier review (sheets or an unfilled false_alarms.csv; a filled one is check_target's)."""
    files, folders = run_inputs(pred)
    if same_path(out, pred) or any(is_within(out, folder) for _, folder in folders):
        raise ReviewError(f"--out {out} is the run folder {pred} or one of its map folders, which the scorers read: "
                          f"sheets there would make it a mix of runs; pass another --out (default {pred / 'review'})")
    target = out / "false_alarms.csv"
    try:
        check_output(target, True, [("--boxes", boxes), *files], label=f"{target} (in --out)")
    except OutputError as error:
        raise ReviewError(str(error)) from None
    earlier = [p.name for p in sorted(out.iterdir()) if SHEET.fullmatch(p.name)] if out.is_dir() else []
    earlier += [target.name] if target.exists() and not carry_is_target else []
    if earlier and not overwrite and not carry_is_target:
        named = ", ".join(earlier[:3]) + (" ..." if len(earlier) > 3 else "")
        raise ReviewError(f"--out {out} already holds a review ({named}): "
                          "pass --overwrite to replace it, --carry to keep its verdicts, or another --out "
                          "(nothing was written)")


def tiles_in_order(rows: Sequence[dict], paths: dict[str, Path], sizes: dict, context: int,
                   quiet: bool) -> Iterator[np.ndarray]:
    """Yield the tiles in row order (rows come video by video), decoding each video once."""
    videos = list(dict.fromkeys(r["video"] for r in rows))
    need = needed_frames(rows, context)
    for video in tqdm(videos, desc="videos", unit="video", disable=True if quiet else None, file=sys.stderr):
        frames = read_frames(paths[video], need[video])
        for row in (r for r in rows if r["video"] == video):
            frame = frames.get(row["frame"])
            if frame is None:
                raise ReviewError(f"{paths[video]} has no frame {row['frame']} (detections.json lists a false alarm "
                                  "there): pass the videos that were inferred with --videos")
            size = tuple(sizes[(video, row["frame"])])
            if size != (0, 0) and frame.shape != size:
                raise ReviewError(f"{paths[video]} frame {row['frame']} is {frame.shape[0]} x {frame.shape[1]}, the "
                                  f"inference saw {size[0]} x {size[1]}: pass the videos that were inferred with "
                                  "--videos")
            yield tile(row, frames, context)


def batched(items, n: int):
    """Yield lists of n items (the last may be shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: Sequence[str] | None = None) -> int:
    """Write the sheets and false_alarms.csv; return 0, or 2 with one line on a user error."""
    args = parse_args(argv)
    out = args.out if args.out is not None else args.pred / "review"
    videos = args.videos if args.videos is not None else args.boxes.parent / "videos"
    target = out / "false_alarms.csv"
    try:
        if args.unreviewed_only and args.carry is None:
            raise ReviewError("--unreviewed-only needs --carry OLD.csv (the review whose verdicts are kept)")
        if out.exists() and not out.is_dir():
            raise ReviewError(f"--out {out} is a file: pass a folder")
        carry_is_target = args.carry is not None and args.carry.resolve() == target.resolve()
        existing = check_target(target, carry_is_target)
        check_out(out, args.pred, args.boxes, args.overwrite, carry_is_target)
        old = None
        if args.carry is not None:     # the review at --out is read once; a missing --carry file gets read_review's line
            old = existing if carry_is_target and existing is not None else read_review(args.carry)
        detections = read_detections(args.pred)
        check_review_threshold(args.threshold, detections)
        m = match(read_box_labels(args.boxes), detections)
        rows = false_alarm_rows(m, args.threshold)
        paths = find_videos(videos, list(dict.fromkeys(r["video"] for r in rows)))
        carried = left = 0
        if old is not None:
            carried, left = carry_verdicts(rows, old)
            if left and carry_is_target:
                raise ReviewError(f"{left} reviewed row(s) of {target} match no false alarm of this run (another "
                                  "threshold or run?): rewriting it would lose them; choose another --out")
        sizes = dict(zip(m.frames, m.sizes))
        drawn = [r for r in rows if not r["verdict"]] if args.unreviewed_only else rows
        sheets = (sheet(group, args.columns)
                  for group in batched(tiles_in_order(drawn, paths, sizes, args.context, args.quiet), args.per_sheet))
        n_sheets = write_outputs(out, sheets, rows)
    except (ReviewError, BoxScoreError, DataError, RecordError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write the review to {out} ({error.strerror or error}): choose a writable --out")
    n_frames = len({(r["video"], r["frame"]) for r in rows})
    print(f"{len(rows)} false alarm(s) in {n_frames} of {len(m.frames)} scored frames; wrote {n_sheets} sheet(s) and "
          f"{target}" + (f"; {carried} verdict(s) carried, {left} reviewed row(s) of {args.carry} not carried"
                         if old is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
