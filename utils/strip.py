"""A picture strip of a video run: a few frames side by side, label boxes and detections drawn, one caption each.

    python -m utils.strip --video datasets/samples/videos/IR_BIRD_008_000-127.mp4 \\
        --pred results/demo_clip --boxes datasets/samples/labels.csv --out docs/img/demo_strip.png

``make demo`` draws docs/img/demo_strip.png this way from its own run. Inputs: the video, the
``--out`` folder of ``inference.py --video`` (PRED/detections.json) and the box labels
(``video,frame,x,y,w,h``). Per frame, as ``cal_from_mask.py --boxes`` scores it (utils/boxscore.py):

- green: the labelled box (pixel-edge coordinates), drawn grown by the scorer's 2 px;
- yellow: a detection inside that grown box (it detects the target);
- red: a false alarm (any other detection; every detection of a target-absent frame);
- the caption: frame, "target" or "no target labelled", and what the detections count as.

Frames (``--frames``, or chosen): the middle frame of each stretch of labelled frames of one kind
(target present / absent), longest stretches first, then more frames spread over the longest
stretches, shown in time order; so a clip with a target-absent stretch always shows one of its
frames. Deterministic: the same inputs give the same PNG. ``--out`` is never an input nor in the run
folder (the scorers would read a PNG there as a map); an existing file is replaced only with ``--overwrite``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.cli import ArgumentParser, BoolFlag, fail
from utils.data import DataError, iter_video_frames
from utils.data.labels import read_box_labels
from utils.eval.boxes import GROW_PX, inside_grown_box
from utils.eval.boxscore import BoxScoreError
from utils.files import OutputError, atomic_write_bytes, check_output
from utils.infer.record import RecordError, run_inputs, video_targets

N_FRAMES = 5
LABEL_BGR, HIT_BGR, FA_BGR = (0, 200, 0), (0, 230, 255), (0, 0, 255)  # green, yellow, red
CAPTION_PX = 22  # caption bar under each frame (at scale 1)
MAX_SCALE, MAX_FRAMES = 8, 16  # a strip stays a picture (16 frames of 640 x 512 at 8x: 42k x 4k px), not an OOM
GAP_PX = 4  # white gap between frames
MARGIN_PX = 3  # a detection's box is drawn this far outside its component, so a 1-pixel target stays visible


def runs(kinds: Sequence[tuple[int, bool]]) -> list[list[int]]:
    """Return the stretches of consecutive entries of one kind: lists of frame numbers, in order."""
    out: list[list[int]] = []
    last = None
    for frame, kind in kinds:
        if out and kind == last:
            out[-1].append(frame)
        else:
            out.append([frame])
        last = kind
    return out


def choose_frames(kinds: Sequence[tuple[int, bool]], n: int = N_FRAMES) -> list[int]:
    """Return n frames (in order) from (frame, has_target) pairs: the middle of each stretch, longest first, then more.

    Every stretch of one kind (target present / target absent) gives its middle frame, longest
    stretches first (ties: earlier first); when stretches run out, the stretch with the fewest
    frames shown per frame it holds gets one more, its picks spread evenly over it.
    """
    stretches = runs(kinds)
    if not stretches:
        return []
    n = min(n, len(kinds))
    order = sorted(range(len(stretches)), key=lambda i: (-len(stretches[i]), i))
    shown = {i: 0 for i in range(len(stretches))}
    for i in order[:n]:
        shown[i] = 1
    while sum(shown.values()) < n:
        i = min((i for i in order if shown[i] < len(stretches[i])),
                key=lambda i: ((shown[i] + 1) / len(stretches[i]), order.index(i)))
        shown[i] += 1
    picked = []
    for i, k in shown.items():
        run = stretches[i]
        picked += [run[(2 * j + 1) * len(run) // (2 * k)] for j in range(k)]  # centres of k equal parts
    return sorted(picked)


def draw_frame(grey: np.ndarray, box, detections: list[dict], caption: str, scale: int = 1) -> np.ndarray:
    """Return one tile: the frame (BGR, enlarged `scale` x), the grown label box, detections, a caption bar below."""
    picture = cv2.cvtColor(cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST),
                           cv2.COLOR_GRAY2BGR)
    h, w = picture.shape[:2]
    boxes = np.array([box if box is not None else (np.nan,) * 4] * len(detections), np.float64).reshape(-1, 4)
    hits = inside_grown_box([d["x"] for d in detections], [d["y"] for d in detections], boxes)
    if box is not None:
        x, y, bw, bh = box
        p0 = (int(round((x - GROW_PX) * scale)), int(round((y - GROW_PX) * scale)))
        p1 = (int(round((x + bw + GROW_PX) * scale)) - 1, int(round((y + bh + GROW_PX) * scale)) - 1)
        cv2.rectangle(picture, p0, p1, LABEL_BGR, 1)
    for d, hit in zip(detections, hits):
        x0, y0 = d["bbox_x"] * scale - MARGIN_PX, d["bbox_y"] * scale - MARGIN_PX
        x1 = (d["bbox_x"] + d["bbox_w"]) * scale - 1 + MARGIN_PX
        y1 = (d["bbox_y"] + d["bbox_h"]) * scale - 1 + MARGIN_PX
        cv2.rectangle(picture, (int(x0), int(y0)), (int(x1), int(y1)), HIT_BGR if hit else FA_BGR, 1)
    bar = np.full((CAPTION_PX, w, 3), 32, np.uint8)
    cv2.putText(bar, caption, (4, CAPTION_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([picture, bar], axis=0)


def caption_of(frame: int, box, detections: list[dict]) -> str:
    """Return a tile's caption: the frame, whether a target is labelled, and what the detections count as."""
    if box is None:
        n = len(detections)
        return f"frame {frame}: no target labelled, {n} false alarm{'s' * (n != 1)}"
    boxes = np.array([box] * len(detections), np.float64).reshape(-1, 4)
    hits = int(inside_grown_box([d["x"] for d in detections], [d["y"] for d in detections], boxes).sum())
    fa = len(detections) - hits
    return f"frame {frame}: target {'detected' if hits else 'missed'}" + (f", {fa} false alarm{'s' * (fa != 1)}"
                                                                         if fa else "")


