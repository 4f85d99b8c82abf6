"""Export LRRNet predictions: a probability map, a reconstruction and a target list for every frame.

    python inference.py --checkpoint best.pt --dataset NUDT-SIRST     # ./datasets/NUDT-SIRST -> results/NUDT-SIRST
    python inference.py --checkpoint best.pt --data-root DIR --split test --out DIR --score
    python inference.py --checkpoint LRRNet.pkl --images frames/ --out out/ --overlay

CKPT is a checkpoint written by run_configs.py or the authors' raw state_dict (.pkl/.pth).
Every frame runs at its native size (the network pads to a multiple of 8 inside and crops
back); 8-bit frames are divided by 255 as the release does. Written atomically under OUT
(utils/outputs.py): mat/STEM.mat ('T' probabilities, 'D' reconstruction), img/STEM.png
(round(255 T)), with --overlay overlay/STEM.png, and detections.csv / detections.json (one row
per 8-connected component of T > 0.5: centroid, box, area, peak and mean probability), and last
manifest.json (checkpoint and its sha256, source, split, options, every file written).

One --out folder holds one run: a folder that is not empty is refused (exit 2, nothing touched);
--overwrite first removes an earlier run's outputs (only files this project writes: a folder
holding anything else is refused). The scorers refuse a folder whose files its manifest does
not list (two runs mixed).

Frames of one size are batched; frames above --tile-above pixels run as blended tiles
(utils/predict.py). float32 is the default because the exported maps are what gets scored;
--dtype bf16 is 2-4x faster on a CPU with AVX512-BF16 or AMX (emulated, much slower, elsewhere).
Videos (--video, or --data-root of a box-labelled video dataset) stream through utils/runner.py.
An unreadable frame or video is named and skipped, the rest are written, exit code 1; errors
that stop the run (bad checkpoint, data root, options) exit 2.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from models import CheckpointError, load_model
from utils import RESULTS_DIR
from utils.cli import (EXIT_PARTIAL, BoolFlag, add_device, add_dtype, add_log_level, add_verify, fail, finite_float,
                       non_negative_int, positive_int, setup_logging)
from utils.data import LAYOUTS, SIXTEEN_BIT_MODES, SPLITS, DataError, Sample, detect_layout, \
    images_by_stem, index_split, index_videos, list_images, resolve_data_root
from utils.export import ExportError, OnnxPredictor
from utils.metrics import CONNECTIVITY, THRESHOLD
from utils.outputs import OutputFolderError, prepare_out, write_detections, write_manifest
from utils.predict import (OVERLAP_PX, TILE_ABOVE_PX, TILE_PX, PredictOptions, TemporalConfirmer, default_batch_size,
                           parse_confirm)
from utils.runner import list_videos, run_on_samples, run_on_video
from utils.runtime import Predictor, select_device
from utils.verify import describe_verification, load_verification

log = logging.getLogger("inference")
BACKENDS = ("torch", "onnxruntime")
CONFIRM_RADIUS_PX = 5.0  # a drone at 30 frames/s moves a few pixels a frame in these 320 x 256 videos


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed and checked command line."""
    parser = argparse.ArgumentParser(description="Export LRRNet probability maps (.mat, .png), reconstructions "
                                                 "and detected targets for a dataset split or a folder of frames.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="run_configs.py checkpoint (.pt) or the authors' raw state_dict (.pkl/.pth)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="release dataset name: reads ./datasets/NAME, writes results/NAME")
    source.add_argument("--data-root", help="dataset folder (or a release name)")
    source.add_argument("--images", type=Path, help="a bare folder of frames (no masks, no scoring)")
    source.add_argument("--video", type=Path,
                        help="a video file or a folder of them (anything OpenCV decodes): streams, writes detections")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to run (default test)")
    parser.add_argument("--layout", default=None, choices=LAYOUTS, help="dataset layout (default: detected)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/NAME, NAME = the dataset or folder name); must be "
                             "empty or new unless --overwrite")
    parser.add_argument("--overwrite", action=BoolFlag,
                        help="remove an earlier run's outputs from --out first (only files inference.py and the "
                             "scorers write; a folder holding other files is refused)")
    add_dtype(parser)
    add_device(parser)
    parser.add_argument("--compile", action=BoolFlag, help="torch.compile the network (pays off on many frames)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="torch (default; --checkpoint .pt/.pkl/.pth) or onnxruntime (--checkpoint an .onnx "
                             "written by python -m utils.export; fp32)")
    add_verify(parser)
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="frames of one size per forward (default 1 on the CPU, 8 on CUDA)")
    parser.add_argument("--tile-above", type=non_negative_int, default=TILE_ABOVE_PX,
                        help=f"tile frames with more pixels than this (default {TILE_ABOVE_PX} = 1024 x 1024)")
    parser.add_argument("--tiling", action=BoolFlag, default=True,
                        help="tile frames above --tile-above pixels (default); --no-tiling runs every frame whole")
    parser.add_argument("--tile", type=positive_int, default=TILE_PX, help=f"tile side in px (default {TILE_PX})")
    parser.add_argument("--overlap", type=non_negative_int, default=OVERLAP_PX,
                        help=f"tile overlap in px, the blend ramp's width (default {OVERLAP_PX})")
    parser.add_argument("--sixteen-bit", default="range", choices=SIXTEEN_BIT_MODES,
                        help="16-bit frames: / 65535 (range) or per-frame 0.5-99.5 percentile stretch")
    parser.add_argument("--overlay", action=BoolFlag,
                        help="also write OUT/overlay/STEM.png (frames) or the annotated video OUT/STEM.mp4 (--video)")
    video = parser.add_argument_group("video (--video, or --data-root of a box-labelled video dataset)")
    video.add_argument("--every", type=positive_int, default=1, help="run every N-th frame (default 1: all)")
    video.add_argument("--confirm", default=None, metavar="K/N",
                       help="report a detection only when one lies within --confirm-radius px of it in at least K "
                            "of the last N processed frames (off by default; removes flicker, not static clutter)")
    video.add_argument("--confirm-radius", type=finite_float, default=CONFIRM_RADIUS_PX,
                       help=f"pixels (default {CONFIRM_RADIUS_PX:g})")
    video.add_argument("--save-maps", action=BoolFlag,
                       help="also write every processed frame's map as OUT/img/STEM_FRAME.png (round(255 T))")
    parser.add_argument("--score", action=BoolFlag,
                        help="then score OUT against the split's masks, or a video dataset's box labels (as "
                             "cal_from_mask.py does)")
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    add_log_level(parser)
    args = parser.parse_args(argv)
    if args.backend == "onnxruntime" and (args.dtype != "fp32" or args.compile):
        parser.error("--backend onnxruntime runs the export in fp32: drop --dtype and --compile")
    if args.overlap >= args.tile:
        parser.error(f"--overlap {args.overlap} must be smaller than --tile {args.tile}")
    if args.tile % 8:
        parser.error(f"--tile {args.tile} must be a multiple of 8 (the network pads to one; tiles should not need it)")
    if args.score and (args.images is not None or args.video is not None):
        parser.error("--score needs labels: use --data-root or --dataset (score a bare video with cal_from_mask.py "
                     "--boxes LABELS.csv)")
    if args.confirm is not None:
        try:
            args.confirm = parse_confirm(args.confirm)
        except ValueError as error:
            parser.error(str(error))
    if not args.confirm_radius > 0:
        parser.error(f"--confirm-radius {args.confirm_radius:g} must be > 0 (pixels)")
    return args


def folder_samples(folder: Path, skipped: list[Path] | None = None) -> tuple[list[Sample], list[str]]:
    """Return (one sample per frame stem of a bare folder, warnings naming stems kept once).

    A.png beside a.tif would write the same outputs: one is kept (utils.data.images_by_stem) and
    the others are appended to `skipped` when given.
    """
    list_images(folder)  # DataError when the folder is missing or holds no frame
    warnings: list[str] = []
    found = images_by_stem(Path(folder), warnings, skipped)
    return [Sample(stem, path, None) for stem, path in found.items()], warnings


def main(argv: Sequence[str] | None = None) -> int:
    """Run inference from the command line; return 0, 1 when frames were skipped, 2 on an error that stops the run."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        device = select_device(args.device)
        if args.backend == "onnxruntime":
            predictor = OnnxPredictor(args.checkpoint, device)
            meta = predictor.meta
        else:
            if args.checkpoint.suffix.lower() == ".onnx":
                raise ExportError(f"checkpoint {args.checkpoint} is an ONNX export: run it with --backend onnxruntime")
            net, meta = load_model(args.checkpoint)
            predictor = Predictor(net, device, args.dtype, compile=args.compile)
            if args.verify:
                predictor.verification = load_verification(meta, device)
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        # val carved from trainval (layouts without one) uses the checkpoint's own fraction and seed,
        # so --split val is the frames it validated on, for inference and for --score alike
        carve = {"val_fraction": config.get("val_fraction", 0.1), "val_seed": config.get("val_seed", 0)}
        videos, skipped = None, []
        if args.video is not None:
            videos, samples, warnings, source = list_videos(args.video, args.out), [], [], args.video
        elif args.images is not None:
            samples, warnings = folder_samples(args.images, skipped)
            source = args.images
        else:
            source = resolve_data_root(args.dataset if args.dataset is not None else args.data_root)
            if (args.layout or detect_layout(source)) == "video":  # a box-labelled video dataset: its split's videos
                videos, samples, warnings = [item.path for item in index_videos(source, args.split)], [], []
            else:
                samples, warnings = index_split(source, args.split, args.layout, **carve)
    except (CheckpointError, DataError, ExportError, ValueError) as error:
        return fail(str(error))
    if videos is None and (args.every != 1 or args.confirm or args.save_maps):
        return fail("--every, --confirm and --save-maps apply to videos only (--video, or --data-root of a "
                    "box-labelled video dataset)")
    name = args.dataset or (source.stem if source.is_file() else source.name)
    out = args.out if args.out is not None else RESULTS_DIR / name
    opts = PredictOptions(batch_size=args.batch_size or default_batch_size(device), tile=args.tile,
                          tile_above=args.tile_above if args.tiling else math.inf, overlap=args.overlap)
    try:
        removed = prepare_out(out, args.overwrite)  # an unwritable or non-empty --out is found before any frame
        if removed:
            log.info("--overwrite: removed %d output file(s) of an earlier run from %s", len(removed), out)
        if videos is not None:
            code = run_videos(args, predictor, videos, out, opts, device, source)
            return max(code, score_videos(args, out, source)) if args.score else code
        return run_frames(args, predictor, samples, warnings, out, opts, device, source, carve, meta, skipped)
    except OutputFolderError as error:
        return fail(str(error))
    except OSError as error:  # the output folder: read-only, a file, full
        return fail(f"cannot write to {out} ({error.strerror or error}): pass a writable --out")


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
    run_meta = {"checkpoint": str(args.checkpoint), "source": str(source),
                "split": None if args.images is not None else args.split, **carve, "backend": args.backend,
                "device": str(device),
                "dtype": args.dtype, "threshold": THRESHOLD, "connectivity": CONNECTIVITY,
                "tile_above_px": args.tile_above if args.tiling else None, "tile_px": args.tile,
                "overlap_px": args.overlap, "verifier": options["verifier"],
                "checkpoint_meta": {k: meta[k] for k in ("epoch", "selected_weights", "code_revision", "source")
                                    if k in meta}}
    frames = [({"frame": s.name}, report.detections[s.name]) for s in samples if s.name in report.detections]
    write_detections(out, frames, run_meta, [{"frame": k, "error": v} for k, v in report.errors.items()])
    for note in warnings + report.warnings:
        log.warning(note)
    for frame_name, error in report.errors.items():
        log.warning("%s %s: %s", "error" if frame_name in report.detections else "skipped", frame_name, error)
    kinds = [("mat", "mat"), ("img", "png")] + ([("overlay", "png")] if args.overlay else [])
    files = ["detections.csv", "detections.json"] + [f"{sub}/{name}.{ext}" for name in report.written
                                                      for sub, ext in kinds]
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
    if args.score:
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
                              progress=not args.quiet)
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
    meta = {"checkpoint": str(args.checkpoint), "source": str(source), "videos": [p.stem for p in videos],
            "every": args.every, "confirm": "/".join(map(str, args.confirm)) if args.confirm else None,
            "save_maps": args.save_maps,
            "confirm_radius_px": args.confirm_radius if args.confirm else None, "backend": args.backend,
            "device": str(device), "dtype": args.dtype, "threshold": THRESHOLD, "connectivity": CONNECTIVITY,
            "verifier": options["verifier"]}
    write_detections(out, frames, meta, [{"video": k, "error": v} for k, v in errors.items()])
    files = ["detections.csv", "detections.json"]
    if args.overlay:
        files += [f"{p.stem}.mp4" for p in videos if (out / f"{p.stem}.mp4").is_file()]
    if args.save_maps:
        files += [f"img/{keys['video']}_{keys['frame']:06d}.png" for keys, _ in frames]
    write_manifest(out, args.checkpoint, source, None if args.video is not None else args.split,
                   options, files, videos=[p.stem for p in videos])
    n_targets = sum(len(entry["targets"]) for _, entry in frames)
    print(f"{len(frames)} frames of {len(videos) - len(errors)} of {len(videos)} video(s) in {seconds:.2f} s "
          f"({len(frames) / seconds if seconds else 0:.2f} frames/s, {device.type} {args.dtype}); {n_targets} "
          f"detections in {out / 'detections.csv'}" + (f"; {len(errors)} video(s) skipped (named above)" if errors
                                                       else ""))
    return EXIT_PARTIAL if errors else 0


def score_videos(args: argparse.Namespace, out: Path, root: Path) -> int:
    """Score OUT's detections against ROOT/labels.csv as cal_from_mask.py --boxes does; print the table; 0 or 2."""
    from utils.boxscore import BoxScoreError, format_box_table, score_box_folder, write_box_report

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
    from utils.scoring import ScoringError, format_table, score_folder, write_report

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


if __name__ == "__main__":
    sys.exit(main())
