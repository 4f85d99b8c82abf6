"""Second-stage verification: a small network re-scores LRRNet's candidate targets and drops the clutter.

    python -m utils.verify --checkpoint checkpoints/lrrnet_general.pt --out checkpoints/lrrnet_general.pt

What the command does (docs/verifier.md has the reasons and the measurements):

1. Candidates. LRRNet (the checkpoint's weights, unchanged) runs on whole frames of every
   source's training split; each connected component of p > t (t = 0.5, the detection
   threshold) is a candidate. On a pixel-mask source a candidate touching a labelled target
   (within ``utils.train.mining.CLEAR_PX``, 3 px, the training miner's rule) is a target; on
   box-labelled video and still frames with box labels one whose centroid lies inside a grown
   label box (the rule of ``cal_from_mask.py --boxes``). Every other candidate is clutter. The same is done on every
   source's val split (video: every 10th labelled frame from frame 5, so none of the every-10th
   frames from frame 0 that docs/results.md reports). Candidates are cached in the run folder with a
   fingerprint (LRRNet's weights, the frames sampled, threshold, patch), so a killed run resumes
   and a changed one collects anew.
2. Training. ``models.verifier.CandidateVerifier`` learns target vs clutter from the training
   candidates: targets and clutter weigh half of the loss each, and every source's targets the
   same share of the targets' half (a small source's few hundred would drown among a video's thousands);
   patches are flipped and rotated; seeded.
3. Selection of the acceptance level tau on val alone: the tau of a grid that maximises the
   project's selection score (the mean over sources of IoU, or of Pd - min(FA per frame, 1) for
   box-labelled video) among those that cost no source more than --max-drop (1 point) of its
   IoU or Pd against LRRNet alone.
4. The output checkpoint is the input one plus a "verifier" entry (weights, tau, the val table
   and the first source's test scores with and without it, scored once after selection),
   written atomically. ``inference.py`` applies it when present (``--no-verify`` turns it off).

Applying it (``utils.verify.apply.Verification``): each candidate of a frame is scored; a candidate scoring
s < tau is rejected, and its pixels' probabilities are multiplied by (s / tau) * t, which puts
them below the detection threshold t. Accepted candidates and every other pixel are unchanged,
so the maps, masks, detections and scores downstream all see the same decision.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models import CheckpointError, load_checkpoint, load_model
from models.verifier import CandidateVerifier, VerifierConfig
from utils.checkpoint import atomic_save, code_revision
from utils.cli import (
    ArgumentParser,
    BoolFlag,
    add_device,
    add_log_level,
    fail,
    finite_float,
    non_negative_int,
    positive_int,
    setup_logging,
)
from utils.data import (
    DataError,
    IRSTDDataset,
    StillBoxDataset,
    VideoFrameDataset,
    index_videos,
    is_still_box_root,
    is_video_root,
    resolve_data_root,
    size_batches,
)
from utils.eval.boxes import BoxCounts, inside_grown_box
from utils.eval.metrics import THRESHOLD, Evaluator, plain
from utils.eval.selection import selection_score
from utils.files import atomic_write, atomic_write_text, check_output
from utils.infer.device import Predictor, select_device
from utils.infer.predict import default_batch_size, predict_maps
from utils.train.config import SOURCES_PATH_HINT, ConfigError, parse_sources
from utils.train.mining import touches_known
from utils.verify.apply import Verification, candidate_inputs, dihedral, score_patches

log = logging.getLogger(__name__)
TAUS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))   # the acceptance levels tried on val
VIDEO_EVERY, VIDEO_START = 20, 3            # training frames of each video: 3, 23, 43, ...
VIDEO_VAL_EVERY, VIDEO_VAL_START = 10, 5    # val frames: 5, 15, 25, ... (docs/results.md reports 0, 10, 20, ...)


class VerifyError(ValueError):
    """A user error of ``python -m utils.verify`` (a bad checkpoint, source or option)."""


# ----------------------------------------------------------------------------- candidates of a split


@dataclass
class Candidates:
    """Every candidate of LRRNet on one split, labelled; frame-level counts for scoring without the maps."""

    patches: np.ndarray     # N x 3 x P x P float16
    features: np.ndarray    # N x 5 float32
    target: np.ndarray      # N bool: touches a labelled target or lies in its grown box
    frame: np.ndarray       # N int64: the frame it belongs to (index in the split)
    overlap: np.ndarray     # N int64: its pixels on the target mask (mask sources; 0 for boxes)
    box: np.ndarray         # N int64: the label box of its frame whose grown box holds it (box sources), else -1
    present: np.ndarray     # F int64: the frame's labelled targets (box sources: its boxes; mask sources: 0 or 1)
    mask_px: np.ndarray     # F int64: target-mask pixels of the frame (mask sources; 0 for boxes)
    kind: np.ndarray        # 0-d str: "mask" or "box"

    def save(self, path: Path) -> None:
        """Write the candidates to path (.npz) atomically."""
        atomic_write(Path(path), lambda f: np.savez(f, **{k.name: getattr(self, k.name) for k in fields(self)}))

    @classmethod
    def load(cls, path: Path) -> "Candidates":
        """Read candidates written by ``save``."""
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k.name: z[k.name] for k in fields(cls)})

    @classmethod
    def join(cls, parts: Sequence["Candidates"]) -> "Candidates":
        """Return the candidates of several splits as one training set (frame-level fields are dropped)."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("patches", "features", "target", "frame", "overlap", "box")),
                   np.zeros(0, np.int64), np.zeros(0, np.int64), np.array("mixed"))


