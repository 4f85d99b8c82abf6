"""utils.eval.metrics: hand-made masks with known answers, and the fast paths against brute-force loops."""
import json

import numpy as np
import pytest
import scipy.ndimage as ndi

from utils.eval.metrics import (
    CENTROID_TOLERANCE_PX,
    CONNECTIVITY,
    ROC,
    THRESHOLD,
    Evaluator,
    PdFa,
    ReleasePdFa,
    SegmentationMetrics,
    find_components,
    label_components,
)

H, W = 32, 40
LEGACY = {"iou", "niou", "precision", "recall", "f1", "pd", "fa", "auc", "n_images", "n_targets"}
HIOU = {"hiou", "seg_iou", "loc_iou", "pd_opdc", "fa_opdc", "seg_merge_err", "seg_interference_err", "seg_missed_err",
        "loc_interference_err", "loc_missed_err", "loc_m2s_err", "loc_s2m_err", "opdc_tp", "opdc_fp", "opdc_fn"}
KEYS = LEGACY | HIOU  # hIoU's known answers: tests/test_hiou.py


def blank(h=H, w=W):
    return np.zeros((h, w), np.float32)


def square(array, row, col, size=3, value=1):
    """Set a size x size square whose top-left pixel is (row, col); return the array."""
    array[row:row + size, col:col + size] = value
    return array


def score(prob, mask, **kwargs):
    evaluator = Evaluator(**kwargs)
    evaluator.update(prob, mask)
    return evaluator.compute()


def test_constants_are_the_documented_ones():
    assert (THRESHOLD, CENTROID_TOLERANCE_PX, CONNECTIVITY) == (0.5, 3, 8)


def test_perfect_prediction():
    mask = square(blank(), 10, 10).astype(np.uint8)
    m = score(mask.astype(np.float32), mask)
    assert set(m) == KEYS
    assert (m["iou"], m["niou"], m["precision"], m["recall"], m["f1"], m["pd"], m["fa"]) == (1, 1, 1, 1, 1, 1, 0)
    assert (m["n_images"], m["n_targets"], m["auc"]) == (1, 1, 1.0)


def test_pixel_metrics_known_values():
    mask = square(blank(), 10, 10).astype(np.uint8)
    prob = square(blank(), 10, 11)  # shifted one column: 6 of 9 pixels overlap
    m = score(prob, mask)
    assert m["iou"] == pytest.approx(6 / 12) and m["niou"] == pytest.approx(6 / 12)
    assert m["precision"] == pytest.approx(6 / 9) and m["recall"] == pytest.approx(6 / 9)
    assert m["f1"] == pytest.approx(6 / 9)
    assert m["pd"] == 1 and m["fa"] == 0  # centroid 1 px away: detected, nothing left over


def test_threshold_is_strictly_greater_than_half():
    mask = square(blank(), 10, 10).astype(np.uint8)
    m = score(mask * np.float32(0.5), mask)
    assert m["iou"] == 0 and m["pd"] == 0


def test_unmatched_blob_with_the_same_area_as_a_matched_target_is_a_false_alarm():
    mask = square(blank(), 5, 5).astype(np.uint8)
    prob = square(square(blank(), 5, 5), 20, 30)  # the target, and a 3x3 blob far from it: same area
    m = score(prob, mask)
    assert m["pd"] == 1
    assert m["fa"] == pytest.approx(9 / (H * W))
    # The widely copied area matching drops it: kept only to reproduce published numbers.
    assert score(prob, mask, release_matching=True)["fa"] == 0


def test_empty_mask_gives_numbers_not_nan():
    m = score(blank(), np.zeros((H, W), np.uint8))
    assert all(np.isfinite(m[key]) for key in LEGACY)
    assert m["n_targets"] == 0 and m["pd"] == 0 and m["fa"] == 0 and m["iou"] == 0 and m["niou"] == 0
    m = score(square(blank(), 3, 3, size=2), np.zeros((H, W), np.uint8))
    assert m["fa"] == pytest.approx(4 / (H * W)) and m["pd"] == 0 and m["precision"] == 0
    assert all(np.isfinite(m[key]) for key in LEGACY)


def test_niou_counts_a_frame_where_both_are_empty_as_zero():
    evaluator = Evaluator()
    mask = square(blank(), 10, 10).astype(np.uint8)
    evaluator.update(mask.astype(np.float32), mask)  # IoU 1
    evaluator.update(blank(), np.zeros((H, W), np.uint8))  # both empty: IoU 0 (ACM / ALCNet convention)
    m = evaluator.compute()
    assert m["iou"] == 1 and m["niou"] == 0.5 and m["n_images"] == 2


def test_targets_touching_the_border():
    mask = blank().astype(np.uint8)
    mask[0:2, 0:2] = 1  # top-left corner
    mask[H - 3:H, W - 1] = 1  # right edge, bottom corner
    mask[0, 20] = 1  # one pixel on the top edge
    m = score(mask.astype(np.float32), mask)
    assert (m["n_targets"], m["pd"], m["fa"], m["iou"]) == (3, 1, 0, 1)
    prob = np.roll(mask, 1, axis=1).astype(np.float32)  # one column right; the right-edge target wraps to column 0
    m = score(prob, mask)
    # corner and top-edge targets move 1 px (detected); the wrapped one is 39 px away: a miss, 3 false pixels
    assert m["pd"] == pytest.approx(2 / 3) and m["fa"] == pytest.approx(3 / (H * W))


