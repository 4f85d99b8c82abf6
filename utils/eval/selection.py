"""The selection score: the one number that picks a checkpoint on val (training), a verifier's tau (utils.verify)
and a merged model (utils.merge); docs/protocols.md#general-model gives the reasons. Between candidate general
models, the score extended by a detectability term (``extended_score``): how often faint point targets pasted on
val backgrounds are found (``python -m utils.detectability``), less its false alarms."""
from __future__ import annotations

import numpy as np


def source_term(metrics: dict) -> float:
    """Return one val source's term: its pooled IoU (pixel masks), or Pd - min(false alarms per frame, 1) for
    box-labelled video (a Pd undefined for want of targets counts as 0)."""
    if "iou" in metrics:
        return float(metrics["iou"])
    return float(metrics["pd"] or 0.0) - min(float(metrics["fa_per_frame"] or 0.0), 1.0)


def selection_score(per_source: dict[str, dict]) -> float:
    """Return the mean over sources of source_term: the --sources selection score (higher is better)."""
    return float(np.mean([source_term(m) for m in per_source.values()]))


# The detectability term: hot point targets of 3 x 3 and 5 x 5 px at 8, 12 and 20 grey levels over every background kind,
# the faint small targets real sky footage holds and v2's map found missed (docs/results.md#detectability-of-the-general-model)
DETECT_SHAPES = ("point 3x3", "point 5x5")
DETECT_CONTRASTS = (8.0, 12.0, 20.0)


def detectability_term(report: dict) -> float:
    """Return a detectability report's term (``utils.detectability``'s JSON): the model's pooled Pd over the cells
    DETECT_SHAPES x DETECT_CONTRASTS (hot, all kinds) less min(false alarms per untouched frame, 1)."""
    cells = [r for r in report["rows"] if r["detector"] == "model" and r["kind"] == "all" and r["polarity"] > 0
             and r["shape"] in DETECT_SHAPES and float(r["contrast"]) in DETECT_CONTRASTS]
    if not cells:
        raise ValueError(f"the detectability report has no model cells for {DETECT_SHAPES} at {DETECT_CONTRASTS} grey "
                         "levels: measure it with the default grid (not --quick)")
    pd = sum(r["detected"] for r in cells) / sum(r["n"] for r in cells)
    return float(pd - min(float(report["fa_per_frame"]), 1.0))


def extended_score(per_source: dict[str, dict], report: dict) -> float:
    """Return the selection score with the detectability term as one more source: the mean of every val source's
    term and ``detectability_term(report)`` (higher is better)."""
    terms = [source_term(m) for m in per_source.values()] + [detectability_term(report)]
    return float(np.mean(terms))
