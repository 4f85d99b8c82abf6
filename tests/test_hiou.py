"""hIoU and OPDC matching (utils.eval.metrics.HIoU): the metric library's own values on its two example frames,
hand-made frames with known answers, and the vectorised counts against a per-pair loop."""
import math

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi

from tests.conftest import FIXTURES, need
from utils.eval.metrics import (
    CENTROID_TOLERANCE_PX,
    OPDC_MIN_IOU,
    Evaluator,
    ExactSum,
    HIoU,
    find_components,
    opdc_match,
    pair_overlaps,
)

H, W = 32, 40

# PyIRSTDMetrics (the library of "Rethinking Evaluation of Infrared Small Target Detection", NeurIPS 2025 Datasets
# and Benchmarks) on its two example frames: mask = grey > 127, prediction = grey / 255, predicted where > 0.5,
# totals over both frames. Values as that library prints them (the fixture's README).
LIBRARY_VALUES = {
    "iou": 0.5666666666666667,
    "niou": 0.5435835351089588,
    "f1": 0.7234042553191489,
    "pd": 0.4,  # legacy centroid matching
    "fa": 0.000677490234375,
    "pd_opdc": 0.4,
    "fa_opdc": 0.000677490234375,
    "hiou": 0.14535917496443812,
    "seg_iou": 0.5814366998577525,
    "loc_iou": 0.25,
    "seg_merge_err": 0.23684210526315788,
    "seg_interference_err": 0.07361308677098151,
    "seg_missed_err": 0.10810810810810811,
    "loc_interference_err": 0.375,
    "loc_missed_err": 0.25,
    "loc_m2s_err": 0.0,
    "loc_s2m_err": 0.125,
}


def test_constants_are_the_documented_ones():
    assert (OPDC_MIN_IOU, CENTROID_TOLERANCE_PX) == (0.5, 3)


def test_the_metric_librarys_values_on_its_example_frames():
    folder = need(FIXTURES / "pyirstdmetrics")
    evaluator = Evaluator()
    for k in (0, 1):
        mask = cv2.imread(str(folder / f"{k}-mask.png"), cv2.IMREAD_GRAYSCALE) > 127
        prob = cv2.imread(str(folder / f"{k}-pred.png"), cv2.IMREAD_GRAYSCALE) / 255
        evaluator.update(prob, mask)
    got = evaluator.compute()
    for key, value in LIBRARY_VALUES.items():
        assert got[key] == pytest.approx(value, rel=1e-15, abs=0), key
    assert (got["opdc_tp"], got["opdc_fp"], got["opdc_fn"]) == (2, 3, 3)


def blank():
    return np.zeros((H, W), bool)


def scored(pred, target):
    acc = HIoU()
    acc.update(pred, target)
    return acc.compute()


def test_a_best_assignment_pairs_what_the_greedy_rule_leaves():
    target, pred = blank(), blank()
    target[10, 10] = target[10, 14] = True  # targets 1 and 2, in raster order
    pred[9, 12] = True  # 2.24 px from both targets
    pred[11, 8] = True  # 2.24 px from target 1 only
    m = scored(pred, target)
    # the legacy rule gives component 1 to target 1 and misses target 2 (tests/test_metrics.py); OPDC pairs both
    assert (m["opdc_tp"], m["opdc_fp"], m["opdc_fn"]) == (2, 0, 0)
    assert m["pd_opdc"] == 1 and m["fa_opdc"] == 0 and m["loc_iou"] == 1
    assert m["seg_iou"] == 0 and m["hiou"] == 0  # paired by distance, but no pixel in common
    assert m["seg_missed_err"] == 0.5 and m["seg_interference_err"] == 0.5


