"""The detectability map (python -m utils.detectability): exact pasted masks, Wilson intervals, Pd on cases with a
known answer, the matched filter against theory on white noise, determinism by seed, and misuse."""
import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from tests.conftest import random_checkpoint
from utils import detectability as det
from utils.data.paste import Shape, fits, measure_target, paste, quantised_increment
from utils.data.synthetic import write_dataset
from utils.eval.detectability import LIMIT, faintest, limit_rows, matched_filter, noise_threshold, threshold_for, wilson
from utils.infer.predict import detect_targets

SHAPES = [Shape("point", s) for s in (1, 2, 3, 5, 9)] + [Shape("blob", 16), Shape("drone", 16), Shape("drone", 40)]
LEVEL = 100  # grey level of the generated backgrounds


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("polarity", [1, -1])
def test_pasted_mask_is_exactly_the_changed_pixels(shape, polarity):
    rng = np.random.default_rng(1)
    grey = rng.integers(60, 140, (64, 80)).astype(np.uint8)
    increment = quantised_increment(shape.profile(), 7, polarity)
    out, mask = paste(grey, 10, 20, increment)
    diff = out.astype(np.int16) - grey
    assert np.array_equal(mask, diff != 0)
    assert np.array_equal(diff[10:10 + shape.size, 20:20 + shape.size], increment)
    assert (polarity * diff).max() == 7                                 # the peak increment is the contrast
    assert not mask[:10].any() and not mask[:, :20].any()               # only inside the support


def test_paste_refuses_clipping():
    grey = np.full((32, 32), 250, np.uint8)
    increment = quantised_increment(Shape("point", 3).profile(), 10, 1)
    assert not fits(grey, 5, 5, increment) and fits(grey, 5, 5, -increment)
    with pytest.raises(ValueError, match="0-255 range"):
        paste(grey, 5, 5, increment)


def test_one_grey_level_changes_the_pixels_at_half_the_peak_or_more():
    increment = quantised_increment(Shape("point", 5).profile(), 1, 1)   # neighbours 0.73, corners 0.53 of the peak
    assert increment.sum() == 9 and increment[1:4, 1:4].all()
    assert quantised_increment(Shape("point", 3).profile(), 1, -1).sum() == -1   # neighbours 0.41 < 0.5: one pixel


def test_wilson_known_values():
    lo, hi = wilson(5, 10)      # the textbook case: 0.2366 to 0.7634
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson(0, 10)
    assert lo == 0 and round(hi, 4) == 0.2775
    assert wilson(0, 0) == (None, None)


def test_threshold_leaves_exactly_k_values_above():
    values = [np.array([5.0, 3.0]), np.array([4.0, 1.0])]
    assert threshold_for(values, 0) == 5.0 and threshold_for(values, 2) == 3.0 and threshold_for(values, 9) == 0.0


def test_matched_filter_on_white_noise_follows_theory():
    """At a known position, the statistic of a known shape of amplitude A in white noise of sigma is
    N(A ||p|| / sigma, 1); Pd at threshold h is Q(h - d)."""
    rng = np.random.default_rng(0)
    sigma, amplitude, spacing = 4.0, 5.0, 40
    shape = Shape("point", 3)
    profile = shape.profile()
    d = amplitude * np.linalg.norm(profile) / sigma
    frame = rng.normal(0, sigma, (spacing * 20, spacing * 20)).astype(np.float32)
    centres = [(spacing * i + 20, spacing * j + 20) for i in range(20) for j in range(20)]
    for r, c in centres:
        frame[r - 1:r + 2, c - 1:c + 2] += amplitude * profile
    values = np.array([matched_filter(frame, profile, 1, sigma)[r, c] for r, c in centres])
    background = matched_filter(frame, profile, 1, sigma)[10::spacing, 10::spacing].ravel()
    assert abs(values.mean() - d) < 0.15 and abs(values.std() - 1) < 0.1
    assert abs(background.mean()) < 0.15 and abs(background.std() - 1) < 0.12
    h = 3.0
    expected = norm.sf(h - d)
    assert abs((values > h).mean() - expected) < 3 * math.sqrt(expected * (1 - expected) / len(values))
    robust = matched_filter(frame, profile, 1)[r, c] / matched_filter(frame, profile, 1, sigma)[r, c]
    assert abs(robust - 1) < 0.05   # the frame's own robust sigma is sigma


def flat_backgrounds(n=4, noise=1.0, size=(96, 128)):
    rng = np.random.default_rng(3)
    return [det.Background(f"bg{i}", "generated", np.clip(np.rint(rng.normal(LEVEL, noise, size)), 0, 255)
                           .astype(np.uint8), np.zeros((0, 4))) for i in range(n)]


