"""The jobs of ``inference.py``, once its command line is parsed and its predictor built: a split or a folder of
frames (``run_frames``), videos (``run_videos``), and scoring the written folder with ``--score`` as
``cal_from_mask.py`` does (``score``, ``score_videos``). Every file goes where ``utils.infer.record`` says."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Sequence

from utils.cli import EXIT_PARTIAL, fail
from utils.data import DataError, Sample, detect_layout, images_by_stem, list_images
from utils.eval.boxscore import BoxScoreError, format_box_table, score_box_folder, write_box_report
from utils.eval.scoring import ScoringError, format_table, score_folder, write_report
from utils.infer.device import Predictor
from utils.infer.predict import PredictOptions, TemporalConfirmer
from utils.infer.record import (
    DETECTIONS_CSV,
    DETECTIONS_JSON,
    detections_meta,
    frame_files,
    frame_map_name,
    map_file,
    write_detections,
    write_manifest,
)
from utils.infer.runner import run_on_samples, run_on_video
from utils.verify.apply import describe_verification

log = logging.getLogger("inference")


def folder_samples(folder: Path, skipped: list[Path] | None = None) -> tuple[list[Sample], list[str]]:
    """Return (one sample per frame stem of a bare folder, warnings naming stems kept once).

    A.png beside a.tif would write the same outputs: one is kept (utils.data.images_by_stem) and
    the others are appended to `skipped` when given.
    """
    list_images(folder)  # DataError when the folder is missing or holds no frame
    warnings: list[str] = []
    found = images_by_stem(Path(folder), warnings, skipped)
    return [Sample(stem, path, None) for stem, path in found.items()], warnings


def run_options(args: argparse.Namespace, predictor=None) -> dict:
    """Return the options that shape the outputs, for manifest.json; "verifier": the second stage's tau, or None."""
    keys = ("backend", "dtype", "device", "batch_size", "tile_above", "tiling", "tile", "overlap", "sixteen_bit",
            "overlay", "every", "confirm", "confirm_radius", "save_maps", "layout")
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k in keys}
    return {**options, "verifier": describe_verification(predictor)}


def run_frames(args: argparse.Namespace, predictor: Predictor, samples: list[Sample], warnings: list[str], out: Path,
               opts: PredictOptions, device, source: Path, carve: dict, meta: dict,
               skipped: Sequence[Path] = ()) -> int:
    """Run a split or a folder of frames, write OUT's files, score with --score; return 0, 1 (skipped frames) or 2."""
    options = run_options(args, predictor)
    start = time.perf_counter()
    report = run_on_samples(predictor, samples, out, opts, args.overlay, args.sixteen_bit, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    run_meta = detections_meta(args.checkpoint, source, backend=args.backend, device=device, dtype=args.dtype,
                               verifier=options["verifier"], split=None if args.images is not None else args.split,
                               **carve)
    run_meta.update({"tile_above_px": args.tile_above if args.tiling else None, "tile_px": args.tile,
                     "overlap_px": args.overlap,
                     "checkpoint_meta": {k: meta[k] for k in ("epoch", "selected_weights", "code_revision", "source")
                                         if k in meta}})
    frames = [({"frame": s.name}, report.detections[s.name]) for s in samples if s.name in report.detections]
    write_detections(out, frames, run_meta, [{"frame": k, "error": v} for k, v in report.errors.items()])
    for note in warnings + report.warnings:
        log.warning(note)
    for frame_name, error in report.errors.items():
        log.warning("%s %s: %s", "error" if frame_name in report.detections else "skipped", frame_name, error)
    files = [DETECTIONS_CSV, DETECTIONS_JSON] + [f for name in report.written for f in frame_files(name, args.overlay)]
    write_manifest(out, args.checkpoint, source, run_meta["split"], {**options, **carve}, files,
                   frames=list(report.written))
    n_targets = sum(len(e["targets"]) for e in report.detections.values())
    n_frames = len(samples) + len(skipped)
    print(f"wrote {len(report.written)} of {n_frames} frames to {out} in {elapsed:.2f} s "
          f"({len(report.written) / elapsed if elapsed > 0 else 0:.2f} frames/s, {device.type} {args.dtype}); "
          f"{n_targets} targets in detections.csv" + (f"; {len(report.errors)} frame(s) with errors (listed above)"
                                                      if report.errors else "")
          + (f"; {len(skipped)} frame(s) skipped, their name taken by another file: "
             + ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "") if skipped else ""))
    code = EXIT_PARTIAL if report.errors or skipped else 0
    if args.score and (args.layout or detect_layout(source)) == "boxes":   # still frames with box labels
        code = max(code, score_videos(args, out, source))
    elif args.score:
        code = max(code, score(args, out, source, carve, allow_missing=len(report.written) < len(samples)))
    return code