def test_overlap_pairs_a_component_whose_centroid_is_3_px_away():
    target, pred = blank(), blank()
    target[10:17, 10:17] = True  # 7 x 7, centroid column 13
    pred[10:17, 10:23] = True  # 7 x 13 over it, centroid column 16: 3 px, not strictly closer
    m = scored(pred, target)
    assert m["pd_opdc"] == 1 and m["fa_opdc"] == 0
    assert m["hiou"] == m["seg_iou"] == pytest.approx(49 / 91) and m["loc_iou"] == 1
    assert m["seg_interference_err"] == pytest.approx(42 / 91) and m["seg_merge_err"] == m["seg_missed_err"] == 0
    legacy = Evaluator()
    legacy.update(pred.astype(np.float32), target)
    assert legacy.compute()["pd"] == 0  # the centroid rule misses it


def test_a_component_over_two_targets_splits_its_errors():
    target, pred = blank(), blank()
    target[10:13, 10:13] = target[10:13, 14:17] = True  # two 3 x 3 targets, centroids (11, 11) and (11, 15)
    pred[10:13, 9:17] = True  # one 3 x 8 component over both, centroid (11, 12.5): 1.5 and 2.5 px away
    m = scored(pred, target)
    assert (m["opdc_tp"], m["opdc_fp"], m["opdc_fn"]) == (1, 0, 1)
    assert m["seg_iou"] == pytest.approx(9 / 24)  # paired with the closer target (IoU 0.375 each)
    assert m["seg_merge_err"] == pytest.approx(9 / 24)  # its pixels on the other target
    assert m["seg_interference_err"] == pytest.approx(6 / 24) and m["seg_missed_err"] == 0
    assert m["loc_iou"] == 0.5 and m["hiou"] == pytest.approx(9 / 48)
    assert m["loc_s2m_err"] == 0.5 and m["loc_missed_err"] == 0  # the other target was within reach: s2m


def test_assignment_errors_m2s_and_s2m():
    target, pred = blank(), blank()
    target[10, 10] = True
    pred[10, 10] = pred[10, 12] = True  # two components within reach of one target
    m = scored(pred, target)
    assert (m["opdc_tp"], m["opdc_fp"], m["loc_m2s_err"], m["loc_interference_err"]) == (1, 1, 0.5, 0)
    assert m["hiou"] == 0.5 and m["fa_opdc"] == 1 / (H * W)
    m = scored(target, pred)  # two targets within reach of one component
    assert (m["opdc_tp"], m["opdc_fn"], m["loc_s2m_err"], m["loc_missed_err"]) == (1, 1, 0.5, 0)
    assert m["pd_opdc"] == 0.5 and m["fa_opdc"] == 0


def test_empty_frames_count_no_component_and_undefined_rates_are_none():
    m = scored(blank(), blank())
    assert {key: m[key] for key in ("hiou", "seg_iou", "loc_iou", "pd_opdc")} == dict.fromkeys(
        ("hiou", "seg_iou", "loc_iou", "pd_opdc"))
    assert m["fa_opdc"] == 0 and (m["opdc_tp"], m["opdc_fp"], m["opdc_fn"]) == (0, 0, 0)
    pred = blank()
    pred[3:5, 3:5] = True
    m = scored(pred, blank())  # a false alarm only: no target, no pair
    assert (m["hiou"], m["loc_iou"], m["seg_iou"], m["pd_opdc"]) == (0, 0, None, None)
    assert (m["opdc_tp"], m["opdc_fp"], m["opdc_fn"], m["loc_interference_err"]) == (0, 1, 0, 1)
    assert m["fa_opdc"] == 4 / (H * W)
    m = scored(blank(), pred)  # a target, no prediction
    assert (m["hiou"], m["pd_opdc"], m["opdc_fn"], m["loc_missed_err"]) == (0, 0, 1, 1)


def test_opdc_match_alone():
    distance = np.array([[1.0, 2.0], [1.5, 9.0]])
    iou = np.zeros((2, 2))
    # no overlap: the second stage pairs by least total distance, (0, 1) and (1, 0), not the closest pair (0, 0)
    np.testing.assert_array_equal(opdc_match(distance, iou), [[False, True], [True, False]])
    iou[1, 1] = 0.5  # the first stage assigns on distance over all pairs, then keeps only overlapping pairs
    np.testing.assert_array_equal(opdc_match(distance, iou), [[False, True], [True, False]])
    assert opdc_match(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0, 3)