def threshold_detector(step):
    """Detections: the centroids of 8-connected components of |grey - LEVEL| >= step."""
    def detect(grey):
        found = detect_targets((np.abs(grey.astype(np.int16) - LEVEL) >= step).astype(np.float32), 0.5)
        return np.array([f["x"] for f in found]), np.array([f["y"] for f in found])
    return detect


GRID = det.Grid((Shape("point", 1), Shape("point", 3)), (2, 12), rounds=2)


def test_pd_of_a_threshold_detector_is_known():
    report = det.measure(threshold_detector(6), flat_backgrounds(), GRID, seed=0, progress=False)
    model = [r for r in report["rows"] if r["detector"] == "model" and r["kind"] == "all"]
    assert {r["contrast"] for r in model} == {2, 12}
    for r in model:
        assert r["pd"] == (1.0 if r["contrast"] == 12 else 0.0), r
        assert (r["pd_low"], r["pd_high"]) == pytest.approx(wilson(r["detected"], r["n"]))
    assert report["fa_per_frame"] == 0 and report["fa_per_frame_pasted"] == 0
    assert report["n_targets"] == sum(r["n"] for r in model)
    table = faintest(report["rows"])
    assert table[("model", "point 3x3", 1, "all")]["contrast"] == 12
    # the matched filter knows the shape: on this almost noiseless background it finds contrast 12 and, at
    # sigma of about 1 grey level, most of contrast 2 (d = 2 ||p|| for 3 x 3 points, 2 for single pixels)
    mf = {(r["shape"], r["contrast"]): r["pd"] for r in report["rows"] if r["detector"] == "matched filter"
          and r["kind"] == "all" and r["polarity"] == 1}
    assert mf[("point 3x3", 12)] == 1.0


def test_measure_is_deterministic_by_seed():
    a = det.measure(threshold_detector(6), flat_backgrounds(noise=3), GRID, seed=5, progress=False)
    b = det.measure(threshold_detector(6), flat_backgrounds(noise=3), GRID, seed=5, progress=False)
    c = det.measure(threshold_detector(6), flat_backgrounds(noise=3), GRID, seed=6, progress=False)
    assert a == b
    assert a["rows"] != c["rows"]


def test_targets_keep_away_from_labels():
    bgs = flat_backgrounds(n=1, size=(128, 128))
    bgs[0].labels = np.array([[50.0, 50.0, 10.0, 10.0]])
    deck = det.Deck([(Shape("point", 3), 12, 1)], np.random.default_rng(0))
    for seed in range(5):
        plan = det.plan_frame(bgs[0], deck, np.random.default_rng(seed))
        assert plan
        for p in plan:
            near = (p.top + p.size > 50 - det.LABEL_MARGIN_PX and p.top < 60 + det.LABEL_MARGIN_PX
                    and p.left + p.size > 50 - det.LABEL_MARGIN_PX and p.left < 60 + det.LABEL_MARGIN_PX)
            assert not near


def test_measure_target_of_a_pasted_gaussian():
    grey = np.full((40, 40), 80, np.uint8)
    out, _ = paste(grey, 15, 15, quantised_increment(Shape("point", 5).profile(), 20, -1))
    polarity, contrast, area = measure_target(out, slice(12, 23), slice(12, 23))
    assert polarity == -1 and contrast == 20 and area == 9   # the 3 x 3 pixels at >= half the peak


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detectability")
    root = write_dataset(tmp / "data", n_trainval=20, n_test=1, size=(96, 96))
    ckpt = random_checkpoint(tmp / "tiny.pt", width_mults=(1, 2), blocks_per_level=1)
    return tmp, root, ckpt


