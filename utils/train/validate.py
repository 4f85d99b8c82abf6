"""Validation and test scores of a network during and after training: pixel metrics on mask sources, box counts on
box-labelled video and still frames (``utils.eval.boxes``, the rule of ``cal_from_mask.py --boxes``), and the selection score that
picks best.pt (``utils.eval.selection``). Under torchrun every rank scores its share and the counts are summed."""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from utils.data import IRSTDDataset, StillBoxDataset, VideoFrameDataset, size_batches
from utils.eval.boxes import BoxCounts, inside_grown_box
from utils.eval.metrics import THRESHOLD, Evaluator, plain
from utils.eval.selection import selection_score
from utils.infer.device import autocast, fixed_algorithms
from utils.infer.predict import default_batch_size, detect_targets
from utils.train.setup import Run
from utils.train.state import TrainState


@torch.no_grad()
def evaluate(net: nn.Module, dataset: IRSTDDataset, device: torch.device, rank: int = 0, world: int = 1,
             dtype: torch.dtype = torch.float32, progress: bool = False, batch_size: int = 1) -> Evaluator:
    """Return an Evaluator filled with every frame of the dataset at its native size (summed over ranks);
    ``batch_size`` > 1 runs frames of one size together (the same scores, fewer calls)."""
    net.eval()
    evaluator = Evaluator()
    mine = list(range(rank, len(dataset), world))
    batches = size_batches([dataset.sizes[i] for i in mine], batch_size) if batch_size > 1 else [[k] for k in
                                                                                                  range(len(mine))]
    for batch in tqdm(batches, desc=f"eval {dataset.split}", leave=False, disable=not progress or rank != 0):
        items = [dataset[mine[k]] for k in batch]
        with autocast(device, dtype):
            _, t = net(torch.stack([item["image"] for item in items]).to(device))
        for item, prob in zip(items, torch.sigmoid(t.float())[:, 0].cpu().numpy()):
            evaluator.update(prob, item["mask"][0].numpy())
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, evaluator)
        evaluator = gathered[0]
        for other in gathered[1:]:
            evaluator.merge(other)
    return evaluator


@torch.no_grad()
def evaluate_boxes(net: nn.Module, dataset: VideoFrameDataset | StillBoxDataset, device: torch.device, rank: int = 0, world: int = 1,
                   dtype: torch.dtype = torch.float32, threshold: float = THRESHOLD) -> dict:
    """Return ``BoxCounts.compute()`` of net on box-labelled frames, as ``cal_from_mask.py --boxes`` counts them:
    the components of prob > threshold are the detections, matched by ``utils.eval.boxes.inside_grown_box`` to
    each of the frame's boxes (a video frame's "box", NaN when absent; a still frame's "boxes")."""
    net.eval()
    counts = BoxCounts()
    mine = list(range(rank, len(dataset), world))
    for batch in size_batches([dataset.sizes[i] for i in mine], default_batch_size(device)):
        items = [dataset[mine[k]] for k in batch]
        with autocast(device, dtype):
            _, t = net(torch.stack([item["image"] for item in items]).to(device))
        probs = torch.sigmoid(t.float())[:, 0].cpu().numpy()
        for item, prob in zip(items, probs):
            found = detect_targets(prob, threshold)
            boxes = (item["boxes"] if "boxes" in item else item["box"][None]).numpy().reshape(-1, 4)
            boxes = boxes[np.isfinite(boxes).all(axis=1)]
            n, k = len(found), len(boxes)
            inside = inside_grown_box(np.repeat([d["x"] for d in found], k), np.repeat([d["y"] for d in found], k),
                                      np.tile(boxes, (n, 1))).reshape(n, k)   # detection x box
            counts.update(k, int(inside.any(axis=0).sum()), int((~inside.any(axis=1)).sum()))
    return counts.all_reduce(device if world > 1 else None).compute()


def val_batch(run: Run) -> int:
    """Return the batch size of a run's validation and test scoring: frames of one size together under --loader
    device (the GPU path), one at a time otherwise."""
    return default_batch_size(run.device) if run.cfg.loader == "device" else 1


def score_val(net: nn.Module, run: Run) -> dict:
    """Return val scores of one set of weights: the (first source's) pixel metrics, per-source scores and "score"."""
    return score_sets(net, run.val_set, run.val_sources, run.device, run.rank, run.world, run.dtype, val_batch(run))


def score_sets(net: nn.Module, val_set: IRSTDDataset, val_sources: tuple, device: torch.device, rank: int = 0,
               world: int = 1, dtype: torch.dtype = torch.float32, batch_size: int = 1) -> dict:
    """Return score_val's dict for val_set, or for each (name, val) of val_sources when there are several sources;
    box-labelled sources (``box_labelled``: videos, packed or not) by box counts."""
    if not val_sources:
        scores = plain(evaluate(net, val_set, device, rank, world, dtype, batch_size=batch_size).compute())
        return {**scores, "score": scores["iou"]}
    per_source = {}
    for name, dataset in val_sources:
        if getattr(dataset, "box_labelled", False):
            per_source[name] = evaluate_boxes(net, dataset, device, rank, world, dtype)
        else:
            per_source[name] = plain(evaluate(net, dataset, device, rank, world, dtype, batch_size=batch_size).compute())
    first = per_source[val_sources[0][0]]
    return {**first, "sources": per_source, "score": selection_score(per_source)}


def validate(state: TrainState, run: Run) -> dict:
    """Return val scores of the raw weights (and the EMA's), and which of them scored the higher selection score
    (val IoU for one source; the declared combination under --sources)."""
    candidates = {"raw": state.net, **({"ema": state.ema.module} if state.ema is not None else {})}
    with fixed_algorithms():     # native frames of many sizes: no cuDNN autotuning per shape
        results = {name: score_val(net, run) for name, net in candidates.items()}
    selected = max(results, key=lambda k: results[k]["score"])
    return {"selected": selected, "selected_iou": results[selected]["iou"],
            "selected_score": results[selected]["score"], **results}
