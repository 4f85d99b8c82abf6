"""Dataset summary: every frame and mask decoded once, layout, split sizes, frame and target statistics.

Command line: ``python -m utils.data --data-root DIR [--layout L] [--index NAME] [--json]``
prints it (text, or one JSON object); a bad file ends the run with one ``error: ...`` naming
the file and the fix (several bad files: one per following line), exit code 2. A ``video``
root (``utils.data.video``) gets its own summary (videos, decodable frames, labels, boxes) and
``--pictures PNG`` draws its pseudo-masks.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import cv2
import numpy as np

from utils.cli import EXIT_OK, ArgumentParser, BoolFlag, add_log_level, fail, finite_float, setup_logging
from utils.data.frames import THREADS, DataError, Sample, load_native, raise_bad
from utils.data.labels import read_still_labels
from utils.data.layouts import (
    LAYOUTS,
    RELEASE_NAMES,
    SPLITS,
    STILL_LABELS,
    STILL_VAL_FRACTION,
    STILL_VAL_SEED,
    detect_layout,
    index_samples,
    resolve_data_root,
)
from utils.data.video_summary import draw_pseudo_masks, format_video_summary, summarize_video
from utils.files import check_output


def summarize(
    root, layout: str | None = None, val_fraction: float = 0.1, val_seed: int = 0, *, index: str | None = None
) -> dict:
    """Return a JSON-ready summary: layout, split sizes, frame sizes, targets per frame, target areas (px), warnings.

    A video root gives ``utils.data.video.summarize_video``'s summary instead.
    """
    if layout == "video" or (layout is None and detect_layout(resolve_data_root(root)) == "video"):
        return summarize_video(resolve_data_root(root))
    indexed = index_samples(root, None, layout, val_fraction, val_seed, index)
    splits, official, warnings = indexed.splits, indexed.val_official, indexed.warnings
    boxes = read_still_labels(indexed.root / STILL_LABELS) if indexed.layout == "boxes" else None  # no masks: boxes
    unique = {s.image: s for samples in splits.values() for s in samples}
    ordered = sorted(unique.values(), key=lambda s: str(s.image))

    def stats(sample: Sample):
        try:
            grey, mask, notes, kind = load_native(sample)
        except DataError as error:
            return None, str(error)
        if boxes is not None:   # a box reaching past the frame is named: the rules read boxes in the frame
            h, w = grey.shape[:2]
            outside = [b for b in boxes[sample.name] if b[0] < 0 or b[1] < 0 or b[0] + b[2] > w or b[1] + b[3] > h]
            notes = notes + [f"{sample.name}: box {','.join(f'{v:g}' for v in b)} reaches past the {w} x {h} frame"
                             for b in outside]
            return (grey.shape, kind, [round(b[2] * b[3], 3) for b in boxes[sample.name]], notes), None
        count, _, cc, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)  # 8-connected targets, as scored
        return (grey.shape, kind, cc[1:, cv2.CC_STAT_AREA].tolist(), notes), None

    with ThreadPoolExecutor(THREADS) as pool:
        results = dict(zip((s.image for s in ordered), pool.map(stats, ordered)))
    raise_bad([error for _, error in results.values() if error])
    info = {path: item for path, (item, _) in results.items()}
    for path in sorted(info, key=str):
        warnings += info[path][3]
    sizes = Counter((w, h) for (h, w), *_ in info.values())
    areas = sorted(a for item in info.values() for a in item[2])
    per_frame = Counter(len(item[2]) for item in info.values())
    split_targets = {name: sum(len(info[s.image][2]) for s in samples) for name, samples in splits.items()}
    return {
        "root": str(indexed.root),
        "layout": indexed.layout,
        "index": indexed.index,
        "val": (f"the layout's own: carved by frame (fraction {STILL_VAL_FRACTION:g}, seed {STILL_VAL_SEED})"
                if boxes is not None else "official" if official
                else f"carved from trainval (val_fraction={val_fraction}, val_seed={val_seed})"),
        "targets_from": "label boxes (area = w x h)" if boxes is not None else "mask components (8-connected)",
        "splits": {name: len(splits[name]) for name in SPLITS if name in splits},
        "targets": {name: split_targets[name] for name in SPLITS if name in splits},
        "frames": len(info),
        "frame_kinds": dict(Counter(item[1] for item in info.values()).most_common()),
        "frame_sizes": {
            "distinct": len(sizes),
            "smallest_wxh": list(min(sizes, key=lambda s: s[0] * s[1])),
            "largest_wxh": list(max(sizes, key=lambda s: s[0] * s[1])),
            "most_common_wxh": [[w, h, n] for (w, h), n in sizes.most_common(3)],
        },
        "targets_per_frame": {
            "min": min(per_frame),
            "max": max(per_frame),
            "mean": round(sum(k * n for k, n in per_frame.items()) / len(info), 3),
            "histogram": {str(k): per_frame[k] for k in sorted(per_frame)},
        },
        "target_area_px": {
            "count": len(areas),
            "min": areas[0] if areas else None,
            "median": float(np.median(areas)) if areas else None,
            "max": areas[-1] if areas else None,
        },
        "warnings": warnings,
    }


def _format_summary(s: dict) -> str:
    """Return the summary as the text the command line prints."""
    lines = [
        f"{s['root']}",
        f"layout: {s['layout']}" + (f" ({s['index']})" if s["index"] else "") + f"; val: {s['val']}",
        "",
    ]
    lines.append(f"{'split':<10} {'frames':>7} {'targets':>8}")
    lines += [f"{name:<10} {n:>7} {s['targets'][name]:>8}" for name, n in s["splits"].items()]
    fs, tp, ta = s["frame_sizes"], s["targets_per_frame"], s["target_area_px"]
    lines += [
        "",
        f"frames: {s['frames']} ({', '.join(f'{n} {k}' for k, n in s['frame_kinds'].items())})",
        f"frame sizes (W x H px): {fs['distinct']} distinct, smallest {fs['smallest_wxh'][0]}x{fs['smallest_wxh'][1]}, "
        f"largest {fs['largest_wxh'][0]}x{fs['largest_wxh'][1]}, most common "
        + ", ".join(f"{w}x{h} ({n})" for w, h, n in fs["most_common_wxh"]),
        f"targets per frame ({s['targets_from']}): {tp['min']}-{tp['max']}, mean {tp['mean']}; "
        + ", ".join(f"{k}: {n}" for k, n in tp["histogram"].items()),
        f"target area (px): {ta['count']} targets, min {ta['min']}, median {ta['median']}, max {ta['max']}",
        "",
        f"warnings ({len(s['warnings'])}):" if s["warnings"] else "warnings: none",
    ]
    lines += [f"  - {w}" for w in s["warnings"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print a dataset summary (text, or one JSON object with --json); return 0, or 2 after one ``error: ...``."""
    parser = ArgumentParser(
        prog="python -m utils.data", description="Check a dataset folder and print a summary."
    )
    parser.add_argument(
        "--data-root",
        required=True,
        help=f"dataset folder, or a release name {sorted(RELEASE_NAMES)} read from datasets/",
    )
    parser.add_argument("--layout", choices=LAYOUTS, default=None, help="dataset layout (default: detected)")
    parser.add_argument(
        "--index",
        default=None,
        help="split lists: idx_427/idx_320 (sirst) or NAME of img_idx/train_NAME.txt (basicirstd)",
    )
    parser.add_argument(
        "--val-fraction",
        type=finite_float,
        default=0.1,
        help="share of training frames held out as val where the layout has none",
    )
    parser.add_argument("--val-seed", type=int, default=0, help="seed of that held-out subset")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--pictures",
        default=None,
        metavar="PNG",
        help="video layout only: draw box, pseudo-mask and ignore region on 12 labelled frames into PNG (no summary)",
    )
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --pictures PNG")
    add_log_level(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.pictures is not None:
            root = resolve_data_root(args.data_root)
            check_output(args.pictures, args.overwrite, folders=[("the dataset", root)], option="--pictures")
            if (args.layout or detect_layout(root)) != "video":
                raise DataError(f"--pictures draws box pseudo-masks: {root} is not a video root (videos/*.mp4)")
            print(draw_pseudo_masks(root, args.pictures))
            return EXIT_OK
        summary = summarize(args.data_root, args.layout, args.val_fraction, args.val_seed, index=args.index)
    except (DataError, ValueError) as error:
        return fail(str(error))
    if summary["layout"] == "video":
        print(json.dumps(summary) if args.json else format_video_summary(summary))
    else:
        print(json.dumps(summary) if args.json else _format_summary(summary))
    return EXIT_OK