@pytest.mark.slow   # three whole runs of the command (a tiny network): about 10 s on an idle 2-core CPU
def test_command_writes_outputs_and_refuses_overwrite(tiny, capsys):
    tmp, root, ckpt = tiny
    out = tmp / "map"
    args = ["--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out), "--quick", "--quiet"]
    assert det.main(args) == 0
    for name in det.OUTPUTS:
        assert (out / name).stat().st_size > 0
    first = (out / "detectability.csv").read_text()
    assert first.startswith(",".join(det.CSV_FIELDS))
    capsys.readouterr()
    assert det.main(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {out / 'detectability.csv'} exists: pass "
                                                              "--overwrite to replace it, or another --out"]
    assert det.main(args + ["--overwrite"]) == 0
    assert (out / "detectability.csv").read_text() == first   # deterministic by seed


@pytest.mark.parametrize("extra, message", [
    (["--split", "test"], "never measures on a test split"),
    (["--seed", "-1"], "must be 0 or more"),
    (["--real-check"], "needs a box-labelled video source"),
    (["--sources", "x", "--data-root", "y"], "not both"),
])
def test_misuse_is_one_line(tiny, capsys, extra, message):
    tmp, root, ckpt = tiny
    out = tmp / "misuse"
    args = ["--checkpoint", str(ckpt), "--out", str(out), "--quick", "--quiet"]
    if "--data-root" not in extra:
        args += ["--data-root", str(root)]
    assert det.main(args + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_real_check_twins_match_their_real_targets():
    """A real target drawn into each background (a 5 x 5 Gaussian, 30 grey levels) and its pasted twin: the same
    measured size and contrast, and a threshold detector finds both."""
    bgs = flat_backgrounds(n=3, noise=0.5)
    for bg in bgs:
        bg.grey, _ = paste(bg.grey, 40, 40, quantised_increment(Shape("point", 5).profile(), 30, 1))
        bg.real_box = (38.0, 38.0, 9.0, 9.0)
        bg.labels = np.asarray([bg.real_box])
    report = det.measure(threshold_detector(10), bgs, GRID, seed=0, real_check=True, progress=False)
    assert report["twins"] == 3
    for r in report["real_targets"]:
        assert r["real"] and r["twin"] and r["polarity"] == 1
        assert abs(r["twin_contrast"] - r["contrast"]) <= 2 and abs(r["twin_size"] - r["size"]) <= 1
    assert report["real_check"][-1]["difference"] == 0


def test_white_noise_limit():
    h = noise_threshold(0.1, 1e5)                      # 1e-6 a pixel: 4.75 sigma
    assert h == pytest.approx(norm.isf(1e-6))
    rows = [{"detector": "model", "shape": "point 1x1", "median_scr": h, "pd": 0.0},
            {"detector": "model", "shape": "point 1x1", "median_scr": h + 1.2815515655446004, "pd": 0.0}]
    limits = limit_rows(rows, {"point 1x1": 1.0}, h)
    assert [r["detector"] for r in limits] == [LIMIT, LIMIT]
    assert limits[0]["pd"] == pytest.approx(0.5) and limits[1]["pd"] == pytest.approx(0.9)


def test_matched_filter_noise_floor_on_a_flat_frame():
    """A flat frame has a robust noise of 0: the floor (half a grey level) keeps the score finite and known."""
    frame = np.full((64, 64), 100, np.uint8)
    profile = Shape("point", 1).profile()
    frame[30, 30] += 10
    score = matched_filter(frame, profile, 1)
    side = 1 + 16   # the local mean's box: the target adds 10 / 17^2 to it
    assert score[30, 30] == pytest.approx((10 - 10 / side ** 2) / 0.5, rel=1e-4)


def test_compare_draws_reports_side_by_side_and_refuses_other_grids(tmp_path, capsys):
    import cv2

    def report(pd, contrasts=(4, 12)):
        rows = [{"detector": "model", "shape": "point 3x3", "polarity": p, "kind": "all", "contrast": c, "pd": pd,
                 "n": 10, "detected": int(10 * pd)} for p in (1, -1) for c in contrasts]
        return {"shapes": ["point 3x3"], "contrasts": list(contrasts), "polarities": ["hot", "cold"], "rows": rows,
                "fa_per_frame": 0.1}
    paths = {}
    for name, rep in (("a", report(0.2)), ("b", report(0.9)), ("c", report(0.5, (4, 40)))):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(rep))
    out = tmp_path / "side.png"
    assert det.main(["--compare", f"v2={paths['a']}", f"v3={paths['b']}", "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > image.shape[0]            # two columns: wider than tall
    assert det.main(["--compare", f"v2={paths['a']}", f"v3={paths['b']}", "--out", str(out)]) == 2   # exists
    assert "--overwrite" in capsys.readouterr().err
    assert det.main(["--compare", f"v2={paths['a']}", f"x={paths['c']}", "--out", str(tmp_path / "o.png")]) == 2
    assert "another grid" in capsys.readouterr().err
    assert det.main(["--compare", f"v2={paths['a']}", "--out", str(tmp_path / "dir")]) == 2
    assert det.main(["--compare", str(paths["a"]), "--out", str(tmp_path / "o.png")]) == 2      # no LABEL=
    assert "LABEL=PATH" in capsys.readouterr().err
