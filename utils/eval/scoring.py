"""Scoring saved probability maps against a split's masks: IoU, nIoU, P/R/F1, Pd, Fa, hIoU, ROC and AUC.

Predictions are read per frame from PRED/mat/STEM.mat (variable 'T', a float probability
map, as inference.py writes it), else PRED/STEM.mat, else PRED/img/STEM.png, else
PRED/STEM.png (8-bit probability x 255, read back as /255; an 8-bit PNG holding only 0 and 1 is a
binary map saved as 0/1 and is read as one, with a warning). PRED/manifest.json, when there,
must list every map file (``check_one_run``: one inference run per folder). Every frame is scored at its own
size with ``utils.eval.metrics`` (definitions: docs/metrics.md). A mask whose size differs from
its prediction is fitted as ``utils.data`` fits a mask to its frame: same aspect ratio ->
nearest-neighbour resize and a warning naming the file, otherwise an error.

The "release" protocol reproduces the authors' scoring for comparison with published numbers
only: prediction (bilinear) and mask (nearest) resized to 512 x 512, detection = pred /
max(pred) > 0.5 per frame (so every frame's brightest pixel is a detection), and the widely
copied Pd/Fa that finds false alarms by comparing component areas (``utils.eval.metrics.ReleasePdFa``,
which undercounts them). Its ROC is this project's ROC of the normalised 512 x 512 maps.

No torch here: scoring a folder starts in well under a second.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from utils.data import DataError, Sample, detect_layout, fit_mask, index_split, read_mask, resolve_data_root
from utils.eval.chart import RED, Series, log_chart
from utils.eval.metrics import THRESHOLD, Evaluator, check_probabilities
from utils.files import write_json, write_png
from utils.infer.record import MAP_FOLDERS, MASK_METRICS, ROC_PNG, RecordError, check_one_run

PROTOCOLS = ("ours", "release")
SOURCES = ("auto", "mat", "png")
RELEASE_SIZE = 512  # the release resizes every prediction and mask to 512 x 512 before scoring (docs/metrics.md#the-release-protocol)
UNDEFINED_WITHOUT_TARGETS = ("pd", "recall", "f1", "auc", "pd_opdc")  # None when the masks hold no target at all
MAX_LISTED = 50  # names listed in a missing-predictions error before "... and N more"
PREFETCH_PER_WORKER = 4  # frames read ahead per reading thread (bounds memory)
PROCESS_MIN_FRAMES = 64  # fewer frames are scored in the calling process: forking costs more than it saves
CHUNKS_PER_PROCESS = 4  # chunks per process: the progress bar moves, and a slow chunk does not hold the others


class ScoringError(ValueError):
    """A problem with the predictions; the message names the file and the fix."""


log = logging.getLogger("scoring")

N_NAMED = 5  # file names quoted in a mixed-runs error


# ----------------------------------------------------------------------------- predictions


def index_predictions(pred_dir: Path, source: str = "auto") -> dict[str, Path]:
    """Return {stem: prediction file}: mat/STEM.mat, STEM.mat, img/STEM.png, STEM.png in that preference."""
    if not pred_dir.is_dir():
        raise ScoringError(f"prediction folder {pred_dir} does not exist: pass the --out folder of inference.py")
    places = []
    if source in ("auto", "mat"):
        places += [(pred_dir / "mat", MAP_FOLDERS["mat"][0]), (pred_dir, ".mat")]
    if source in ("auto", "png"):
        places += [(pred_dir / "img", MAP_FOLDERS["img"][0]), (pred_dir, ".png")]
    found: dict[str, Path] = {}
    for folder, suffix in places:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.lower().endswith(suffix) and not name.startswith(".") and entry.is_file():
                    found.setdefault(name[: -len(suffix)], Path(entry.path))
    return found


def is_binary_01(image: np.ndarray) -> bool:
    """Return True for an 8-bit map whose values are only 0 and 1 with at least one 1 (a 0/1 binary map).

    Read / 255 it would be all background (1/255 < 0.5); it is read as a binary map instead, with a
    warning (score() names the folder and the count). A true probability map x 255 holding only 0
    and 1 would mean every p <= 1/255 - a map with no detection worth a distinction.
    """
    return image.dtype == np.uint8 and image.size > 0 and int(image.max()) == 1


def read_prediction(path: Path) -> np.ndarray:
    """Return the probability map H x W (float32, or float64 as stored in a .mat); 8-bit PNGs are / 255.

    An 8-bit PNG holding only 0 and 1 (a binary map saved as 0/1 rather than 0/255) is read as that
    binary map (0.0 / 1.0), not / 255, which would make it all background.
    """
    return read_prediction_flagged(path)[0]


def read_prediction_flagged(path: Path) -> tuple[np.ndarray, bool]:
    """Return (read_prediction(path), whether it was an 8-bit 0/1 binary PNG read as 0 -> 0.0, 1 -> 1.0)."""
    if path.suffix.lower() == ".mat":
        try:
            content = scipy.io.loadmat(path, variable_names=("T",))
        except (OSError, ValueError, TypeError) as error:
            raise ScoringError(f"prediction {path} cannot be read as a .mat file ({error}): export it again") from None
        if "T" not in content:
            keys = sorted(k for k in content if not k.startswith("__"))
            raise ScoringError(f"prediction {path} holds no variable 'T' (it has {keys}): export it with inference.py, "
                               "which saves the probability map as 'T'")
        prob = np.ascontiguousarray(np.squeeze(content["T"]))  # MATLAB files are column-major
        if prob.ndim != 2 or not np.issubdtype(prob.dtype, np.floating):
            raise ScoringError(f"prediction {path}: 'T' is {prob.dtype} of shape {content['T'].shape}; "
                               "expected one H x W float probability map")
        return prob, False
    try:
        data = np.fromfile(path, np.uint8)  # imdecode, unlike imread, reads non-ASCII paths
    except OSError as error:
        raise ScoringError(f"prediction {path} cannot be read ({error.strerror}): check the file") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ScoringError(f"prediction {path} is not a readable image (empty or corrupt): export it again")
    if image.ndim == 3:
        if not all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, min(image.shape[2], 3))):
            raise ScoringError(f"prediction {path} is a colour image: save the probability map as 8-bit grey (x 255)")
        image = image[..., 0]
    if image.dtype == np.uint8:
        if is_binary_01(image):  # a binary map stored as 0/1, not x 255: 1 means target (see read_prediction_flagged)
            return image.astype(np.float32), True
        return image.astype(np.float32) / np.float32(255.0), False
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0), False
    raise ScoringError(f"prediction {path} has pixel type {image.dtype}: save it as 8-bit grey (probability x 255)")


def _fit_to_prediction(mask: np.ndarray, pred_hw: tuple[int, int], sample: Sample, pred_path: Path) -> tuple[np.ndarray, list[str]]:
    """Return (mask {0,1} at the prediction's size, warnings): fitted exactly as utils.data fits a mask to its frame.

    Same aspect ratio -> nearest-neighbour resize and a warning; otherwise DataError. The
    prediction stands in for the frame (inference.py writes maps at the frame's size), so
    the messages name the prediction file as the image.
    """
    try:
        return fit_mask(mask, pred_hw, Sample(sample.name, pred_path, sample.mask))
    except DataError:  # different aspect ratio: the prediction is the odd one out, not the mask
        (mh, mw), (ph, pw) = mask.shape, pred_hw
        raise ScoringError(
            f"prediction {pred_path} is {pw}x{ph} but the mask {sample.mask} is {mw}x{mh} (different aspect ratio): "
            "re-export the prediction at the frame's size (inference.py writes every map at the frame's native "
            "size), or check that --pred and --data-root/--split belong together") from None


def release_inputs(prob: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (pred / max(pred) at 512 x 512 in [0, 1], mask {0,1} at 512 x 512): the release's preprocessing."""
    size = (RELEASE_SIZE, RELEASE_SIZE)
    prob = cv2.resize(prob.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    top = float(prob.max())
    # The release divides by the max whatever it is; an all-zero map gives NaN there, which detects
    # nothing, exactly as the zeros kept here do.
    prob = np.clip(prob / np.float32(top), 0.0, 1.0) if top > 0 else np.zeros_like(prob)
    return prob, mask


# ----------------------------------------------------------------------------- scoring


BINARY_NOTE = "\0binary"  # a note _load returns for a 0/1 PNG; score() turns them into one warning per folder


def _load(sample: Sample, pred_path: Path, protocol: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (probabilities, mask {0,1}, warnings) of one frame, ready for Evaluator.update."""
    prob, binary = read_prediction_flagged(pred_path)
    if binary:
        prob, mask, notes = _loaded(prob, sample, pred_path, protocol)
        return prob, mask, notes + [BINARY_NOTE]
    return _loaded(prob, sample, pred_path, protocol)


def _loaded(prob: np.ndarray, sample: Sample, pred_path: Path, protocol: str
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (probabilities, mask {0,1}, warnings) for a prediction already read."""
    mask = read_mask(sample.mask)
    if protocol == "release":
        try:  # refuse logits before pred / max would hide them
            check_probabilities(prob, str(pred_path))
        except ValueError as error:
            raise ScoringError(str(error)) from None
        prob, mask = release_inputs(prob, mask)
        return prob, mask, []
    mask, notes = _fit_to_prediction(mask, prob.shape, sample, pred_path)
    return prob, mask, notes


def _prefetch(jobs: Sequence[tuple[Sample, Path]], protocol: str, workers: int) -> Iterator[tuple]:
    """Yield (sample, pred_path, (prob, mask, warnings)) in order, reading up to workers x PREFETCH_PER_WORKER ahead."""
    if workers <= 0:
        for sample, path in jobs:
            yield sample, path, _load(sample, path, protocol)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        todo = iter(jobs)
        for sample, path in todo:
            pending.append((sample, path, pool.submit(_load, sample, path, protocol)))
            if len(pending) >= workers * PREFETCH_PER_WORKER:
                break
        while pending:
            sample, path, future = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((*nxt, pool.submit(_load, *nxt, protocol)))
            yield sample, path, future.result()


def _score_chunk(jobs: Sequence[tuple[Sample, Path]], protocol: str, workers: int, bar=None
                 ) -> tuple[Evaluator, list[str], dict[Path, int]]:
    """Return (Evaluator, warnings, {folder: 0/1 PNGs}) over frames read by `workers` threads; bar ticks per frame."""
    evaluator = Evaluator(THRESHOLD, release_matching=(protocol == "release"))
    warnings: list[str] = []
    binary: dict[Path, int] = {}  # folder -> 0/1 PNGs read as binary maps
    for _, path, (prob, mask, notes) in _prefetch(jobs, protocol, workers):
        if BINARY_NOTE in notes:
            binary[path.parent] = binary.get(path.parent, 0) + 1
            notes = [n for n in notes if n != BINARY_NOTE]
        warnings += notes
        try:
            evaluator.update(prob, mask, name=str(path))
        except ValueError as error:  # logits, NaN, bad shape: the message names the file
            raise ScoringError(str(error)) from None
        if bar is not None:
            bar.update()
    return evaluator, warnings, binary


def _score_in_child(jobs: Sequence[tuple[Sample, Path]], protocol: str) -> tuple[Evaluator, list[str], dict]:
    """_score_chunk in a worker process: one thread there (the processes are the parallelism)."""
    cv2.setNumThreads(1)
    return _score_chunk(jobs, protocol, 0)


def fork_is_safe() -> bool:
    """Return True when this process can fork scoring workers: fork exists, no other thread runs, no torch.

    A fork copies only the calling thread: a lock another thread held (torch's and OpenMP's pools,
    tqdm's monitor, a logging handler) stays locked in the child forever. cal_from_mask.py's own
    process qualifies; a test runner or inference.py (torch loaded) scores in its own process.
    """
    return ("fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
            and "torch" not in sys.modules)


def score(jobs: Sequence[tuple[Sample, Path]], protocol: str = "ours", workers: int = 2,
          progress: bool = True, processes: int = 0) -> tuple[Evaluator, list[str]]:
    """Return (the Evaluator over all frames, warnings) for (sample, prediction file) pairs.

    ``workers`` threads read files ahead of the scoring. ``processes`` > 1 scores chunks of
    frames in that many forked processes instead and merges their counts (the same numbers:
    every metric is a sum over frames); for a fresh process only, such as cal_from_mask.py's,
    since forking a process that already runs threads (torch, OpenCV) can hang the child: elsewhere
    (``fork_is_safe``) the frames are scored here, with the same numbers.
    """
    def progress_bar() -> tqdm:  # made after the fork: its monitor thread must not be copied into the children
        return tqdm(total=len(jobs), desc="scoring", unit="frame", disable=None if progress else True, file=sys.stderr)

    if processes > 1 and len(jobs) >= PROCESS_MIN_FRAMES and fork_is_safe():
        size = -(-len(jobs) // (processes * CHUNKS_PER_PROCESS))
        chunks = [jobs[k:k + size] for k in range(0, len(jobs), size)]
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_score_in_child, chunk, protocol) for chunk in chunks]  # forks on the first
            bar, parts = progress_bar(), []
            for chunk, future in zip(chunks, futures):  # in order: the warnings keep the frames' order
                parts.append(future.result())
                bar.update(len(chunk))
        evaluator, warnings, binary = parts[0]
        for other, notes, counts in parts[1:]:
            evaluator.merge(other)
            warnings += notes
            for folder, n in counts.items():
                binary[folder] = binary.get(folder, 0) + n
    else:
        bar = progress_bar()
        evaluator, warnings, binary = _score_chunk(jobs, protocol, workers, bar)
    bar.close()
    for folder, n in binary.items():
        warnings.append(f"{n} PNG prediction(s) in {folder} hold only the values 0 and 1 (binary maps saved as 0/1, "
                        "not probability x 255): read as binary maps (1 = target, p = 1.0), so their ROC/AUC has one "
                        "point; save round(255 p) to score probabilities")
    return evaluator, warnings


# ----------------------------------------------------------------------------- reports


def format_table(metrics: dict) -> str:
    """Return the metrics as a text table (fractions in %, Fa as a fraction and x 1e-6)."""
    def pct(key: str) -> str:
        return "-" if metrics[key] is None else f"{100 * metrics[key]:.2f} %"

    def pcts(*keys: str) -> str:
        return " / ".join("-" if metrics[key] is None else f"{100 * metrics[key]:.2f}" for key in keys) + " %"

    def fa(key: str) -> str:
        return "-" if metrics[key] is None else f"{metrics[key]:.3e} = {metrics[key] * 1e6:.2f} x1e-6"

    rows = [("IoU (pooled)", pct("iou")), ("nIoU (per image)", pct("niou")),
            ("precision", pct("precision")), ("recall", pct("recall")),
            ("F1", pct("f1")), ("Pd", pct("pd")),
            ("Fa", fa("fa")),
            ("AUC", "-" if metrics["auc"] is None else f"{metrics['auc']:.4f}"),
            ("hIoU (OPDC matching)", pct("hiou")), ("  seg IoU / loc IoU", pcts("seg_iou", "loc_iou")),
            ("  OPDC Pd", pct("pd_opdc")), ("  OPDC Fa", fa("fa_opdc")),
            ("  seg err merge/interf./missed", pcts("seg_merge_err", "seg_interference_err", "seg_missed_err")),
            ("  loc err interf./missed/m2s/s2m",
             pcts("loc_interference_err", "loc_missed_err", "loc_m2s_err", "loc_s2m_err")),
            ("  matched / false / missed", f"{metrics['opdc_tp']} / {metrics['opdc_fp']} / {metrics['opdc_fn']}"),
            ("images", str(metrics["n_images"])), ("targets", str(metrics["n_targets"]))]
    width = max(len(name) for name, _ in rows)
    title = (f"protocol {metrics['protocol']}: p > {metrics['threshold']} at each frame's own size"
             if metrics["protocol"] == "ours" else
             f"protocol release (comparison only): pred / max(pred) > {metrics['threshold']} at "
             f"{RELEASE_SIZE} x {RELEASE_SIZE}, Fa by area matching")
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])


def plot_roc(path: Path, roc: dict, metrics: dict, title: str) -> None:
    """Write the ROC (Pd against false-alarm rate, log x) as a PNG, atomically (drawn with OpenCV: utils/chart.py)."""
    fa, pd, thresholds = np.asarray(roc["fa"]), np.asarray(roc["pd"]), np.asarray(roc["thresholds"])
    auc = "undefined (no target)" if metrics["auc"] is None else f"{metrics['auc']:.4f}"
    series = [Series(fa, pd, f"AUC {auc}")]  # zero false-alarm rates have no place on a log axis: not drawn
    at = int(np.argmin(np.abs(thresholds - THRESHOLD)))
    if fa[at] > 0:
        series.append(Series(fa[at:at + 1], pd[at:at + 1], f"t = {thresholds[at]:g}", RED, marker=True))
    write_png(path, log_chart(series, "false-alarm rate (background pixels with p >= t)",
                              "Pd (targets with any pixel p >= t)", title))


def _listing(names: Sequence[str]) -> str:
    """Return the names one per line, cut after MAX_LISTED."""
    shown = "\n  ".join(names[:MAX_LISTED])
    more = f"\n  ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f"  {shown}{more}"


@dataclass
class Scored:
    """The result of scoring a folder: metrics (fractions), the ROC, the files used, and what was not scored."""

    metrics: dict
    roc: dict
    root: Path
    jobs: list[tuple[Sample, Path]]
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self, pred_dir: Path, split: str) -> dict:
        """Return the metrics.json content: metrics, fa x1e-6, sources, missing frames, warnings and the ROC."""
        sources = {"mat": sum(p.suffix.lower() == ".mat" for _, p in self.jobs)}
        sources["png"] = len(self.jobs) - sources["mat"]
        fa_opdc = self.metrics["fa_opdc"]
        out = {**self.metrics, "fa_x1e6": self.metrics["fa"] * 1e6,
               "fa_opdc_x1e6": None if fa_opdc is None else fa_opdc * 1e6, "pred_dir": str(pred_dir),
               "data_root": str(self.root), "split": split, "sources": sources, "missing": self.missing,
               "warnings": self.warnings, "roc": {k: np.asarray(v).tolist() for k, v in self.roc.items()}}
        if self.metrics["protocol"] == "release":
            out["note"] = ("release protocol, for comparison with published numbers only: 512 x 512 resize, "
                           "pred/max > 0.5 per frame, Fa by area matching (undercounts false alarms)")
        return out


