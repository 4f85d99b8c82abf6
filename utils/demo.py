"""The shipped clip's demo numbers: run a checkpoint on datasets/samples, record its scores, compare a run with them.

    python -m utils.demo record --checkpoint checkpoints/lrrnet_sirst_v1.pt   # (re)write its entry (make demo-expected)
    python -m utils.demo check --checkpoint CKPT --pred results/demo_clip     # a run against the stored numbers

The clip (datasets/samples/README.md) is scored at target level against its box labels as
``cal_from_mask.py --boxes`` does. ``datasets/samples/expected_scores.json`` holds, per checkpoint
file name (its stem), the checkpoint's sha256 and the scores of the clip's every frame (``every``
"1", what ``make demo`` runs) and of every 2nd frame ("2", what ``tests/test_demo.py`` runs to stay
under a minute on a 2-core CPU), computed on the CPU in float32. ``record`` replaces only that
checkpoint's entry, so entries of several checkpoints live side by side.

Comparison (``compare``): frame, target and target-absent counts exactly; detected targets and
false alarms within TOLERANCE (a component whose peak sits at p = 0.5 may come or go between
machines and BLAS libraries); the rates follow from the counts.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import cal_from_mask
import inference
from utils import ROOT
from utils.cli import ArgumentParser
from utils.files import write_json
from utils.infer.record import BOX_METRICS

SAMPLES = ROOT / "datasets" / "samples"
CLIP = SAMPLES / "videos" / "IR_BIRD_019_128-255.mp4"
CLIP_LABELS = SAMPLES / "labels.csv"
EXPECTED = SAMPLES / "expected_scores.json"
EVERIES = (1, 2)  # make demo runs every frame; tests/test_demo.py every 2nd
EXACT = ("n_frames", "n_targets", "n_absent_frames")
TOLERANCE = {"n_detected": 1, "n_false_alarms": 3, "n_frames_with_fa": 2, "n_absent_frames_with_fa": 2}
KEPT = ("pd", "fa_per_frame", "frames_with_fa", "absent_frames_with_fa", "n_frames", "n_targets", "n_absent_frames",
        "n_detected", "n_false_alarms", "n_frames_with_fa", "n_absent_frames_with_fa")


def checkpoint_key(checkpoint: str | Path) -> str:
    """Return the entry name of a checkpoint in expected_scores.json: its file stem (lrrnet_sirst_v1)."""
    return Path(checkpoint).stem


def sha256(path: str | Path) -> str:
    """Return the sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_clip(checkpoint: str | Path, out: str | Path, every: int = 1, device: str = "cpu",
             overlay: bool = False) -> dict:
    """Run inference.py --video on the clip into OUT and score it as cal_from_mask.py --boxes; return the scores.

    Both scripts run in this process with their own command lines (what make demo types).
    RuntimeError when either exits with an error.
    """
    argv = ["--checkpoint", str(checkpoint), "--video", str(CLIP), "--out", str(out), "--every", str(every),
            "--device", device, "--dtype", "fp32", "--overwrite", "--quiet"] + (["--overlay"] if overlay else [])
    if (code := inference.main(argv)) != 0:
        raise RuntimeError(f"inference.py {' '.join(argv)} exited with {code}")
    if (code := cal_from_mask.main(["--boxes", str(CLIP_LABELS), "--pred", str(out), "--quiet"])) != 0:
        raise RuntimeError(f"cal_from_mask.py --boxes {CLIP_LABELS} --pred {out} exited with {code}")
    return scores_of(json.loads((Path(out) / BOX_METRICS).read_text(encoding="utf-8")))


def scores_of(report: dict) -> dict:
    """Return the overall numbers of a box_metrics.json report that are stored and compared."""
    return {key: report[key] for key in KEPT}


def load_expected(path: Path = EXPECTED) -> dict:
    """Return expected_scores.json ({} when it does not exist yet)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def compare(got: dict, want: dict) -> list[str]:
    """Return what differs between two score dicts beyond the tolerances (empty when they agree)."""
    problems = [f"{key}: {got[key]} != stored {want[key]}" for key in EXACT if got[key] != want[key]]
    problems += [f"{key}: {got[key]} differs from stored {want[key]} by more than {tol}"
                 for key, tol in TOLERANCE.items() if abs(got[key] - want[key]) > tol]
    return problems


def record(checkpoint: str | Path, everies: Sequence[int] = EVERIES, path: Path = EXPECTED) -> dict:
    """Run the clip with the checkpoint at each `every`, store the entry in expected_scores.json; return it."""
    entry = {"checkpoint": Path(checkpoint).name, "sha256": sha256(checkpoint), "device": "cpu", "dtype": "fp32",
             "clip": CLIP.relative_to(ROOT).as_posix(), "labels": CLIP_LABELS.relative_to(ROOT).as_posix(),
             "recorded": time.strftime("%Y-%m-%d"),
             "command": f"python -m utils.demo record --checkpoint {Path(checkpoint).as_posix()}", "every": {}}
    with tempfile.TemporaryDirectory(prefix="demo_record_") as tmp:
        for every in everies:
            entry["every"][str(every)] = run_clip(checkpoint, Path(tmp) / f"every_{every}", every)
    stored = load_expected(path)
    stored[checkpoint_key(checkpoint)] = entry
    write_json(path, dict(sorted(stored.items())))
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """record: (re)write a checkpoint's entry; check: compare a run's box_metrics.json with it. 0, 1 (differs) or 2."""
    parser = ArgumentParser(prog="python -m utils.demo", description="Record or check the shipped clip's demo scores "
                                                 "(datasets/samples/expected_scores.json).")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the clip (CPU, fp32, every frame and every 2nd) and store the scores")
    rec.add_argument("--checkpoint", type=Path, required=True)
    chk = sub.add_parser("check", help="compare PRED/box_metrics.json of a clip run with the stored scores")
    chk.add_argument("--checkpoint", type=Path, required=True)
    chk.add_argument("--pred", type=Path, required=True, help="the scored --out folder of the clip run")
    chk.add_argument("--every", type=int, default=1, help="the run's --every (default 1)")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    if args.command == "record":
        entry = record(args.checkpoint)
        for every, s in entry["every"].items():
            print(f"every {every}: Pd {s['pd']}, false alarms / frame {s['fa_per_frame']:.4f}, "
                  f"{s['n_detected']}/{s['n_targets']} targets, {s['n_false_alarms']} false alarms in "
                  f"{s['n_frames']} frames")
        print(f"wrote {EXPECTED} [{checkpoint_key(args.checkpoint)}]")
        return 0
    key = checkpoint_key(args.checkpoint)
    want = load_expected().get(key, {}).get("every", {}).get(str(args.every))
    if want is None:
        print(f"no stored scores for {key} at every {args.every} in {EXPECTED}: record them with "
              f"`make demo-expected CLIP_CKPT={args.checkpoint}`")
        return 0
    try:
        got = scores_of(json.loads((args.pred / BOX_METRICS).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: cannot read {args.pred / 'box_metrics.json'} ({error}): score the run first", file=sys.stderr)
        return 2
    stored_sha = load_expected()[key].get("sha256")
    note = "" if stored_sha == sha256(args.checkpoint) else " (the checkpoint file changed since they were recorded)"
    problems = compare(got, want)
    if problems:
        print(f"differs from the stored scores of {key}{note}: " + "; ".join(problems))
        return 1
    print(f"matches the stored scores of {key} ({EXPECTED.relative_to(ROOT).as_posix()}){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