def test_two_targets_closer_than_the_tolerance_share_one_detection():
    mask = blank().astype(np.uint8)
    mask[10, 10] = mask[12, 10] = 1  # two targets (not 8-connected), centroids 2 px apart
    prob = blank()
    prob[11, 10] = 1  # one predicted pixel between them, 1 px from each
    m = score(prob, mask)
    assert m["n_targets"] == 2 and m["pd"] == 0.5 and m["fa"] == 0  # it detects one target only
    prob[12, 10] = 1  # now 8-connected to (11, 10): still one component, centroid (11.5, 10)
    m = score(prob, mask)
    assert m["pd"] == 0.5 and m["fa"] == 0


def test_first_match_in_label_order_wins():
    mask = blank().astype(np.uint8)
    mask[10, 10] = mask[10, 14] = 1  # targets 1 and 2, in raster order
    prob = blank()
    prob[9, 12] = 1  # predicted component 1 (raster order): 2.24 px from both targets
    prob[11, 8] = 1  # predicted component 2: 2.24 px from target 1 only
    m = score(prob, mask)
    # Target 1 takes component 1 (first in label order), target 2 then finds nothing; component 2 is a
    # false alarm. A best assignment would detect both: the field's greedy rule is kept on purpose.
    assert m["pd"] == 0.5 and m["fa"] == pytest.approx(1 / (H * W))


def test_diagonal_target_is_one_8_connected_component():
    mask = blank().astype(np.uint8)
    for k in range(4):
        mask[5 + k, 5 + k] = 1
    assert label_components(mask)[1] == 1
    prob = np.zeros_like(mask, np.float32)
    prob[6, 6] = prob[7, 7] = 0.9  # centroid (6.5, 6.5), the target's too
    m = score(prob, mask)
    assert m["n_targets"] == 1 and m["pd"] == 1 and m["fa"] == 0


@pytest.mark.parametrize("shift, detected", [(2, True), (3, False), (4, False)])
def test_shifted_detection(shift, detected):
    mask = square(blank(), 10, 10).astype(np.uint8)
    prob = square(blank(), 10, 10 + shift)
    m = score(prob, mask)
    assert m["pd"] == (1 if detected else 0)  # strictly closer than 3 px
    assert m["fa"] == (0 if detected else pytest.approx(9 / (H * W)))


@pytest.mark.parametrize("bad", [-0.5, 1.5, np.nan])
def test_logits_are_refused(bad):
    prob = blank()
    prob[0, 0] = bad
    with pytest.raises(ValueError, match="sigmoid"):
        Evaluator().update(prob, np.zeros((H, W), np.uint8), name="frame_7")


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match=r"mask.*\(32, 41\).*\(32, 40\)"):
        Evaluator().update(blank(), np.zeros((H, W + 1), np.uint8))
    with pytest.raises(ValueError, match="H x W"):
        Evaluator().update(np.zeros((1, H, W), np.float32), np.zeros((1, H, W), np.uint8))


def test_labels_are_in_raster_order_like_scipy():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 80, 2)
        binary = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        expected, n = ndi.label(binary, structure=np.ones((3, 3)))
        labels, count = label_components(binary)
        assert count == n and np.array_equal(labels, expected)


def test_component_stats():
    binary = np.zeros((6, 6), bool)
    binary[1, 1:4] = True  # centroid (1, 2), area 3
    binary[4:6, 4:6] = True  # centroid (4.5, 4.5), area 4
    comps = find_components(binary)
    assert comps.n == 2
    np.testing.assert_allclose(comps.centroids(), [[1, 2], [4.5, 4.5]])
    np.testing.assert_array_equal(comps.areas(), [3, 4])