def draw_strip(video: Path, pred_dir: Path, labels_csv: Path, frames: Sequence[int] | None = None,
               n: int = N_FRAMES, scale: int = 1) -> tuple[np.ndarray, list[int]]:
    """Return (the strip as a BGR image, the frames shown) for one video of an inference.py --video run."""
    video = Path(video)
    stem = video.stem
    detections = video_targets(pred_dir, stem)
    labels = {f: box for (v, f), box in read_box_labels(labels_csv).items() if v == stem}
    scored = sorted(f for f in detections if f in labels)
    if not scored:
        raise BoxScoreError(f"no frame of {stem} is both in {Path(pred_dir) / 'detections.json'} and labelled in "
                            f"{labels_csv}: pass the labels and the --out folder of this video's run")
    if frames is None:
        frames = choose_frames([(f, labels[f] is not None) for f in scored], n)
    else:
        missing = [f for f in frames if f not in scored]
        if missing:
            raise BoxScoreError(f"frame(s) {', '.join(map(str, missing))} of {stem} are not both processed and "
                                f"labelled: choose among {scored[0]}-{scored[-1]}")
    wanted, tiles = set(frames), {}
    for index, grey in iter_video_frames(video):
        if index in wanted:
            tiles[index] = draw_frame(grey, labels[index], detections[index],
                                      caption_of(index, labels[index], detections[index]), scale)
        if len(tiles) == len(wanted):
            break
    if len(tiles) < len(wanted):
        raise DataError(f"video {video} ended before frame(s) {sorted(wanted - set(tiles))}: pass the video of the run")
    parts = []
    for i, f in enumerate(sorted(wanted)):
        if i:
            parts.append(np.full((tiles[f].shape[0], GAP_PX, 3), 255, np.uint8))
        parts.append(tiles[f])
    legend = np.full((CAPTION_PX, sum(p.shape[1] for p in parts), 3), 255, np.uint8)
    text = (f"{stem}: green = labelled box (+{GROW_PX:g} px, as scored), yellow = detection of the target, "
            "red = false alarm (anything else)")
    cv2.putText(legend, text, (4, CAPTION_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([np.concatenate(parts, axis=1), legend], axis=0), sorted(wanted)


def write_strip(path: Path, strip: np.ndarray) -> Path:
    """Write the strip as a PNG at zlib level 9 (it is committed: about 25 % smaller than OpenCV's default), atomically."""
    ok, data = cv2.imencode(".png", strip, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    return atomic_write_bytes(path, data.tobytes())


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the strip of a video run to --out; return 0, or 2 with a one-line error."""
    parser = ArgumentParser(prog="python -m utils.strip", description="Draw a few frames of a video run side by side: label boxes, "
                                                 "detections (target / false alarm), a caption each.")
    parser.add_argument("--video", type=Path, required=True, help="the video the run processed")
    parser.add_argument("--pred", type=Path, required=True, help="the --out folder of inference.py --video")
    parser.add_argument("--boxes", type=Path, required=True, metavar="LABELS.csv", help="box labels video,frame,x,y,w,h")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write (new, or --overwrite)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --out (never an input)")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="frames to show (default: chosen)")
    parser.add_argument("--n", type=int, default=N_FRAMES, help=f"frames to choose (default {N_FRAMES})")
    parser.add_argument("--scale", type=int, default=1, help="enlarge each frame this many times (default 1)")
    args = parser.parse_args(argv)
    if not (1 <= args.n <= MAX_FRAMES and 1 <= args.scale <= MAX_SCALE) or len(args.frames or ()) > MAX_FRAMES:
        parser.error(f"--n {args.n}, --scale {args.scale}, {len(args.frames or ())} --frames: --n and the number of "
                     f"--frames go from 1 to {MAX_FRAMES}, --scale from 1 to {MAX_SCALE}")
    files, folders = run_inputs(args.pred)
    try:
        check_output(args.out, args.overwrite, [("--video", args.video), ("--boxes", args.boxes), *files],
                     [*folders, ("a picture there would be read as a prediction", args.pred)])
        strip, shown = draw_strip(args.video, args.pred, args.boxes, args.frames, args.n, args.scale)
        write_strip(args.out, strip)
    except (BoxScoreError, DataError, RecordError, OutputError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write {args.out} ({error.strerror or error}): pass a writable --out")
    print(f"wrote {args.out}: frames {', '.join(map(str, shown))} of {args.video.stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