def test_counts_equal_a_per_pair_loop():
    """The vectorised overlaps and error counts against label images compared pair by pair."""
    rng = np.random.default_rng(3)
    fast = HIoU()
    iou_sum = merge_sum = missed_sum = 0.0
    n_pairs = n_false = false_pixels = 0
    for _ in range(20):
        mask = ndi.binary_dilation(rng.random((40, 40)) < 0.02, iterations=int(rng.integers(0, 3)))
        pred = ndi.binary_dilation(np.roll(mask, tuple(rng.integers(-3, 4, 2)), (0, 1)) | (rng.random((40, 40)) < 0.01))
        fast.update(pred, mask)
        gt, found = find_components(mask), find_components(pred)
        gt_labels, pr_labels = gt.labels(), found.labels()
        inter = np.array([[np.count_nonzero((gt_labels == i) & (pr_labels == j)) for j in range(1, found.n + 1)]
                          for i in range(1, gt.n + 1)]).reshape(gt.n, found.n)
        np.testing.assert_array_equal(pair_overlaps(gt, found), inter)
        union = np.array([[np.count_nonzero((gt_labels == i) | (pr_labels == j)) for j in range(1, found.n + 1)]
                          for i in range(1, gt.n + 1)]).reshape(gt.n, found.n)
        distance = np.array([[np.linalg.norm(np.subtract(ndi.center_of_mass(gt_labels == i),
                                                         ndi.center_of_mass(pr_labels == j)))
                              for j in range(1, found.n + 1)] for i in range(1, gt.n + 1)]).reshape(gt.n, found.n)
        matched = opdc_match(distance, inter / np.maximum(union, 1))
        for i, j in zip(*np.nonzero(matched)):
            component, own = pr_labels == j + 1, gt_labels == i + 1
            iou_sum += np.count_nonzero(component & own) / union[i, j]
            merge_sum += np.count_nonzero(component & mask & ~own) / union[i, j]
            missed_sum += np.count_nonzero(own & ~component) / union[i, j]
        n_pairs += int(matched.sum())
        unmatched = np.flatnonzero(~matched.any(axis=0)) + 1
        n_false += unmatched.size
        false_pixels += int(np.isin(pr_labels, unmatched).sum())
    assert n_pairs > 20 and n_false > 5  # the frames hold both pairs and false alarms
    assert (fast.n_matched, fast.n_false, fast.fa_pixels) == (n_pairs, n_false, false_pixels)
    assert fast.iou_sum.value() == pytest.approx(iou_sum, rel=1e-12)
    assert fast.merge_sum.value() == pytest.approx(merge_sum, rel=1e-12, abs=1e-12)
    assert fast.missed_pixels_sum.value() == pytest.approx(missed_sum, rel=1e-12)


def test_exact_sum_is_independent_of_order():
    values = np.random.default_rng(4).random(200) * 10.0 ** np.arange(-100, 100)
    forward, backward, halves = ExactSum(), ExactSum(), ExactSum()
    forward.add(values)
    backward.add(values[::-1])
    halves.add(values[100:])
    rest = ExactSum()
    rest.add(values[:100])
    halves.merge(rest)
    assert forward.value() == backward.value() == halves.value() == math.fsum(values.tolist())


def test_merge_and_reset():
    frames = [(np.roll(np.eye(H, W, dtype=bool), k, axis=1), np.roll(np.eye(H, W, dtype=bool), 2 * k, axis=1))
              for k in range(4)]
    one, first, second = HIoU(), HIoU(), HIoU()
    for k, (pred, target) in enumerate(frames):
        one.update(pred, target)
        (first if k % 2 else second).update(pred, target)
    first.merge(second)
    assert first.compute() == one.compute()  # exact sums: the same to the last bit in any order
    with pytest.raises(ValueError, match="min_iou"):
        first.merge(HIoU(min_iou=0.3))
    first.reset()
    assert first.compute()["hiou"] is None