def label_boxes(item: dict) -> np.ndarray:
    """Return a box-labelled item's K x 4 label boxes (x, y, w, h; edge coordinates): a video frame's one box
    ("box", NaN when the target is absent: K = 0) or a still frame's "boxes"."""
    if "boxes" in item:
        return np.asarray(item["boxes"], np.float64).reshape(-1, 4)
    box = np.asarray(item["box"], np.float64).reshape(1, 4)
    return box if np.isfinite(box).all() else np.zeros((0, 4))


def holding_box(centroids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return, per (row, col) centroid (N x 2), the index of the first of the K boxes whose grown box holds it
    (``inside_grown_box``), or -1."""
    n, k = len(centroids), len(boxes)
    if not n or not k:
        return np.full(n, -1, np.int64)
    inside = inside_grown_box(np.repeat(centroids[:, 1], k), np.repeat(centroids[:, 0], k),
                              np.tile(boxes, (n, 1))).reshape(n, k)
    return np.where(inside.any(1), inside.argmax(1), -1).astype(np.int64)


def collect(predictor, dataset, threshold: float = THRESHOLD, patch: int = 48, desc: str = "candidates",
            progress: bool = True) -> Candidates:
    """Return LRRNet's candidates on every frame of a dataset (``IRSTDDataset``, ``VideoFrameDataset`` or
    ``StillBoxDataset``).

    ``predictor``: a ``utils.infer.device.Predictor`` without verification; frames of one size run in
    batches of the device's default size.
    """
    box_source = bool(getattr(dataset, "box_labelled", False))
    parts: dict[str, list] = {"patches": [], "features": [], "target": [], "frame": [], "overlap": [], "box": []}
    present, mask_px = np.zeros(len(dataset), np.int64), np.zeros(len(dataset), np.int64)
    batches = size_batches(dataset.sizes, default_batch_size(predictor.device))
    bar = tqdm(total=len(dataset), desc=desc, unit="frame", disable=None if progress else True, file=sys.stderr)
    for batch in batches:
        items = [dataset[i] for i in batch]
        frames = [item["image"][0].numpy() for item in items]
        probs, _ = predict_maps(predictor, frames)
        for i, item, frame, prob in zip(batch, items, frames, probs):
            comps, patches, features = candidate_inputs(frame, prob, threshold, patch)
            mask = item["mask"][0].numpy() > 0
            if box_source:
                boxes = label_boxes(item)
                present[i] = len(boxes)
                box = holding_box(comps.centroids().reshape(-1, 2), boxes)
                target, overlap = box >= 0, np.zeros(comps.n, np.int64)
            else:
                present[i], mask_px[i] = int(mask.any()), int(mask.sum())
                target, box = touches_known(comps, mask), np.full(comps.n, -1, np.int64)
                overlap = np.bincount(comps.label, weights=mask.reshape(-1)[comps.index],
                                      minlength=comps.n + 1)[1:].astype(np.int64)
            for name, value in (("patches", patches.astype(np.float16)), ("features", features),
                                ("target", target), ("frame", np.full(comps.n, i, np.int64)), ("overlap", overlap),
                                ("box", box)):
                parts[name].append(value)
        bar.update(len(batch))
    bar.close()
    p = patch
    empty = {"patches": np.zeros((0, 3, p, p), np.float16), "features": np.zeros((0, 5), np.float32),
             "target": np.zeros(0, bool), "frame": np.zeros(0, np.int64), "overlap": np.zeros(0, np.int64),
             "box": np.zeros(0, np.int64)}
    joined = {k: np.concatenate(v) if v else empty[k] for k, v in parts.items()}
    return Candidates(**joined, present=present, mask_px=mask_px, kind=np.array("box" if box_source else "mask"))


# ----------------------------------------------------------------------------- training and selection


def balance_weights(target: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Return per-candidate loss weights (mean 1): targets and clutter weigh half each; with groups (the source
    of each candidate), the targets of every source weigh the same, so a small source's targets are not drowned."""
    target = np.asarray(target, bool)
    weight = np.zeros(len(target))
    weight[~target] = 0.5 / max((~target).sum(), 1)
    if groups is None:
        weight[target] = 0.5 / max(target.sum(), 1)
    else:
        names = np.unique(groups[target])
        for g in names:
            chosen = target & (groups == g)
            weight[chosen] = 0.5 / len(names) / chosen.sum()
    return weight * len(target)