def random_frames(seed, n=6, h=37, w=45, dtype=np.float32):
    """Random probability maps (with values exactly on thresholds i/200 and 8-bit values) and blob masks."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        prob = rng.random((h, w)) ** rng.uniform(1, 8)
        on_grid = rng.random((h, w)) < 0.3
        prob[on_grid] = rng.integers(0, 201, on_grid.sum()) / 200  # exactly on a threshold
        eight_bit = rng.random((h, w)) < 0.2
        prob[eight_bit] = rng.integers(0, 256, eight_bit.sum()) / 255
        mask = ndi.binary_dilation(rng.random((h, w)) < 0.01, iterations=int(rng.integers(0, 2)))
        if k == 0:
            mask[:] = False  # an empty frame
        frames.append((prob.astype(dtype), mask.astype(np.uint8)))
    return frames


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roc_equals_a_per_threshold_loop(dtype):
    frames = random_frames(1, dtype=dtype)
    evaluator = Evaluator()
    for prob, mask in frames:
        evaluator.update(prob, mask)
    roc = evaluator.roc()
    thresholds = np.arange(201) / 200
    np.testing.assert_array_equal(roc["thresholds"], thresholds)
    detected = np.zeros(201)
    false_alarms = np.zeros(201)
    n_targets = n_background = 0
    for prob, mask in frames:  # brute force: every threshold, every target
        labels, n = ndi.label(mask, structure=np.ones((3, 3)))
        n_targets += n
        n_background += np.count_nonzero(mask == 0)
        for i, t in enumerate(thresholds):
            above = prob >= t  # t is a float64: compared in float64
            false_alarms[i] += np.count_nonzero(above & (mask == 0))
            detected[i] += sum(bool(above[labels == j].any()) for j in range(1, n + 1))
    np.testing.assert_array_equal(roc["pd"], detected / n_targets)
    np.testing.assert_array_equal(roc["fa"], false_alarms / n_background)
    x, y = (false_alarms / n_background)[::-1], (detected / n_targets)[::-1]
    assert evaluator.compute()["auc"] == pytest.approx(float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2)), abs=1e-15)


def test_auc_known_value():
    mask = np.zeros((4, 8), np.uint8)
    mask[0, 0] = mask[3, 7] = 1  # two single-pixel targets
    prob = np.zeros((4, 8))
    prob[0, 0], prob[3, 7] = 1.0, 0.2  # peaks: one target seen up to t = 1, the other up to t = 0.2
    background = np.flatnonzero(mask.ravel() == 0)
    prob.ravel()[background[: background.size // 2]] = 0.3  # half the background at exactly 0.3
    evaluator = Evaluator()
    evaluator.update(prob, mask)
    roc = evaluator.roc()
    assert roc["fa"][0] == 1 and roc["fa"][60] == 0.5 and roc["fa"][61] == 0  # t = 0.3 counts p = 0.3
    assert roc["pd"][40] == 1 and roc["pd"][41] == 0.5
    # points (0, .5) -> (.5, .5) -> (.5, 1) -> (1, 1): area 0.25 + 0.5
    assert evaluator.compute()["auc"] == pytest.approx(0.75)


def test_pd_fa_equals_a_component_loop():
    """Pd and Fa against a direct transcription of BasicIRSTD's matching, with matched components masked by label."""
    rng = np.random.default_rng(2)
    fast = PdFa()
    detected = false_pixels = targets = 0
    for _ in range(30):
        mask = ndi.binary_dilation(rng.random((40, 40)) < 0.02, iterations=int(rng.integers(0, 2)))
        pred = ndi.binary_dilation(np.roll(mask, tuple(rng.integers(-3, 4, 2)), (0, 1)) | (rng.random((40, 40)) < 0.01))
        fast.update(pred, mask)
        gt_labels, n_gt = ndi.label(mask, np.ones((3, 3)))
        pr_labels, n_pr = ndi.label(pred, np.ones((3, 3)))
        gt_c = ndi.center_of_mass(mask, gt_labels, range(1, n_gt + 1))
        pr_c = ndi.center_of_mass(pred, pr_labels, range(1, n_pr + 1))
        remaining = list(range(1, n_pr + 1))
        matched = []
        for g in range(n_gt):
            for m in list(remaining):
                if np.linalg.norm(np.subtract(gt_c[g], pr_c[m - 1])) < 3:
                    matched.append(m)
                    remaining.remove(m)
                    break
        targets += n_gt
        detected += len(matched)
        false_pixels += sum(int((pr_labels == m).sum()) for m in remaining)
    assert (fast.n_targets, fast.n_detected, fast.fa_pixels) == (targets, detected, false_pixels)
    assert fast.n_pixels == 30 * 1600


def test_merge_equals_one_accumulator():
    frames = random_frames(3, n=8)
    one, first, second = Evaluator(), Evaluator(), Evaluator()
    for k, (prob, mask) in enumerate(frames):
        one.update(prob, mask)
        (first if k % 2 else second).update(prob, mask)
    first.merge(second)
    assert first.compute() == one.compute()
    for key in ("thresholds", "pd", "fa"):
        np.testing.assert_array_equal(first.roc()[key], one.roc()[key])
    with pytest.raises(ValueError, match="release_matching"):
        first.merge(Evaluator(release_matching=True))


def test_compute_is_json_ready_and_reset_clears():
    evaluator = Evaluator()
    prob, mask = random_frames(4, n=1)[0]
    evaluator.update(prob, mask)
    json.dumps(evaluator.compute())  # plain floats and ints
    evaluator.reset()
    assert evaluator.compute()["n_images"] == 0


def test_accumulators_alone():
    seg, roc = SegmentationMetrics(), ROC()
    target = np.zeros((5, 5), bool)
    target[2, 2] = True
    seg.update(target, target)
    roc.update(target.astype(np.float32), target)
    assert seg.compute()["iou"] == 1 and roc.auc() == 1
    release = ReleasePdFa()
    release.update(target, target)
    assert release.compute() == {"pd": 1.0, "fa": 0.0}
