"""Detection metrics for infrared small-target detection, as accumulators.

Definitions follow the field's convention (docs/metrics.md):

- IoU: intersections summed over the whole set / unions summed over the whole set
  (papers call it "mIoU"; it is pooled, not a mean over images).
- nIoU: mean over images of each image's IoU (ACM / ALCNet convention); an image
  where both prediction and mask are empty scores 0, as in their code (eps / eps+...).
- precision, recall, F1: pixel level, counts summed over the set.
- Pd: targets detected / all targets; 8-connected components, a target is detected
  when a predicted component's centroid lies strictly less than 3 px from its
  centroid; each predicted component detects at most one target; targets are taken
  in label (raster) order and the first unused predicted component in label order
  wins (BasicIRSTD's PD_FA).
- Fa: pixels of predicted components that detected nothing / all pixels of all
  images, as a FRACTION (papers print it x 1e-6). Matched components are masked out
  by identity, never by comparing areas (the widely copied defect, kept only in
  ReleasePdFa for comparison with published numbers).
- hIoU (hierarchical IoU, "Rethinking Evaluation of Infrared Small Target Detection", NeurIPS 2025
  Datasets and Benchmarks; its library PyIRSTDMetrics): components are paired one to one by OPDC
  matching (a Hungarian assignment on centroid distance whose pairs count when their component IoU
  is >= 0.5, then a second assignment of the rest whose pairs count when closer than 3 px);
  loc IoU = matched / (matched + unmatched predictions + unmatched targets), seg IoU = mean pixel
  IoU of the matched pairs, hIoU = loc IoU x seg IoU; Pd and Fa on the same pairs; and the paper's
  split of each IoU's shortfall into error kinds. Undefined rates (no pair, no target) are None.
- ROC: thresholds i / 200, i = 0..200; a target counts as detected at t when any of
  its pixels has p >= t; false-alarm rate = background pixels with p >= t /
  background pixels; AUC by the trapezoid rule over the false-alarm rate.

All inputs are probability maps in [0, 1] (apply a sigmoid to the network's logits
first) and masks where nonzero means target. One connected-component pass per map
and per frame; the ROC comes from per-frame histograms, with no loop over thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# sigmoid(T) > 0.5, i.e. logit T > 0, is a detection (docs/metrics.md#the-threshold; the release's test script).
THRESHOLD = 0.5
# A target is detected when a predicted centroid is strictly closer than this, in pixels
# (docs/metrics.md#pd-and-fa; DNANet / BasicIRSTD PD_FA: `if distance < 3`).
CENTROID_TOLERANCE_PX = 3
# Components are 8-connected (docs/metrics.md#pd-and-fa; skimage.measure.label(connectivity=2) in DNANet / BasicIRSTD).
CONNECTIVITY = 8
# OPDC matching's first stage keeps an assigned pair when its component IoU is at least this
# (docs/metrics.md#hiou-and-opdc-matching; PyIRSTDMetrics' OPDCMatching(overlap_threshold=0.5)); its second
# stage keeps a pair strictly closer than CENTROID_TOLERANCE_PX (the same library's distance_threshold=3).
OPDC_MIN_IOU = 0.5
# ROC thresholds are i / ROC_BINS for i = 0..ROC_BINS (docs/metrics.md#roc-and-auc; DNANet's ROCMetric uses bins=200 alike).
ROC_BINS = 200


# ----------------------------------------------------------------------------- helpers


def check_probabilities(prob: np.ndarray, name: str | None = None) -> np.ndarray:
    """Return `prob` as a float array (probabilities in [0, 1]); ValueError for logits, NaN or a wrong shape."""
    what = f"prediction for {name}" if name else "prediction"
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"{what} has shape {prob.shape}; expected one H x W probability map")
    if prob.dtype == bool or np.issubdtype(prob.dtype, np.integer):
        prob = prob.astype(np.float32)
    elif not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"{what} has dtype {prob.dtype}; expected a float probability map in [0, 1]")
    if prob.size == 0:
        raise ValueError(f"{what} is empty (shape {prob.shape})")
    lo, hi = float(prob.min()), float(prob.max())
    if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
        raise ValueError(
            f"{what} has values in [{lo:g}, {hi:g}], outside [0, 1]: these look like logits "
            "(or an 8-bit map, or NaN). Pass probabilities: apply a sigmoid first "
            "(torch.sigmoid(T) or scipy.special.expit(T)), or divide an 8-bit map by 255."
        )
    return prob


@dataclass(frozen=True)
class Components:
    """Connected components of one binary map, stored sparsely (foreground pixels only)."""

    n: int  # number of components
    index: np.ndarray  # (F,) flat raster positions of the foreground pixels, ascending
    label: np.ndarray  # (F,) their component labels 1..n, numbered in raster order
    shape: tuple[int, int]  # H, W of the map

    def centroids(self) -> np.ndarray:
        """Return the n x 2 component centroids as (row, col) in pixels (mean pixel coordinates)."""
        if self.n == 0:
            return np.zeros((0, 2))
        width = self.shape[1]
        areas = self.areas()
        rows = np.bincount(self.label, weights=self.index // width, minlength=self.n + 1)[1:]
        cols = np.bincount(self.label, weights=self.index % width, minlength=self.n + 1)[1:]
        return np.stack([rows / areas, cols / areas], axis=1)

    def areas(self) -> np.ndarray:
        """Return the n component areas in pixels (int64)."""
        return np.bincount(self.label, minlength=self.n + 1)[1:].astype(np.int64)

    def labels(self) -> np.ndarray:
        """Return the dense H x W int32 label image (0 = background)."""
        out = np.zeros(self.shape[0] * self.shape[1], np.int32)
        out[self.index] = self.label
        return out.reshape(self.shape)


def find_components(binary: np.ndarray) -> Components:
    """Return the CONNECTIVITY-connected components of a bool H x W map, labelled in raster order.

    Labels are numbered by each component's first pixel in raster order, exactly as
    skimage.measure.label and scipy.ndimage.label number them (the "label order" of
    docs/metrics.md); OpenCV's faster, parallel labeller does the one pass and its
    numbering is remapped.
    """
    binary = np.ascontiguousarray(binary, dtype=bool)
    index = np.flatnonzero(binary)
    if index.size == 0:
        return Components(0, index, np.zeros(0, np.int32), binary.shape)
    n_plus_1, labels = cv2.connectedComponents(binary.view(np.uint8), connectivity=CONNECTIVITY, ltype=cv2.CV_32S)
    n = n_plus_1 - 1
    label = labels.ravel()[index]
    if n > 1:
        first = np.full(n + 1, binary.size, np.int64)
        np.minimum.at(first, label, index)  # each OpenCV label's first pixel in raster order
        order = np.argsort(first[1:], kind="stable") + 1  # OpenCV labels sorted by first pixel
        if np.any(order[1:] < order[:-1]):
            remap = np.zeros(n + 1, np.int32)
            remap[order] = np.arange(1, n + 1, dtype=np.int32)
            label = remap[label]
    return Components(n, index, label, binary.shape)


def label_components(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """Return (labels int32 H x W, count) of CONNECTIVITY-connected components numbered in raster order."""
    comps = find_components(binary)
    return comps.labels(), comps.n


def pair_overlaps(gt: Components, found: Components) -> np.ndarray:
    """Return the gt.n x found.n int64 matrix of pixels each target shares with each predicted component."""
    _, in_gt, in_found = np.intersect1d(gt.index, found.index, assume_unique=True, return_indices=True)
    pair = (gt.label[in_gt].astype(np.int64) - 1) * found.n + (found.label[in_found] - 1)
    return np.bincount(pair, minlength=gt.n * found.n).reshape(gt.n, found.n)


def opdc_match(distance: np.ndarray, iou: np.ndarray, min_iou: float = OPDC_MIN_IOU,
               tolerance_px: float = CENTROID_TOLERANCE_PX) -> np.ndarray:
    """Return the n_gt x n_pred bool matrix of OPDC pairs, from centroid distances (px) and component IoUs.

    Overlap priority: one assignment over all pairs minimising the summed centroid distance (Hungarian),
    of which the pairs with IoU >= min_iou are kept. Distance compensation: the targets and components
    left over are assigned again on distance, and the pairs strictly closer than tolerance_px are kept
    (docs/metrics.md#hiou-and-opdc-matching). Each target and each component is in at most one pair.
    """
    matched = np.zeros(distance.shape, bool)
    if distance.size == 0:
        return matched
    # scipy.optimize takes about 0.5 s to import: only when a frame has both targets and predicted components
    from scipy.optimize import linear_sum_assignment

    if np.any(iou >= min_iou):
        rows, cols = linear_sum_assignment(distance)
        keep = iou[rows, cols] >= min_iou
        matched[rows[keep], cols[keep]] = True
    free_gt, free_pred = np.flatnonzero(~matched.any(axis=1)), np.flatnonzero(~matched.any(axis=0))
    if free_gt.size and free_pred.size:
        left = distance[np.ix_(free_gt, free_pred)]
        if np.any(left < tolerance_px):
            rows, cols = linear_sum_assignment(left)
            keep = left[rows, cols] < tolerance_px
            matched[free_gt[rows[keep]], free_pred[cols[keep]]] = True
    return matched


class ExactSum:
    """A sum of floats read as math.fsum of every value added: correctly rounded whatever the order, so merging
    accumulators from chunks or ranks gives the one-pass number to the last bit. It keeps the values (one per
    matched pair: a few thousand on a benchmark's test split)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, values) -> None:
        """Add every float of an iterable (or a numpy array) to the sum."""
        self.values.extend(np.asarray(values, np.float64).ravel().tolist())

    def merge(self, other: ExactSum) -> None:
        """Add another sum's values."""
        self.values.extend(other.values)

    def value(self) -> float:
        """Return the correctly rounded sum (math.fsum)."""
        return math.fsum(self.values)


def _safe_div(num: float, den: float) -> float:
    """Return num / den as a float, 0.0 when den is 0 (no NaN in reports)."""
    return float(num) / float(den) if den else 0.0


def _rate(num: float, den: float) -> float | None:
    """Return num / den as a float, None when den is 0 (an undefined rate)."""
    return float(num) / float(den) if den else None


def _as_target(mask: np.ndarray, shape: tuple[int, ...], name: str | None) -> np.ndarray:
    """Return mask != 0 as a bool H x W array; ValueError naming both shapes when they differ."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        what = f" for {name}" if name else ""
        raise ValueError(
            f"mask{what} has shape {mask.shape} but the prediction has shape {tuple(shape)}: "
            "resize one to the other before scoring (cal_from_mask.py does this for same-aspect masks)"
        )
    return mask != 0


# ----------------------------------------------------------------------------- accumulators


class SegmentationMetrics:
    """Pixel-level IoU (pooled over the set), nIoU (mean per image), precision, recall, F1 of binary maps."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Clear all counts (pixels) and the per-image IoU sum."""
        self.intersection = 0
        self.union = 0
        self.tp = 0
        self.fp = 0
        self.fn = 0
        self.iou_sum = 0.0  # sum over images of each image's IoU, for nIoU
        self.n_images = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one image: pred and target are bool H x W maps (True = target pixel)."""
        pred, target = np.asarray(pred, bool), np.asarray(target, bool)
        inter = int(np.count_nonzero(pred & target))
        n_pred = int(np.count_nonzero(pred))
        n_true = int(np.count_nonzero(target))
        union = n_pred + n_true - inter
        self.intersection += inter
        self.union += union
        self.tp += inter
        self.fp += n_pred - inter
        self.fn += n_true - inter
        self.iou_sum += _safe_div(inter, union)  # both empty -> 0 (ACM / ALCNet convention)
        self.n_images += 1

    def merge(self, other: SegmentationMetrics) -> None:
        """Add another accumulator's counts to this one."""
        for key in ("intersection", "union", "tp", "fp", "fn", "iou_sum", "n_images"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def compute(self) -> dict:
        """Return iou (pooled), niou (mean per image), precision, recall, f1: fractions in [0, 1]."""
        precision = _safe_div(self.tp, self.tp + self.fp)
        recall = _safe_div(self.tp, self.tp + self.fn)
        return {
            "iou": _safe_div(self.intersection, self.union),
            "niou": _safe_div(self.iou_sum, self.n_images),
            "precision": precision,
            "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall),
        }


class PdFa:
    """Target-level probability of detection Pd and pixel-level false-alarm rate Fa (a fraction)."""

    def __init__(self, tolerance_px: float = CENTROID_TOLERANCE_PX) -> None:
        self.tolerance_px = tolerance_px
        self.reset()

    def reset(self) -> None:
        """Clear the counts of targets, detections, false-alarm pixels and pixels."""
        self.n_targets = 0
        self.n_detected = 0
        self.fa_pixels = 0
        self.n_pixels = 0

    def update(self, pred: np.ndarray, target: np.ndarray, target_components: Components | None = None,
               pred_components: Components | None = None) -> None:
        """Add one image: pred and target are bool H x W maps; *_components = find_components(of each) if known."""
        pred, target = np.asarray(pred, bool), np.asarray(target, bool)
        gt = target_components if target_components is not None else find_components(target)
        found = pred_components if pred_components is not None else find_components(pred)
        n_gt, n_pred = gt.n, found.n
        gt_centroids, pred_centroids, pred_areas = gt.centroids(), found.centroids(), found.areas()
        used = np.zeros(n_pred, bool)  # predicted components that detected a target
        if n_gt and n_pred:
            dist = np.linalg.norm(gt_centroids[:, None, :] - pred_centroids[None, :, :], axis=2)  # n_gt x n_pred
            close = dist < self.tolerance_px
            for g in range(n_gt):  # ground truth in label order; first unused predicted component wins
                hits = np.flatnonzero(close[g] & ~used)
                if hits.size:
                    used[hits[0]] = True
        self.n_targets += n_gt
        self.n_detected += int(used.sum())
        self.fa_pixels += self._false_alarm_pixels(pred_areas, used)
        self.n_pixels += pred.size

    def _false_alarm_pixels(self, areas: np.ndarray, used: np.ndarray) -> int:
        """Return the pixels of predicted components that detected nothing (matched ones masked by identity)."""
        return int(areas[~used].sum())

    def merge(self, other: PdFa) -> None:
        """Add another accumulator's counts to this one."""
        if type(other) is not type(self) or other.tolerance_px != self.tolerance_px:
            raise ValueError(f"cannot merge {type(other).__name__}(tolerance {other.tolerance_px}) "
                             f"into {type(self).__name__}(tolerance {self.tolerance_px})")
        for key in ("n_targets", "n_detected", "fa_pixels", "n_pixels"):
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def compute(self) -> dict:
        """Return pd (fraction of targets detected) and fa (false-alarm pixels / all pixels, a fraction)."""
        return {"pd": _safe_div(self.n_detected, self.n_targets), "fa": _safe_div(self.fa_pixels, self.n_pixels)}


class ReleasePdFa(PdFa):
    """The widely copied Pd/Fa (DNANet's PD_FA, used by the LRRNet release): DEFECTIVE, for comparison only.

    Matching is the same, but false alarms are found by comparing component AREAS: an
    unmatched component whose area equals any matched one's is silently not counted,
    so Fa is undercounted. Use PdFa for real numbers.
    """

    def _false_alarm_pixels(self, areas: np.ndarray, used: np.ndarray) -> int:
        """Return the release's false-alarm pixels: areas of components whose area no matched component has."""
        matched_areas = areas[used]
        return int(areas[~np.isin(areas, matched_areas)].sum())


class HIoU:
    """hIoU = loc IoU x seg IoU over OPDC-matched components, with OPDC Pd, Fa and the paper's error split.

    Counts are summed over the set: loc IoU = matched / (matched + unmatched predicted components +
    unmatched targets); seg IoU = the mean over all matched pairs of the pair's pixel IoU. The error
    split (docs/metrics.md#hiou-and-opdc-matching) divides 1 - seg IoU per pair into merged, interference
    and missed pixels, and 1 - loc IoU into interference, missed, m2s and s2m components.
    """

    COUNTS = ("n_matched", "n_false", "n_missed", "fa_pixels", "n_pixels", "n_interference", "n_unreached", "n_m2s",
              "n_s2m")
    SUMS = ("iou_sum", "merge_sum", "interference_sum", "missed_pixels_sum")

    def __init__(self, min_iou: float = OPDC_MIN_IOU, tolerance_px: float = CENTROID_TOLERANCE_PX) -> None:
        self.min_iou = min_iou
        self.tolerance_px = tolerance_px
        self.reset()

    def reset(self) -> None:
        """Clear every count (components, pixels) and the per-pair sums."""
        self.n_matched = 0  # matched pairs (TP)
        self.n_false = 0  # predicted components left unmatched (FP)
        self.n_missed = 0  # targets left unmatched (FN)
        self.fa_pixels = 0  # pixels of the unmatched predicted components
        self.n_pixels = 0
        self.iou_sum = ExactSum()  # per matched pair: pixel IoU, and the three parts of 1 - IoU
        self.merge_sum = ExactSum()
        self.interference_sum = ExactSum()
        self.missed_pixels_sum = ExactSum()
        self.n_interference = 0  # predicted components with no target within reach (IoU >= min_iou or close)
        self.n_unreached = 0  # targets with no predicted component within reach
        self.n_m2s = 0  # unmatched predicted components that had a target within reach
        self.n_s2m = 0  # unmatched targets that had a predicted component within reach

    def update(self, pred: np.ndarray, target: np.ndarray, target_components: Components | None = None,
               pred_components: Components | None = None) -> None:
        """Add one image: pred and target are bool H x W maps; *_components = find_components(of each) if known."""
        pred, target = np.asarray(pred, bool), np.asarray(target, bool)
        gt = target_components if target_components is not None else find_components(target)
        found = pred_components if pred_components is not None else find_components(pred)
        self.n_pixels += pred.size
        pred_areas = found.areas()
        if not (gt.n and found.n):
            self.n_false += found.n
            self.n_interference += found.n
            self.n_missed += gt.n
            self.n_unreached += gt.n
            self.fa_pixels += int(pred_areas.sum())
            return
        gt_areas = gt.areas()
        inter = pair_overlaps(gt, found)  # n_gt x n_pred pixels
        union = gt_areas[:, None] + pred_areas[None, :] - inter
        iou = inter / union
        distance = np.linalg.norm(gt.centroids()[:, None, :] - found.centroids()[None, :, :], axis=2)
        matched = opdc_match(distance, iou, self.min_iou, self.tolerance_px)
        g, p = np.nonzero(matched)  # the pairs, targets in label order
        pair_union = union[g, p]
        on_targets = inter.sum(axis=0)  # each predicted component's pixels on any target
        self.iou_sum.add(inter[g, p] / pair_union)
        self.merge_sum.add((on_targets[p] - inter[g, p]) / pair_union)  # pixels on other targets
        self.interference_sum.add((pred_areas[p] - on_targets[p]) / pair_union)  # pixels on background
        self.missed_pixels_sum.add((gt_areas[g] - inter[g, p]) / pair_union)
        reach = (iou >= self.min_iou) | (distance < self.tolerance_px)
        false, missed = ~matched.any(axis=0), ~matched.any(axis=1)
        lonely_pred, lonely_gt = ~reach.any(axis=0), ~reach.any(axis=1)
        self.n_matched += g.size
        self.n_false += int(false.sum())
        self.n_missed += int(missed.sum())
        self.fa_pixels += int(pred_areas[false].sum())
        self.n_interference += int(lonely_pred.sum())
        self.n_unreached += int(lonely_gt.sum())
        self.n_m2s += int((false & ~lonely_pred).sum())
        self.n_s2m += int((missed & ~lonely_gt).sum())

    def merge(self, other: HIoU) -> None:
        """Add another accumulator's counts to this one."""
        if (other.min_iou, other.tolerance_px) != (self.min_iou, self.tolerance_px):
            raise ValueError(f"cannot merge an HIoU(min_iou={other.min_iou}, tolerance_px={other.tolerance_px}) "
                             f"into one with min_iou={self.min_iou}, tolerance_px={self.tolerance_px}")
        for key in self.COUNTS:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        for key in self.SUMS:
            getattr(self, key).merge(getattr(other, key))

    def compute(self) -> dict:
        """Return hiou, seg_iou, loc_iou, pd_opdc, fa_opdc, the error split (fractions; None when undefined), counts.

        hIoU is 0 when components exist but none is matched (loc IoU 0) and None when the set has
        neither targets nor predicted components; seg IoU and its errors are None without a matched pair.
        """
        components = self.n_matched + self.n_false + self.n_missed
        loc_iou = _rate(self.n_matched, components)
        seg_iou = _rate(self.iou_sum.value(), self.n_matched)
        hiou = None if loc_iou is None else (0.0 if seg_iou is None else seg_iou * loc_iou)
        return {
            "hiou": hiou, "seg_iou": seg_iou, "loc_iou": loc_iou,
            "pd_opdc": _rate(self.n_matched, self.n_matched + self.n_missed),
            "fa_opdc": _rate(self.fa_pixels, self.n_pixels),
            "seg_merge_err": _rate(self.merge_sum.value(), self.n_matched),
            "seg_interference_err": _rate(self.interference_sum.value(), self.n_matched),
            "seg_missed_err": _rate(self.missed_pixels_sum.value(), self.n_matched),
            "loc_interference_err": _rate(self.n_interference, components),
            "loc_missed_err": _rate(self.n_unreached, components),
            "loc_m2s_err": _rate(self.n_m2s, components),
            "loc_s2m_err": _rate(self.n_s2m, components),
            "opdc_tp": self.n_matched, "opdc_fp": self.n_false, "opdc_fn": self.n_missed,
        }


class ROC:
    """Target-level Pd versus pixel-level false-alarm rate over thresholds i / n_bins, from histograms."""

    def __init__(self, n_bins: int = ROC_BINS) -> None:
        self.n_bins = n_bins
        self.thresholds = np.arange(n_bins + 1, dtype=np.float64) / n_bins  # t_i = i / n_bins
        # Lookup tables padded with +inf: for float32 p, p >= t_i <=> p >= the smallest float32 >= t_i,
        # so float32 maps are binned without a float64 copy and with the same >= semantics.
        t32 = self.thresholds.astype(np.float32)
        t32 = np.where(t32 < self.thresholds, np.nextafter(t32, np.float32(np.inf)), t32).astype(np.float32)
        self._table32 = np.append(t32, np.float32(np.inf))
        self._table64 = np.append(self.thresholds, np.inf)
        self.reset()

    def reset(self) -> None:
        """Clear both histograms."""
        # hist[c] counts values p with exactly c thresholds t_i <= p (c in 0..n_bins+1); p >= t_i  <=>  c > i
        self.target_hist = np.zeros(self.n_bins + 2, np.int64)  # of each target's max probability
        self.background_hist = np.zeros(self.n_bins + 2, np.int64)  # of background pixel probabilities

    def _n_thresholds_below(self, values: np.ndarray) -> np.ndarray:
        """Return, for each probability, how many thresholds t_i satisfy t_i <= p (compared in float64)."""
        if values.dtype == np.float32:
            table = self._table32
        else:
            values, table = values.astype(np.float64, copy=False), self._table64
        count = (values * table.dtype.type(self.n_bins)).astype(np.intp) + 1  # floor(p * n) + 1, up to 1 off
        np.clip(count, 1, self.n_bins + 1, out=count)
        count -= table[count - 1] > values  # one step corrects the rounding of the product either way
        count += table[count] <= values
        return count

    def update(self, prob: np.ndarray, target: np.ndarray, target_components: Components | None = None) -> None:
        """Add one image: prob is H x W probabilities in [0, 1], target a bool H x W map (components optional)."""
        target = np.asarray(target, bool)
        gt = target_components if target_components is not None else find_components(target)
        flat_prob = prob.ravel()
        if gt.n:
            peak = np.zeros(gt.n + 1, flat_prob.dtype)
            np.maximum.at(peak, gt.label, flat_prob[gt.index])  # max p over each target's pixels
            self.target_hist += np.bincount(self._n_thresholds_below(peak[1:]), minlength=self.n_bins + 2)
        # Background pixels below t_1 (most of them) are counted at once, with c = 1; only the rest are binned.
        t_1 = self._table32[1] if flat_prob.dtype == np.float32 else self._table64[1]
        index = np.flatnonzero(flat_prob >= t_1)
        index = index[~target.ravel()[index]]
        n_background = target.size - int(np.count_nonzero(target))
        self.background_hist[1] += n_background - index.size
        if index.size:
            self.background_hist += np.bincount(self._n_thresholds_below(flat_prob[index]), minlength=self.n_bins + 2)

    def merge(self, other: ROC) -> None:
        """Add another accumulator's histograms to this one."""
        if other.n_bins != self.n_bins:
            raise ValueError(f"cannot merge a ROC with {other.n_bins} bins into one with {self.n_bins}")
        self.target_hist += other.target_hist
        self.background_hist += other.background_hist

    def compute(self) -> dict:
        """Return thresholds (n_bins+1,), pd (fraction of targets with any p >= t), fa (background fraction with p >= t)."""
        # count(p >= t_i) = sum of hist[c] for c > i: a cumulative sum from the top
        targets_above = np.cumsum(self.target_hist[::-1])[::-1][1:]
        background_above = np.cumsum(self.background_hist[::-1])[::-1][1:]
        n_targets, n_background = self.target_hist.sum(), self.background_hist.sum()
        pd = targets_above / n_targets if n_targets else np.zeros(self.n_bins + 1)
        fa = background_above / n_background if n_background else np.zeros(self.n_bins + 1)
        return {"thresholds": self.thresholds.copy(), "pd": pd.astype(np.float64), "fa": fa.astype(np.float64)}

    def auc(self) -> float:
        """Return the area under Pd(fa) by the trapezoid rule over the false-alarm rate (a fraction in [0, 1])."""
        curve = self.compute()
        fa, pd = curve["fa"][::-1], curve["pd"][::-1]  # fa rises as the threshold falls
        return float(np.sum(np.diff(fa) * (pd[1:] + pd[:-1]) / 2))


# ----------------------------------------------------------------------------- all together


class Evaluator:
    """All metrics of docs/metrics.md for probability maps: update per frame, merge across ranks, compute."""

    def __init__(self, threshold: float = THRESHOLD, n_roc_bins: int = ROC_BINS, release_matching: bool = False) -> None:
        """release_matching=True uses ReleasePdFa (area matching, defective) for comparison with published numbers."""
        self.threshold = threshold
        self.release_matching = release_matching
        self.segmentation = SegmentationMetrics()
        self.pdfa: PdFa = ReleasePdFa() if release_matching else PdFa()
        self.hiou = HIoU()
        self.roc_curve = ROC(n_roc_bins)

    def reset(self) -> None:
        """Clear every accumulator."""
        self.segmentation.reset()
        self.pdfa.reset()
        self.hiou.reset()
        self.roc_curve.reset()

    def update(self, prob: np.ndarray, mask: np.ndarray, name: str | None = None) -> None:
        """Add one frame: prob H x W probabilities in [0, 1] (not logits), mask H x W with nonzero = target."""
        prob = np.ascontiguousarray(check_probabilities(prob, name))  # .mat maps arrive column-major
        target = np.ascontiguousarray(_as_target(mask, prob.shape, name))
        pred = prob > self.threshold
        gt = find_components(target)  # the one labelling of the mask, shared by Pd/Fa, hIoU and ROC
        found = find_components(pred)  # ... and of the prediction, shared by Pd/Fa and hIoU
        self.segmentation.update(pred, target)
        self.pdfa.update(pred, target, target_components=gt, pred_components=found)
        self.hiou.update(pred, target, target_components=gt, pred_components=found)
        self.roc_curve.update(prob, target, target_components=gt)

    def merge(self, other: Evaluator) -> None:
        """Add another Evaluator's state (e.g. from another DDP rank) to this one."""
        if other.threshold != self.threshold or other.release_matching != self.release_matching:
            raise ValueError(
                f"cannot merge an Evaluator(threshold={other.threshold}, release_matching={other.release_matching}) "
                f"into one with threshold={self.threshold}, release_matching={self.release_matching}"
            )
        self.segmentation.merge(other.segmentation)
        self.pdfa.merge(other.pdfa)
        self.hiou.merge(other.hiou)
        self.roc_curve.merge(other.roc_curve)

    def compute(self) -> dict:
        """Return iou, niou, precision, recall, f1, pd, fa (fraction, not x1e-6), auc in [0, 1]; n_images, n_targets;
        and HIoU.compute()'s hiou, seg_iou, loc_iou, pd_opdc, fa_opdc, error split (None when undefined), counts."""
        out = self.segmentation.compute()
        out.update(self.pdfa.compute())
        out.update(self.hiou.compute())
        out["auc"] = self.roc_curve.auc()
        out["n_images"] = self.segmentation.n_images
        out["n_targets"] = self.pdfa.n_targets
        return out

    def roc(self) -> dict:
        """Return thresholds i/200 (201,), pd (target fraction) and fa (background pixel fraction) arrays."""
        return self.roc_curve.compute()


def plain(metrics: dict) -> dict:
    """Return metrics with numpy scalars turned into Python numbers (JSON and weights_only friendly)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}
