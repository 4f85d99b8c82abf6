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
not list (two runs mixed). The folder is locked for the run (OUT/.lock, utils/files.py): a second
run into it is refused at once; a killed run's lock and temporary files are recognised and cleared.

Frames of one size are batched; frames above --tile-above pixels run as blended tiles
(utils/predict.py). The default --dtype auto runs bf16 on a CPU that computes it natively (AVX512-BF16
or AMX: 2-4x faster; its scores against fp32: docs/speed.md) and fp32 elsewhere;
--dtype fp32 forces float32. The dtype run is printed and recorded in manifest.json and
detections.json; an ONNX export runs in its own precision (fp32, or int8 from utils.export --int8).
Videos (--video, or --data-root of a box-labelled video dataset) stream through utils/runner.py.
An unreadable frame or video is named and skipped, the rest are written, exit code 1; errors
that stop the run (bad checkpoint, data root, options) exit 2.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from models import CheckpointError, load_model
from utils import RESULTS_DIR
from utils.cli import (
    ArgumentParser,
    BoolFlag,
    add_device,
    add_dtype,
    add_log_level,
    add_verify,
    fail,
    finite_float,
    interrupted,
    non_negative_int,
    positive_int,
    setup_logging,
)
from utils.data import (
    LAYOUTS,
    SIXTEEN_BIT_MODES,
    SPLITS,
    DataError,
    detect_layout,
    index_split,
    index_videos,
    resolve_data_root,
)
from utils.files import OutputError, locked_folder
from utils.infer.device import Predictor, resolve_dtype, select_device
from utils.infer.jobs import folder_samples, run_frames, run_videos, score_videos
from utils.infer.onnx import ExportError, OnnxPredictor
from utils.infer.predict import OVERLAP_PX, TILE_ABOVE_PX, TILE_PX, PredictOptions, default_batch_size, parse_confirm
from utils.infer.record import OutputFolderError, prepare_out
from utils.infer.runner import list_videos, video_info
from utils.verify.apply import load_verification

log = logging.getLogger("inference")
BACKENDS = ("torch", "onnxruntime")
CONFIRM_RADIUS_PX = 5.0  # a drone at 30 frames/s moves a few pixels a frame in these 320 x 256 videos


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed and checked command line."""
    parser = ArgumentParser(prog="inference.py", description="Export LRRNet probability maps (.mat, .png), reconstructions "
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
    add_dtype(parser, default="auto")
    add_device(parser)
    parser.add_argument("--compile", action=BoolFlag, help="torch.compile the network (pays off on many frames)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="torch (default; --checkpoint .pt/.pkl/.pth) or onnxruntime (--checkpoint an .onnx "
                             "written by python -m utils.export; fp32 or int8, as exported)")
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
                        help="16-bit frames and 16-bit grey videos (FFV1 gray16le, read at full depth): / 65535 "
                             "(range) or per-frame 0.5-99.5 percentile stretch")
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
                        help="then score OUT against the split's masks, or the box labels of a video or still-frame "
                             "dataset (as cal_from_mask.py does)")
    parser.add_argument("--quiet", action=BoolFlag, help="no progress bar")
    add_log_level(parser)
    args = parser.parse_args(argv)
    if args.backend == "onnxruntime" and (args.dtype not in ("auto", "fp32") or args.compile):
        parser.error("--backend onnxruntime runs the export in its own precision (fp32, or int8): drop --dtype and "
                     "--compile")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run inference from the command line; return 0, 1 when frames were skipped, 2 on an error that stops the run."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        device = select_device(args.device)
        if args.backend == "onnxruntime":
            predictor = OnnxPredictor(args.checkpoint, device)
            if args.dtype == "fp32" and predictor.dtype_name != "fp32":
                raise ExportError(f"--dtype fp32 was asked for but {args.checkpoint} is an {predictor.dtype_name} "
                                  "export: drop --dtype, or export float32 with python -m utils.export (no --int8)")
            meta, verifier, args.dtype = predictor.meta, {"verifier": predictor.verifier_entry}, predictor.dtype_name
        else:
            if args.checkpoint.suffix.lower() == ".onnx":
                raise ExportError(f"checkpoint {args.checkpoint} is an ONNX export: run it with --backend onnxruntime")
            net, meta = load_model(args.checkpoint)
            args.dtype = resolve_dtype(args.dtype, device)
            predictor, verifier = Predictor(net, device, args.dtype, compile=args.compile), meta
        if args.verify:  # the checkpoint's second stage, after either backend's network
            predictor.verification = load_verification(verifier, device)
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
        if videos:
            check_videos_open(videos)
    except (CheckpointError, DataError, ExportError, ValueError) as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return interrupted("nothing was written")
    if videos is None and (args.every != 1 or args.confirm or args.save_maps):
        return fail("--every, --confirm and --save-maps apply to videos only (--video, or --data-root of a "
                    "box-labelled video dataset)")
    name = args.dataset or (source.stem if source.is_file() else source.name)
    out = args.out if args.out is not None else RESULTS_DIR / name
    opts = PredictOptions(batch_size=args.batch_size or default_batch_size(device), tile=args.tile,
                          tile_above=args.tile_above if args.tiling else math.inf, overlap=args.overlap)
    inputs = [args.checkpoint, source, *(videos or [])]
    try:
        with locked_folder(out):  # one run at a time: a second run into out is refused at once
            removed = prepare_out(out, args.overwrite, inputs)  # an unwritable or non-empty --out: before any frame
            if removed:
                log.info("removed %d file(s) of an earlier or stopped run from %s", len(removed), out)
            log.info("%s backend, %s on %s%s", args.backend, args.dtype, device,  # after the checks: errors stay one line
                     ", with the checkpoint's verifier" if predictor.verification is not None else "")
            if videos is not None:
                code = run_videos(args, predictor, videos, out, opts, device, source)
                return max(code, score_videos(args, out, source)) if args.score else code
            return run_frames(args, predictor, samples, warnings, out, opts, device, source, carve, meta, skipped)
    except (OutputFolderError, OutputError) as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return interrupted(f"{out} holds the outputs of the frames done so far, without detections.csv/.json and "
                           "manifest.json; run the same command again with --overwrite")
    except OSError as error:  # the output folder: read-only, a file, full
        return fail(f"cannot write to {out} ({error.strerror or error}): pass a writable --out")


def check_videos_open(videos: list[Path]) -> None:
    """DataError naming the videos when none of them opens (nothing is written then); one that does not open among
    others that do is named and skipped later (exit code 1)."""
    problems = []
    for path in videos:
        try:
            video_info(path)
        except DataError as error:
            problems.append(str(error))
    if len(problems) == len(videos):
        raise DataError(problems[0] + (f" (and {len(problems) - 1} more video(s) that cannot be opened)"
                                       if len(problems) > 1 else ""))


if __name__ == "__main__":
    sys.exit(main())