def run_videos(args: argparse.Namespace, predictor: Predictor, videos: list[Path], out: Path, opts: PredictOptions,
               device, source: Path) -> int:
    """Run every video, write OUT/detections.csv/.json (and overlays); return 0, or 1 when a video was skipped."""
    confirm = TemporalConfirmer(*args.confirm, radius=args.confirm_radius) if args.confirm else None
    options = run_options(args, predictor)
    frames, errors, seconds = [], {}, 0.0
    for path in videos:
        report = run_on_video(predictor, path, out, opts, args.every, args.overlay, confirm, args.save_maps,
                              progress=not args.quiet, sixteen_bit=args.sixteen_bit)
        frames += report.frames
        seconds += report.seconds
        if report.warning is not None:
            log.warning("%s: %s", path.name, report.warning)
        if report.error is not None:
            errors[path.stem] = report.error
            log.warning("%s %s: %s", "stopped" if report.frames else "skipped", path.name, report.error)
        else:
            log.info("%s: %d frames, %.1f frames/s", path.name, len(report.frames),
                     len(report.frames) / report.seconds if report.seconds else 0.0)
    meta = detections_meta(args.checkpoint, source, backend=args.backend, device=device, dtype=args.dtype,
                           verifier=options["verifier"], videos=[p.stem for p in videos], every=args.every,
                           confirm="/".join(map(str, args.confirm)) if args.confirm else None,
                           save_maps=args.save_maps, confirm_radius_px=args.confirm_radius if args.confirm else None)
    write_detections(out, frames, meta, [{"video": k, "error": v} for k, v in errors.items()])
    files = [DETECTIONS_CSV, DETECTIONS_JSON]
    if args.overlay:
        files += [f"{p.stem}.mp4" for p in videos if (out / f"{p.stem}.mp4").is_file()]
    if args.save_maps:
        files += [map_file(frame_map_name(keys["video"], keys["frame"])) for keys, _ in frames]
    write_manifest(out, args.checkpoint, source, None if args.video is not None else args.split,
                   options, files, videos=[p.stem for p in videos])
    n_targets = sum(len(entry["targets"]) for _, entry in frames)
    print(f"{len(frames)} frames of {len(videos) - len(errors)} of {len(videos)} video(s) in {seconds:.2f} s "
          f"({len(frames) / seconds if seconds else 0:.2f} frames/s, {device.type} {args.dtype}); {n_targets} "
          f"detections in {out / 'detections.csv'}" + (f"; {len(errors)} video(s) skipped (named above)" if errors
                                                       else ""))
    return EXIT_PARTIAL if errors else 0


def score_videos(args: argparse.Namespace, out: Path, root: Path) -> int:
    """Score OUT's detections against ROOT/labels.csv (videos, or still frames of the boxes layout) as
    cal_from_mask.py --boxes does; print the table; 0 or 2."""
    try:
        report = score_box_folder(root / "labels.csv", out)
        for note in report["notes"]:
            log.warning(note)
        write_box_report(report, out)
    except (BoxScoreError, DataError) as error:
        return fail(str(error))
    print(format_box_table(report))
    return 0


def score(args: argparse.Namespace, out: Path, root: Path, carve: dict, allow_missing: bool) -> int:
    """Score OUT against the split's masks as cal_from_mask.py does; print the table; return 0 or 2."""
    try:  # the skipped frames are named above; the exit code stays 1
        scored = score_folder(out, root, args.split, args.layout, **carve, source="mat", allow_missing=allow_missing,
                              progress=not args.quiet)
        for note in scored.warnings:
            log.warning(note)
        write_report(scored, out, args.split, out)
    except (DataError, ScoringError) as error:
        return fail(str(error))
    print(format_table(scored.metrics))
    return 0