def train_verifier(data: Candidates, config: VerifierConfig = VerifierConfig(), epochs: int = 40, batch: int = 128,
                   lr: float = 2e-3, seed: int = 0, device: torch.device | str = "cpu", progress: bool = True,
                   groups: np.ndarray | None = None) -> tuple[CandidateVerifier, list[float]]:
    """Return (the trained verifier in eval mode, mean loss per epoch) from labelled candidates.

    Loss: binary cross-entropy weighted by ``balance_weights(target, groups)``; each batch's
    patches get one of the 8 flips and rotations; AdamW with a one-cycle schedule; seeded (CPU
    runs repeat exactly).
    """
    n, n_target = len(data.target), int(data.target.sum())
    if n_target == 0 or n_target == n:
        raise VerifyError(f"the training candidates are {n_target} targets and {n - n_target} clutter: both are "
                          "needed; add a source with real clutter (target-free frames) or with targets")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = CandidateVerifier(config).to(device)
    patches = torch.from_numpy(data.patches.astype(np.float32))
    features = torch.from_numpy(data.features.astype(np.float32))
    labels = torch.from_numpy(data.target.astype(np.float32))
    weight = torch.from_numpy(balance_weights(data.target, groups).astype(np.float32))
    steps = -(-n // batch)
    optimiser = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * steps)
    history = []
    for _ in tqdm(range(epochs), desc="train verifier", unit="epoch", disable=None if progress else True,
                  file=sys.stderr):
        net.train()
        order, total = torch.randperm(n, generator=generator), 0.0
        for k in range(0, n, batch):
            idx = order[k:k + batch]
            turn = int(torch.randint(8, (1,), generator=generator).item())
            logits = net(dihedral(patches[idx], turn).to(device), features[idx].to(device))
            loss = (F.binary_cross_entropy_with_logits(logits, labels[idx].to(device), reduction="none")
                    * weight[idx].to(device)).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        history.append(total / n)
    return net.eval(), history