def score_folder(pred_dir: Path, data_root: str | os.PathLike, split: str = "test", layout: str | None = None, *,
                 val_fraction: float = 0.1, val_seed: int = 0, protocol: str = "ours", source: str = "auto",
                 allow_missing: bool = False, workers: int = 2, progress: bool = True, processes: int = 0) -> Scored:
    """Return the Scored result of the predictions in pred_dir against the split's masks; ScoringError/DataError.

    ``val_fraction`` and ``val_seed`` carve val from trainval where a layout has no val split:
    pass the checkpoint's own (inference.py does) so val is the frames it validated on.
    """
    root = resolve_data_root(data_root)
    # no check of the files first: the masks are decoded here anyway, and a bad one stops the run naming it before
    # anything is written
    if (layout or detect_layout(root)) == "boxes":
        raise ScoringError(f"{root} has box labels, not masks: score with cal_from_mask.py --boxes "
                           f"{root / 'labels.csv'} --pred {pred_dir}")
    samples, warnings = index_split(root, split, layout, val_fraction, val_seed)
    no_mask = [s.name for s in samples if s.mask is None]
    if no_mask:
        raise ScoringError(f"{len(no_mask)} frame(s) of split {split} in {root} have no mask:\n{_listing(no_mask)}")
    try:
        run_notes = check_one_run(Path(pred_dir))   # one inference run a folder (utils.infer.record)
    except RecordError as error:
        raise ScoringError(str(error)) from None
    found = index_predictions(pred_dir, source)
    missing = [s.name for s in samples if s.name not in found]
    if missing and not allow_missing:
        where = {"auto": "mat/STEM.mat, STEM.mat, img/STEM.png or STEM.png",
                 "mat": "mat/STEM.mat or STEM.mat", "png": "img/STEM.png or STEM.png"}[source]
        raise ScoringError(
            f"{len(missing)} of {len(samples)} frame(s) of split {split} have no prediction in {pred_dir} "
            f"(looked for {where}):\n{_listing(missing)}\n"
            "run inference.py on this split into that folder, or pass --allow-missing to score the rest")
    jobs = [(s, found[s.name]) for s in samples if s.name in found]
    if not jobs:
        raise ScoringError(f"no prediction in {pred_dir} matches a frame of split {split}: nothing to score")
    evaluator, notes = score(jobs, protocol, workers, progress, processes)
    warnings = list(warnings) + run_notes + notes
    if missing:
        warnings.append(f"{len(missing)} frame(s) without a prediction were not scored (--allow-missing): "
                        + ", ".join(missing[:MAX_LISTED]) + (" ..." if len(missing) > MAX_LISTED else ""))
    metrics = {"protocol": protocol, "threshold": THRESHOLD, **evaluator.compute()}
    if metrics["n_targets"] == 0:  # no target in any mask: Pd, recall (and F1) and AUC have no denominator
        metrics.update({key: None for key in UNDEFINED_WITHOUT_TARGETS})
        warnings.append(f"no mask of split {split} in {root} holds a target: Pd, recall, F1, AUC and OPDC Pd are undefined "
                        "(null in metrics.json, - in the table); IoU, precision and Fa count false alarms only")
    return Scored(metrics, evaluator.roc(), root, jobs, missing, warnings)


def write_report(scored: Scored, pred_dir: Path, split: str, out: Path, json_path: Path | None = None) -> Path:
    """Write metrics.json and roc.png for a Scored result; return the metrics.json path."""
    json_path = json_path if json_path is not None else out / MASK_METRICS
    write_json(json_path, scored.report(pred_dir, split))
    title = f"{pred_dir.name or pred_dir} on {scored.root.name}/{split} ({scored.metrics['protocol']})"
    plot_roc(out / ROC_PNG, scored.roc, scored.metrics, title)
    return json_path
