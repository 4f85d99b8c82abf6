"""Score saved probability maps against a split's masks: IoU, nIoU, P/R/F1, Pd, Fa, hIoU, ROC and AUC.

    python cal_from_mask.py --pred results/NUDT-SIRST --data-root NUDT-SIRST --split test
    python cal_from_mask.py --pred results/X --data-root DIR --split test --protocol release   # comparison only

Reads PRED/mat/STEM.mat ('T') or PRED/img/STEM.png for every frame of the split (``--source`` forces
one kind) and scores each at its own size, p > 0.5, with hIoU and its OPDC Pd/Fa beside the legacy
metrics (definitions: docs/metrics.md; the library is utils/eval/scoring.py). Writes
OUT/metrics.json (or --json FILE) and OUT/roc.png (OUT = --out, default PRED). Exit code 2, with one
line naming the files and the fix, when predictions are missing (listed), unreadable, logits instead
of probabilities, or of another aspect ratio than their mask (re-export the prediction at the
frame's size), and when --out is a file or read-only (found before scoring). A report never replaces
an input (the labels, --reviewed, the run's detections or manifest, its maps) and replaces an
existing report only with --overwrite. An 8-bit PNG holding
only 0 and 1 (a binary map saved as 0/1, not x 255) is read as that binary map, with one warning per
folder. A split whose masks hold no target reports Pd, recall, F1, AUC and OPDC Pd as undefined
(null, "-") with a warning.

One run per folder: when PRED/manifest.json (written by inference.py) exists, map files it does
not list (another run's) or listed files that are missing are refused, naming a few; a folder
without one (another tool's predictions) is scored with a warning that it cannot be checked.

    python cal_from_mask.py --boxes datasets/IR-Drone-Video/labels.csv --pred results/video

Box mode (``--boxes``, instead of ``--data-root``): scores the video inference's PRED/detections.json
against box labels at target level (Pd, false alarms per frame, frames with a false alarm, per class;
Pd by target size; the rules: utils/boxscore.py). Writes OUT/box_metrics.json (or --json FILE) and
OUT/pd_fa_curve.png. Still-frame labels (``frame,x,y,w,h``, several boxes a frame, e.g. IRSTD-1K-boxes)
score a frames run (``inference.py --data-root ROOT --split val``) the same way, per target.
``--reviewed FALSE_ALARMS.csv`` (a review made with ``python -m utils.review``) adds the scores without the
false alarms that the review marks as real but unlabelled objects, beside the unchanged ones.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from utils.cli import ArgumentParser, BoolFlag, add_log_level, fail, finite_float, non_negative_int, setup_logging
from utils.data import LAYOUTS, SPLITS, DataError
from utils.eval.boxscore import (
    CURVE_SOURCES,
    DEFAULT_THRESHOLD,
    BoxScoreError,
    format_box_table,
    score_box_folder,
    write_box_report,
)
from utils.eval.chart import import_matplotlib
from utils.eval.scoring import PROTOCOLS, SOURCES, ScoringError, format_table, score_folder, write_report
from utils.files import OutputError, check_output
from utils.infer.record import BOX_METRICS, MASK_METRICS, PD_FA_PNG, ROC_PNG, run_inputs

log = logging.getLogger("cal_from_mask")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(prog="cal_from_mask.py", description="Score saved probability maps against a split's masks "
                                                 "(IoU, nIoU, P/R/F1, Pd, Fa, hIoU, ROC, AUC), or video detections "
                                                 "against box labels (--boxes: Pd, false alarms per frame).")
    parser.add_argument("--pred", required=True, type=Path,
                        help="predictions: DIR/mat/STEM.mat ('T') or DIR/img/STEM.png; box mode DIR/detections.json")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data-root", help="dataset folder, or a release name read from ./datasets/ (mask mode)")
    mode.add_argument("--boxes", type=Path, default=None, metavar="LABELS.csv",
                      help="box mode: score PRED/detections.json (inference.py --video) against these box labels "
                           "(video,frame,x,y,w,h), or a frames run against still-frame labels (frame,x,y,w,h)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split whose masks are scored (default test)")
    parser.add_argument("--layout", default=None, choices=LAYOUTS, help="dataset layout (default: detected)")
    parser.add_argument("--val-fraction", type=finite_float, default=0.1,
                        help="val carved from trainval where a layout has none: the training run's val_fraction")
    parser.add_argument("--val-seed", type=int, default=0, help="... and its val_seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for metrics.json and roc.png, or box_metrics.json and pd_fa_curve.png "
                             "(default: --pred)")
    parser.add_argument("--json", type=Path, default=None,
                        help="metrics file (default: OUT/metrics.json; box mode OUT/box_metrics.json)")
    boxes = parser.add_argument_group("box mode (--boxes)")
    boxes.add_argument("--threshold", type=finite_float, default=None,
                       help=f"a detection counts when its peak_prob >= this (default {DEFAULT_THRESHOLD}; "
                            "below 0.5 needs the saved maps)")
    boxes.add_argument("--curve", default=None, choices=CURVE_SOURCES,
                       help="Pd/FA curve from the saved maps, from peak_prob, or maps when every frame has one "
                            "(auto, default)")
    boxes.add_argument("--reviewed", type=Path, default=None, metavar="FALSE_ALARMS.csv",
                       help="a review of the false alarms (python -m utils.review, verdicts filled in): also report "
                            "the scores without those marked object (real objects the labels do not box)")
    parser.add_argument("--protocol", default="ours", choices=PROTOCOLS,
                        help="ours (docs/metrics.md, default) or release (the authors' scoring; comparison only)")
    parser.add_argument("--source", default="auto", choices=SOURCES, help="read .mat, .png, or .mat where present (auto)")
    parser.add_argument("--allow-missing", action=BoolFlag, help="score the frames that have a prediction")
    parser.add_argument("--workers", type=non_negative_int, default=min(2, os.cpu_count() or 1),
                        help="mask mode: processes scoring chunks of frames (64 frames or more; same numbers), "
                             "box mode: threads reading maps; 0 or 1: none (default: 2, or 1 on a 1-core machine)")
    parser.add_argument("--overwrite", action=BoolFlag,
                        help="replace report files that already exist (never the labels, the review or the run's own "
                             "files)")
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    add_log_level(parser)
    return parser.parse_args(argv)


def check_reports(args: argparse.Namespace) -> str | None:
    """Return the one-line error when a report file would replace an input (the labels, the review, the run's
    detections or manifest, its maps) or, without --overwrite, an existing file; else None."""
    out = args.out if args.out is not None else args.pred
    names = (BOX_METRICS, PD_FA_PNG) if args.boxes is not None else (MASK_METRICS, ROC_PNG)
    files, folders = run_inputs(args.pred)
    inputs = [*files, ("--boxes", args.boxes), ("--reviewed", args.reviewed)]
    reports = [(args.json, "--json") if args.json is not None else (out / names[0], "--out"), (out / names[1], "--out")]
    try:
        for path, option in reports:
            check_output(path, args.overwrite, inputs, folders, option, None if option == "--json" else str(path))
    except OutputError as error:
        return str(error)
    return None


def unwritable(out: Path) -> str | None:
    """Return the one-line error for an --out the report cannot be written to (a file, read-only), else None."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder: pass a folder (new or existing) as --out"
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        return f"cannot write the report to {out} (read-only): pass a writable --out"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Score a prediction folder; print the table, write metrics.json and roc.png; return 0, or 2 on an error."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    problem = unwritable(args.out if args.out is not None else args.pred)  # found before any scoring
    if problem is None and args.json is not None:
        problem = unwritable(args.json.parent) or (f"--json {args.json} is a folder: pass a file name"
                                                   if args.json.is_dir() else None)
    if problem is None:
        problem = check_reports(args)
    if problem is not None:
        return fail(problem)
    if args.boxes is not None:
        return main_boxes(args)
    if args.threshold is not None or args.curve is not None or args.reviewed is not None:
        return fail("--threshold, --curve and --reviewed apply to box mode (--boxes) only: mask mode scores p > 0.5")
    start = time.perf_counter()
    try:
        scored = score_folder(args.pred, args.data_root, args.split, args.layout, val_fraction=args.val_fraction,
                              val_seed=args.val_seed, protocol=args.protocol, source=args.source,
                              allow_missing=args.allow_missing, workers=args.workers, progress=not args.quiet,
                              processes=args.workers)
    except (DataError, ScoringError) as error:
        return fail(str(error))
    for note in scored.warnings:
        log.warning(note)
    out = args.out if args.out is not None else args.pred
    try:
        json_path = write_report(scored, args.pred, args.split, out, args.json)
    except OSError as error:
        return fail(f"cannot write the report to {out} ({error.strerror or error}): pass a writable --out")
    print(format_table(scored.metrics))
    n_mat = sum(p.suffix.lower() == ".mat" for _, p in scored.jobs)
    print(f"scored {len(scored.jobs)} frames ({n_mat} .mat, {len(scored.jobs) - n_mat} .png) in "
          f"{time.perf_counter() - start:.2f} s; wrote {json_path} and {out / ROC_PNG}")
    return 0


def main_boxes(args: argparse.Namespace) -> int:
    """Box mode: score PRED/detections.json against --boxes; print the table, write the JSON and PNG; return 0 or 2."""
    start = time.perf_counter()
    # matplotlib (the Pd/FA curve) takes about 0.5 s to import: in a thread, meanwhile the detections are scored
    threading.Thread(target=import_matplotlib, daemon=True).start()
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    try:
        report = score_box_folder(args.boxes, args.pred, threshold, args.curve or "auto", max(1, args.workers),
                                  args.reviewed)
    except BoxScoreError as error:
        return fail(str(error))
    for note in report["notes"]:
        log.warning(note)
    out = args.out if args.out is not None else args.pred
    try:
        json_path, png_path = write_box_report(report, out, args.json)
    except OSError as error:
        return fail(f"cannot write the report to {out} ({error.strerror or error}): pass a writable --out")
    print(format_box_table(report))
    scope = "still frames" if report.get("kind") == "frames" else f"frames of {report['videos_scored']} video(s)"
    print(f"scored {report['n_frames']} {scope} in {time.perf_counter() - start:.2f} s; wrote {json_path} and "
          f"{png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