def split_scores(data: Candidates, scores: np.ndarray, tau: float | None) -> dict:
    """Return one val split's scores when candidates scoring below tau are dropped (tau None: none dropped).

    Box sources: ``BoxCounts.compute()`` (pd, fa_per_frame, ..., as ``cal_from_mask.py --boxes`` counts);
    mask sources: iou (pooled; exact, since dropping a candidate removes exactly its pixels).
    Both: recall, the share of target candidates kept, and kept_clutter, the clutter candidates kept.
    """
    keep = np.ones(len(scores), bool) if tau is None else scores >= tau
    target = data.target
    out = {"recall": float(keep[target].mean()) if target.any() else 1.0, "kept_clutter": int((keep & ~target).sum()),
           "clutter": int((~target).sum())}
    n = len(data.present)
    if str(data.kind) == "box":   # a target candidate lies in a grown box of its frame (collect): the box scorer's rule
        frame, box = data.frame[keep], data.box[keep]
        stride = int(data.box.max(initial=0)) + 1                 # (frame, box) pairs as one integer each
        found = np.unique(frame[box >= 0] * stride + box[box >= 0])
        detected = np.bincount(found // stride, minlength=n)
        n_fa = np.bincount(frame[box < 0], minlength=n).astype(np.int64)
        out.update(BoxCounts().update(data.present, detected, n_fa).compute())
    else:
        inter = data.overlap[keep].sum()
        union = data.mask_px.sum() + data.features[keep, 0].sum() - inter
        out["iou"] = float(inter / union) if union else 0.0
    return out


def choose_tau(val: dict[str, tuple[Candidates, np.ndarray]], max_drop: float = 0.01,
               taus: Sequence[float] = TAUS) -> tuple[float | None, list[dict]]:
    """Return (the selected tau or None when no tau qualifies, the table of every tau's val scores).

    Selected: the highest selection score (``utils.eval.selection.selection_score``) among the taus that
    cost no source more than max_drop of its own measure (IoU for pixel masks, Pd for video)
    against LRRNet alone; ties go to the lower tau.
    """
    rows = [{"tau": None, "sources": {name: split_scores(c, s, None) for name, (c, s) in val.items()}}]
    rows += [{"tau": float(t), "sources": {name: split_scores(c, s, float(t)) for name, (c, s) in val.items()}}
             for t in taus]
    base = rows[0]["sources"]
    for row in rows:
        row["score"] = selection_score(row["sources"])
        row["allowed"] = all(m[key] >= base[name][key] - max_drop - 1e-12 for name, m in row["sources"].items()
                             for key in ("pd" if "pd" in m else "iou",))
    best = max((r for r in rows[1:] if r["allowed"]), key=lambda r: (r["score"], -r["tau"]), default=None)
    return (best["tau"] if best else None), rows


def format_val_table(rows: list[dict], chosen: float | None) -> str:
    """Return the val table as markdown: one row per tau, per source its score and recall."""
    names = list(rows[0]["sources"])
    head = "| tau | " + " | ".join(f"{n} {'Pd / FA per frame' if 'pd' in rows[0]['sources'][n] else 'IoU'} / kept "
                                     "targets / kept clutter" for n in names) + " | score |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for r in rows:
        cells = []
        for n in names:
            m = r["sources"][n]
            main = (f"{100 * (m['pd'] or 0.0):.2f} % / {m['fa_per_frame'] or 0.0:.3f}" if "pd" in m
                    else f"{100 * m['iou']:.2f}")
            cells.append(f"{main} / {100 * m['recall']:.1f} % / {m['kept_clutter']} of {m['clutter']}")
        tau = "none" if r["tau"] is None else f"{r['tau']:.2f}" + (" (selected)" if r["tau"] == chosen else "")
        lines.append(f"| {tau} | " + " | ".join(cells) + f" | {r['score']:.4f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command


def build_splits(sources: str, config: dict, video: tuple[int, int, int, int] = (VIDEO_EVERY, VIDEO_START,
                                                                                  VIDEO_VAL_EVERY, VIDEO_VAL_START)
                 ) -> tuple[list[tuple[str, object]], list[tuple[str, object]], object]:
    """Return ([(source, train split maker)], [(source, val split maker)], the first source's test split).

    A maker returns the split when called. Frame datasets are read and checked now and carve val
    from trainval with the checkpoint's own --val-fraction and --val-seed (the frames it was
    selected on); video sources are indexed and checked now and decoded only when called (cached
    candidates never need them): every video[0]-th labelled frame from frame video[1] of
    train.txt, every video[2]-th from frame video[3] of val.txt; still frames with box labels are read now,
    their layout's own train and val. Weights are ignored.
    """
    common = dict(val_fraction=config.get("val_fraction", 0.1), val_seed=config.get("val_seed", 0),
                  sixteen_bit=config.get("sixteen_bit", "range"))
    train, val, test = [], [], None

    def later(root: Path, split: str, every: int, start: int):
        index_videos(root, split)      # a missing split file or a bad labels.csv is found now
        return lambda: VideoFrameDataset(root, split, every=every, start=start)

    def now(dataset):
        return lambda: dataset

    try:
        for k, (name, _) in enumerate(parse_sources(sources)):
            root = resolve_data_root(name, SOURCES_PATH_HINT)
            kind = "video" if is_video_root(root) else "boxes" if is_still_box_root(root) else "masks"
            if kind != "masks" and k == 0:
                raise VerifyError(f"--sources {sources!r}: the first source ({name}) is scored on its test split, "
                                  "and a box-labelled source has none; put a dataset with pixel masks first")
            if kind == "video":
                train.append((name, later(root, "train", video[0], video[1])))
                val.append((name, later(root, "val", video[2], video[3])))
            elif kind == "boxes":      # still frames with box labels: their layout's own train and val
                train.append((name, now(StillBoxDataset(root, "train", sixteen_bit=common["sixteen_bit"]))))
                val.append((name, now(StillBoxDataset(root, "val", sixteen_bit=common["sixteen_bit"]))))
            else:
                train.append((name, now(IRSTDDataset(root, "train", **common))))
                val.append((name, now(IRSTDDataset(root, "val", **common))))
                if k == 0:
                    test = IRSTDDataset(root, "test", cache=False, **common)
    except (ConfigError, DataError) as error:
        raise VerifyError(f"--sources {sources!r}: {error}") from None
    return train, val, test


def weights_digest(net: torch.nn.Module) -> str:
    """Return the sha256 of a network's weights (names and values): LRRNet's, whatever else its file holds."""
    digest = hashlib.sha256()
    for name, value in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached(path: Path, make, fingerprint: str) -> Candidates:
    """Return the candidates cached at path when they were made the same way (fingerprint: the weights, the
    frames sampled, threshold and patch), else make them and cache them with their fingerprint beside."""
    stamp = path.with_suffix(".fingerprint")
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        log.info("reusing %s", path)
        return Candidates.load(path)
    data = make()
    stamp.unlink(missing_ok=True)   # a run killed between the two writes leaves no stamp, so nothing stale is reused
    data.save(path)
    atomic_write_text(stamp, fingerprint + "\n")
    return data


def score_test(predictor, verification: Verification, test) -> dict:
    """Return the pixel metrics of the test split without and with the verifier (one LRRNet pass per frame)."""
    alone, verified = Evaluator(), Evaluator()
    for i in tqdm(range(len(test)), desc="test", unit="frame", file=sys.stderr, disable=None):
        item = test[i]
        frame, mask = item["image"][0].numpy(), item["mask"][0].numpy()
        prob = predict_maps(predictor, [frame])[0][0]
        alone.update(prob, mask)
        verified.update(verification(frame, prob), mask)
    return {"without": plain(alone.compute()), "with": plain(verified.compute()), "n_test": len(test)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = ArgumentParser(prog="python -m utils.verify", description="Train the second stage that re-scores LRRNet's candidate targets "
                                                 "and store it in a copy of the checkpoint (docs/verifier.md).")
    parser.add_argument("--checkpoint", required=True, type=Path, help="an LRRNet checkpoint of run_configs.py")
    parser.add_argument("--out", required=True, type=Path,
                        help="the checkpoint to write: the input plus its verifier (an existing file, the input "
                             "itself included, only with --overwrite)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --out (e.g. the input itself)")
    parser.add_argument("--sources", default=None,
                        help="NAME[:WEIGHT],... as run_configs.py takes them (default: the checkpoint's own "
                             "--sources); the first needs pixel masks and a test split")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="candidate caches and the report (default runs/verify_<checkpoint stem>); a rerun "
                             "reuses the caches of the same checkpoint")
    parser.add_argument("--video-every", type=non_negative_int, nargs=2, default=(VIDEO_EVERY, VIDEO_START),
                        metavar=("EVERY", "START"), help="training frames of each train.txt video: every EVERY-th "
                        f"labelled frame from frame START (default {VIDEO_EVERY} {VIDEO_START})")
    parser.add_argument("--video-val-every", type=non_negative_int, nargs=2, default=(VIDEO_VAL_EVERY, VIDEO_VAL_START),
                        metavar=("EVERY", "START"), help="val frames of each val.txt video (default "
                        f"{VIDEO_VAL_EVERY} {VIDEO_VAL_START}: none of the every-10th frames from 0 docs/results.md "
                        "reports)")
    parser.add_argument("--epochs", type=positive_int, default=40, help="training epochs (default 40)")
    parser.add_argument("--width", type=positive_int, default=VerifierConfig.width,
                        help=f"first-stage channels (default {VerifierConfig.width})")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="training seed (default 0)")
    parser.add_argument("--max-drop", type=finite_float, default=0.01,
                        help="largest loss of any val source's IoU (pixel masks) or Pd (video) against LRRNet alone "
                             "that tau may cost (default 0.01: one point)")
    add_device(parser, default="cpu")
    add_log_level(parser)
    args = parser.parse_args(argv)
    if args.video_every[0] < 1 or args.video_val_every[0] < 1:
        parser.error("--video-every / --video-val-every: EVERY must be at least 1 and START 0 or more")
    if not 0 <= args.max_drop < 1:
        parser.error(f"--max-drop {args.max_drop:g} must lie in [0, 1)")
    if args.out.suffix.lower() not in (".pt", ".pth"):
        parser.error(f"--out {args.out} should end in .pt (inference.py --checkpoint reads it)")
    return args


def read_checkpoint(path: Path, sources: str | None) -> tuple[torch.nn.Module, dict, str]:
    """Return (LRRNet, its training config, the --sources to use: the given ones or its own); VerifyError or
    CheckpointError when the file cannot take a verifier."""
    net, meta = load_model(path)
    if meta.get("source") == "release state_dict":
        raise VerifyError(f"{path} is a raw state_dict, which has no room for a verifier: fine-tune it with "
                          "run_configs.py --init first and pass that run's checkpoint")
    if isinstance(meta.get("verifier"), dict):
        log.info("%s already holds a verifier: LRRNet's candidates are collected without it, and it is replaced",
                 path)
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    sources = sources or config.get("sources")
    if not sources:
        raise VerifyError(f"{path} was trained on one dataset (no --sources in its config): pass --sources, e.g. "
                          "SIRSTv1,NUDT-SIRST,IR-Drone-Video")
    return net, config, sources


def write_outputs(checkpoint: Path, entry: dict, out: Path, run_dir: Path, table: str) -> None:
    """Write OUT (the checkpoint plus its "verifier" entry) atomically, then RUN/report.md and report.json;
    VerifyError naming what could not be written."""
    ckpt = load_checkpoint(checkpoint)
    ckpt["verifier"] = entry
    try:
        atomic_save(ckpt, out)
    except OSError as error:
        raise VerifyError(f"cannot write {out} ({error.strerror or error}): pass a writable --out") from None
    report = json.dumps({k: v for k, v in entry.items() if k != "state_dict"}, indent=1, default=str)
    try:
        atomic_write_text(run_dir / "report.md", table + "\n")
        atomic_write_text(run_dir / "report.json", report)
    except OSError as error:
        raise VerifyError(f"wrote {out}, but not the report in {run_dir} ({error.strerror or error})") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Collect candidates, train, select tau on val, score test once and write the checkpoint; 0, or 2 on an error."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        check_output(args.out, args.overwrite)     # before the minutes of collecting candidates
        device = select_device(args.device)
        net, config, sources = read_checkpoint(args.checkpoint, args.sources)
        train_splits, val_splits, test = build_splits(sources, config, (*args.video_every, *args.video_val_every))
    except (CheckpointError, VerifyError, ValueError) as error:
        return fail(str(error))
    run_dir = args.run_dir or Path("runs") / f"verify_{args.checkpoint.stem}"
    vconfig = VerifierConfig(width=args.width)
    made = {"weights": weights_digest(net), "threshold": THRESHOLD, "patch": vconfig.patch,
            "video_every": list(args.video_every), "video_val_every": list(args.video_val_every),
            **{k: config.get(k) for k in ("val_fraction", "val_seed", "sixteen_bit")}}
    predictor = Predictor(net, device)

    def candidates(split: str, name: str, make) -> Candidates:
        return cached(run_dir / "candidates" / f"{Path(name).name}_{split}.npz",   # a release name, or a folder's
                      lambda: collect(predictor, make(), THRESHOLD, vconfig.patch, desc=f"{name} {split}"),
                      json.dumps({**made, "source": name, "split": split}, sort_keys=True))

    try:
        parts = [candidates("train", n, d) for n, d in train_splits]
        val = {n: candidates("val", n, d) for n, d in val_splits}
        train = Candidates.join(parts)
        groups = np.concatenate([np.full(len(p.target), k) for k, p in enumerate(parts)])  # each source's targets
        log.info("training candidates: %s", ", ".join(f"{n}: {int(p.target.sum())} targets, {int((~p.target).sum())} "
                                                      "clutter" for (n, _), p in zip(train_splits, parts)))
        verifier, history = train_verifier(train, vconfig, args.epochs, seed=args.seed, device=device, groups=groups)
    except (VerifyError, DataError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write the candidates to {run_dir} ({error.strerror or error}): pass a writable --run-dir")
    scored = {n: (c, score_patches(verifier, c.patches, c.features, device)) for n, c in val.items()}
    tau, rows = choose_tau(scored, args.max_drop)
    table = format_val_table(rows, tau)
    print(table)
    if tau is None:
        return fail(f"every tau costs some val source more than {args.max_drop:g} of its IoU or Pd: nothing written; "
                    "raise --max-drop or train longer (--epochs)")
    verification = Verification(verifier, tau, device)
    try:
        test_scores = score_test(predictor, verification, test)
    except DataError as error:
        return fail(str(error))
    entry = {"state_dict": {k: v.cpu() for k, v in verifier.state_dict().items()}, "hparams": verifier.hparams(),
             "tau": tau, "threshold": THRESHOLD, "sources": sources, "epochs": args.epochs, "seed": args.seed,
             "max_drop": args.max_drop, "loss_history": history, "val": rows, "test": test_scores,
             "n_train": {n: {"targets": int(p.target.sum()), "clutter": int((~p.target).sum())}
                         for (n, _), p in zip(train_splits, parts)},
             "code_revision": code_revision()}
    try:
        write_outputs(args.checkpoint, entry, args.out, run_dir, table)
    except VerifyError as error:
        return fail(str(error))
    w, v = test_scores["without"], test_scores["with"]
    print(f"tau {tau:.2f} selected on val; test ({test_scores['n_test']} frames) without / with the verifier: "
          f"IoU {100 * w['iou']:.2f} / {100 * v['iou']:.2f}, Pd {100 * w['pd']:.2f} / {100 * v['pd']:.2f}, "
          f"Fa {1e6 * w['fa']:.2f} / {1e6 * v['fa']:.2f} x 1e-6")
    print(f"wrote {args.out} ({args.out.stat().st_size / 2 ** 20:.1f} MiB) and {run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
