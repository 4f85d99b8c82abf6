"""Time scoring with the full ROC: utils.eval.metrics.Evaluator against a straightforward implementation, in one run.

    python benchmarks/bench_metrics.py [--data-root DATA/NUDT-SIRST] [--frames N] [--no-process]

Predictions are made from the split's masks (the NUDT-SIRST test masks when the dataset is
there, else synthetic 256 x 256 blobs): targets up to 1 px off with soft edges, 5 % of
frames missed, a few false blobs, and a background of sigmoid(N(-7, 1.5)) like a network's.

The straightforward implementation scores by the same definitions the way the release
and the widely copied scorers do: a Python loop over the 201 thresholds and, inside it,
over the targets (skimage regionprops), and per-component loops for Pd/Fa. Both must give
the same numbers (checked). Two timings: in memory (scoring only, same arrays), and as
whole processes (python start, imports, reading .mat predictions and PNG masks, scoring,
writing the report): cal_from_mask.py against this file's --reference-cli mode.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import scipy.io

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

NUDT = ROOT / "datasets" / "NUDT-SIRST"  # the repository's data root (datasets/README.md)
RELEASE_SECONDS = 25.0  # the release's scorer takes about 25 s for the 664 NUDT-SIRST test frames (measured once, on this project's CPU machine)
TARGET_SPEEDUP = 25.0  # our aim: whole-process scoring at least 25x faster than that


# ----------------------------------------------------------------------------- data


def synthetic_masks(n: int, seed: int, size: int = 256) -> tuple[list[str], list[np.ndarray]]:
    """Return (names, uint8 {0,1} masks size x size) with 0-4 small blobs each, for when NUDT-SIRST is absent."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(0, 5)):
            r, c = rng.integers(0, size - 8, 2)
            h, w = rng.integers(1, 8, 2)
            mask[r:r + h, c:c + w] = 1
        masks.append(mask)
    return [f"{k:06d}" for k in range(n)], masks


