"""The selection score: the one number that picks a checkpoint on val (training), a verifier's tau (utils.verify)
and a merged model (utils.merge); docs/protocols.md#general-model gives the reasons."""
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
