"""Cut the shipped sample clip out of IR-Drone-Video, bit-exact, and write its labels beside it.

    pip install av            # PyAV (bundles FFmpeg): used by this script only, not by the project
    python datasets/samples/make_clip.py --source datasets/IR-Drone-Video            # the shipped clip
    python datasets/samples/make_clip.py --source DIR --video IR_BIRD_044 --start 0 --frames 128 --out /tmp/x

The video's H.264 packets of frames [start, start + frames) are copied into a new mp4 (no
re-encoding); ``start`` must be a key frame and the source must have no B-frames, so the clip
decodes to exactly the source's frames, which the script checks by decoding both with OpenCV
(the project's decoder) and comparing every pixel. Only a video of the source's train split is
accepted (train.txt; never val.txt, which stays unseen). Writes, under --out:

- ``videos/<VIDEO>_<start>-<end>.mp4`` (3 digits each, end inclusive), the clip;
- ``labels.csv``: the source's rows ``video,frame,x,y,w,h`` of those frames, frame re-based to the clip
  (frame - start), the video renamed to the clip's stem, values copied as text (bit-exact);
- ``train.txt``: the clip's stem (the split it came from);
- ``LICENSE``: a copy of the source's licence file (CC0 1.0).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULTS = {"video": "IR_BIRD_019", "start": 128, "frames": 128}  # the shipped clip (README.md beside this file)


def read_split(path: Path) -> set[str]:
    """Return the stems listed in a split file (one a line, blanks ignored)."""
    return {line.strip().removesuffix(".mp4") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def cut(src: Path, dst: Path, start: int, frames: int) -> None:
    """Copy the packets of frames [start, start + frames) of src's video stream into dst (mp4), untouched."""
    import av  # PyAV; only this script needs it

    with av.open(str(src)) as source:
        stream = source.streams.video[0]
        if stream.codec_context.has_b_frames:
            sys.exit(f"error: {src} has B-frames: packet order is not frame order, this script does not cut it")
        packets = [p for p in source.demux(stream) if p.dts is not None]
        pts = [p.pts for p in packets]
        if pts != sorted(pts):
            sys.exit(f"error: {src}: presentation order differs from decoding order; not cut")
        if start + frames > len(packets):
            sys.exit(f"error: {src} has {len(packets)} packets, fewer than start {start} + frames {frames}")
        if not packets[start].is_keyframe:
            keys = [i for i, p in enumerate(packets) if p.is_keyframe]
            sys.exit(f"error: frame {start} of {src} is no key frame: a bit-exact cut starts at one of {keys}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.stem + ".tmp.mp4")
        with av.open(str(tmp), "w", format="mp4") as target:
            out_stream = target.add_stream_from_template(stream)
            offset_pts, offset_dts = packets[start].pts, packets[start].dts
            for packet in packets[start:start + frames]:
                packet.pts -= offset_pts
                packet.dts -= offset_dts
                packet.stream = out_stream
                target.mux(packet)
        tmp.replace(dst)


def decoded(path: Path) -> list[np.ndarray]:
    """Return every frame OpenCV decodes from a video, as BGR uint8."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description="Cut a bit-exact clip (and its labels) out of an IR-Drone-Video "
                                                 "train video.")
    parser.add_argument("--source", type=Path, default=REPO / "datasets" / "IR-Drone-Video",
                        help="the IR-Drone-Video folder (default: datasets/IR-Drone-Video)")
    parser.add_argument("--video", default=DEFAULTS["video"], help=f"stem (default {DEFAULTS['video']})")
    parser.add_argument("--start", type=int, default=DEFAULTS["start"], help=f"first frame, a key frame (default {DEFAULTS['start']})")
    parser.add_argument("--frames", type=int, default=DEFAULTS["frames"], help="frames to keep (default 128)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default datasets/samples)")
    args = parser.parse_args()
    if args.start < 0 or args.frames < 1:
        parser.error("--start must be >= 0 and --frames >= 1")
    src_root = args.source
    if not (src_root / "videos" / f"{args.video}.mp4").is_file():
        parser.error(f"{src_root / 'videos' / (args.video + '.mp4')} does not exist: pass --source DIR/IR-Drone-Video")
    if args.video in read_split(src_root / "val.txt") or args.video not in read_split(src_root / "train.txt"):
        parser.error(f"{args.video} is not a train video of {src_root} (train.txt): only train videos may be shipped")
    end = args.start + args.frames - 1
    stem = f"{args.video}_{args.start:03d}-{end:03d}"
    src = src_root / "videos" / f"{args.video}.mp4"
    clip = args.out / "videos" / f"{stem}.mp4"
    cut(src, clip, args.start, args.frames)

    original, copy = decoded(src)[args.start:end + 1], decoded(clip)
    if len(copy) != args.frames or any(not np.array_equal(a, b) for a, b in zip(original, copy)):
        clip.unlink()
        sys.exit(f"error: the clip does not decode to frames {args.start}-{end} of {src} exactly; removed it")

    rows = []
    with open(src_root / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["video"] == args.video and args.start <= int(row["frame"]) <= end:
                rows.append([stem, str(int(row["frame"]) - args.start), row["x"], row["y"], row["w"], row["h"]])
    rows.sort(key=lambda r: int(r[1]))
    with open(args.out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["video", "frame", "x", "y", "w", "h"])
        writer.writerows(rows)
    (args.out / "train.txt").write_text(stem + "\n", encoding="utf-8")
    shutil.copyfile(src_root / "LICENSE", args.out / "LICENSE")

    absent = sum(not r[2] for r in rows)
    digest = hashlib.sha256(clip.read_bytes()).hexdigest()
    print(f"wrote {clip} ({clip.stat().st_size} bytes, sha256 {digest}): frames {args.start}-{end} of {src.name}, "
          f"{len(copy)} frames identical to the source's; {len(rows)} label rows ({absent} target-absent) in "
          f"{args.out / 'labels.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