def noisy_prediction(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a float32 probability map that a decent detector might give for this mask."""
    logits = rng.normal(-7.0, 1.5, mask.shape).astype(np.float32)  # background, mostly p < 0.01
    prob = 1.0 / (1.0 + np.exp(-logits))
    if rng.random() > 0.05:  # 5 % of frames: every target missed
        shifted = np.roll(mask, tuple(rng.integers(-1, 2, 2)), (0, 1)).astype(np.float32)  # up to 1 px off
        halo = cv2.GaussianBlur(shifted, (5, 5), 1.0) * np.float32(0.45)  # soft edges, below 0.5
        core = shifted * rng.uniform(0.55, 0.99, mask.shape).astype(np.float32)
        prob = np.maximum(prob, np.maximum(halo, core))
    for _ in range(rng.poisson(0.3)):  # false blobs
        r, c = rng.integers(0, np.array(mask.shape) - 3)
        prob[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = rng.uniform(0.5, 0.9)
    return np.clip(prob, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- the straightforward scorer


def straightforward_score(frames) -> tuple[dict, dict]:
    """Return (metrics, roc) by per-threshold and per-component Python loops (skimage), as the release scores."""
    from skimage import measure

    thresholds = np.arange(201) / 200
    inter = union = tp = fp = fn = 0
    iou_sum = 0.0
    n_targets = n_detected = fa_pixels = n_pixels = n_background = 0
    detected = np.zeros(201)
    false_alarms = np.zeros(201)
    for prob, mask in frames:
        target = mask > 0
        pred = prob > 0.5
        i, u = int((pred & target).sum()), int((pred | target).sum())
        inter, union, iou_sum = inter + i, union + u, iou_sum + (i / u if u else 0.0)
        tp, fp, fn = tp + i, fp + int(pred.sum()) - i, fn + int(target.sum()) - i
        targets = measure.regionprops(measure.label(target, connectivity=2))
        found = list(measure.regionprops(measure.label(pred, connectivity=2)))
        n_targets += len(targets)
        n_pixels += prob.size
        for region in targets:  # first unused predicted component within 3 px, in label order
            for k, candidate in enumerate(found):
                if np.linalg.norm(np.subtract(region.centroid, candidate.centroid)) < 3:
                    n_detected += 1
                    del found[k]
                    break
        fa_pixels += sum(int(region.area) for region in found)  # the unmatched components themselves
        background = ~target
        n_background += int(background.sum())
        for t_index, t in enumerate(thresholds):  # per threshold ...
            above = prob >= t
            false_alarms[t_index] += np.count_nonzero(above & background)
            for region in targets:  # ... per target
                if above[region.coords[:, 0], region.coords[:, 1]].any():
                    detected[t_index] += 1
    pd_curve = detected / n_targets if n_targets else np.zeros(201)
    fa_curve = false_alarms / n_background if n_background else np.zeros(201)
    x, y = fa_curve[::-1], pd_curve[::-1]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    metrics = {
        "iou": inter / union if union else 0.0, "niou": iou_sum / len(frames) if frames else 0.0,
        "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "pd": n_detected / n_targets if n_targets else 0.0, "fa": fa_pixels / n_pixels if n_pixels else 0.0,
        "auc": float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)), "n_images": len(frames), "n_targets": n_targets,
    }
    return metrics, {"thresholds": thresholds, "pd": pd_curve, "fa": fa_curve}


def reference_cli(pred_dir: Path, mask_dir: Path, out: Path) -> None:
    """Whole-process reference: read PRED/mat/*.mat and the masks plainly, score straightforwardly, write JSON."""
    frames = []
    for path in sorted((pred_dir / "mat").glob("*.mat")):
        prob = scipy.io.loadmat(path)["T"]
        mask = cv2.imread(str(mask_dir / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
        frames.append((prob, (mask > 127).astype(np.uint8)))
    metrics, _ = straightforward_score(frames)
    out.write_text(json.dumps(metrics))


# ----------------------------------------------------------------------------- timing


def compare(ours: dict, reference: dict, our_roc: dict, reference_roc: dict | None = None) -> None:
    """Raise AssertionError when the two scorers disagree beyond float rounding."""
    for key, value in reference.items():
        if abs(ours[key] - value) > 1e-9:
            raise AssertionError(f"{key}: Evaluator {ours[key]!r} != straightforward {value!r}")
    if reference_roc is not None:
        for key in ("pd", "fa"):
            np.testing.assert_allclose(our_roc[key], reference_roc[key], rtol=0, atol=1e-12)


def timed_process(command: list[str]) -> tuple[float, float]:
    """Return (wall seconds, CPU seconds user + system) of a command run from the repository root; raise if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table with the speed-ups; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=NUDT, help="folder-split dataset whose test masks are used")
    parser.add_argument("--frames", type=int, default=None, help="score only the first N frames (default all)")
    parser.add_argument("--synthetic", type=int, default=664, help="frames to synthesize when --data-root is absent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-process", action="store_true", help="skip the whole-process timings")
    parser.add_argument("--reference-cli", nargs=3, type=Path, metavar=("PRED", "MASKS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference_cli:
        reference_cli(*args.reference_cli)
        return 0

    # imported here, not at the top, so that the --reference-cli process does not pay for them
    from utils.data import read_mask
    from utils.eval.metrics import Evaluator

    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        tmp = Path(tmp)
        mask_dir = args.data_root / "test" / "masks"
        if mask_dir.is_dir():
            data_root, source = args.data_root, f"{args.data_root.name} test masks"
            paths = sorted(mask_dir.glob("*.png"))[: args.frames]
            names, masks = [p.stem for p in paths], [read_mask(p) for p in paths]
        else:
            names, masks = synthetic_masks(args.frames or args.synthetic, args.seed)
            data_root, source = tmp / "data", "synthetic masks (NUDT-SIRST absent)"
            for split, split_names in (("trainval", names[:2]), ("test", names)):
                for sub in ("images", "masks"):
                    (data_root / split / sub).mkdir(parents=True)
                for name in split_names:
                    mask = masks[names.index(name)]
                    cv2.imwrite(str(data_root / split / "images" / f"{name}.png"), np.zeros_like(mask))
                    cv2.imwrite(str(data_root / split / "masks" / f"{name}.png"), mask * 255)
            mask_dir = data_root / "test" / "masks"
        rng = np.random.default_rng(args.seed)
        frames = [(noisy_prediction(mask, rng), mask) for mask in masks]
        size = "x".join(str(v) for v in frames[0][1].shape)
        print(f"scoring {len(frames)} frames ({source}, first {size}), full ROC of 201 thresholds; "
              f"{os.cpu_count()} CPU core(s), load average {os.getloadavg()[0]:.1f}")

        start = time.perf_counter()
        evaluator = Evaluator()
        for prob, mask in frames:
            evaluator.update(prob, mask)
        ours, our_roc = evaluator.compute(), evaluator.roc()
        ours_memory = time.perf_counter() - start
        start = time.perf_counter()
        reference, reference_roc = straightforward_score(frames)
        reference_memory = time.perf_counter() - start
        compare(ours, reference, our_roc, reference_roc)
        rows = [("in memory (scoring only)", ours_memory, reference_memory)]

        if not args.no_process:
            pred = tmp / "pred"
            (pred / "mat").mkdir(parents=True)
            for name, (prob, _) in zip(names, frames):  # as inference.py writes them: T and D, float32
                scipy.io.savemat(pred / "mat" / f"{name}.mat", {"T": prob, "D": np.zeros_like(prob)})
            allow = ["--allow-missing"] if args.frames is not None else []  # a subset of the split
            ours_process = timed_process([sys.executable, "cal_from_mask.py", "--pred", str(pred), "--data-root",
                                          str(data_root), "--split", "test", "--out", str(tmp / "out"), *allow])
            reference_process = timed_process([sys.executable, str(Path(__file__).resolve()), "--reference-cli",
                                               str(pred), str(mask_dir), str(tmp / "reference.json")])
            compare(json.loads((tmp / "out" / "metrics.json").read_text()),
                    json.loads((tmp / "reference.json").read_text()), our_roc)
            rows.append(("whole process, wall (files -> report)", ours_process[0], reference_process[0]))
            rows.append(("whole process, CPU user+sys", ours_process[1], reference_process[1]))
            startup = {module: timed_process([sys.executable, "-c", f"import {module}"])[0]
                       for module in ("cal_from_mask", "utils.eval.metrics", "torch")}

    print("\n| what | Evaluator / cal_from_mask (s) | straightforward (s) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for what, fast, slow in rows:
        print(f"| {what} | {fast:.3f} | {slow:.2f} | {slow / fast:.1f}x |")
    print(f"\nsame numbers from both: yes (iou {ours['iou']:.4f}, pd {ours['pd']:.4f}, fa {ours['fa']:.3e}, "
          f"auc {ours['auc']:.4f}, {ours['n_targets']} targets)")
    if not args.no_process:
        print("python start + imports (wall): " + ", ".join(f"{m} {t:.2f} s" for m, t in startup.items()))
    if not args.no_process and len(frames) == 664:
        whole = rows[1][1]
        verdict = "met" if RELEASE_SECONDS / whole >= TARGET_SPEEDUP else "NOT met"
        print(f"issue target: whole process >= {TARGET_SPEEDUP:.0f}x faster than the release's ~{RELEASE_SECONDS:.0f} s "
              f"(<= {RELEASE_SECONDS / TARGET_SPEEDUP:.1f} s): {whole:.2f} s = {RELEASE_SECONDS / whole:.1f}x, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
