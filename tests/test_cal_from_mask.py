"""cal_from_mask.py end to end on a tiny folder-split dataset written here: files in, known numbers out."""
import json

import cv2
import numpy as np
import pytest
import scipy.io

import cal_from_mask
from tests.conftest import DATASETS, need
from utils.data import list_split, load_pair
from utils.eval.metrics import Evaluator

# name: (height, width, targets as (row, col, size)); frames of different sizes, each scored at its own
FRAMES = {
    "a": (24, 32, [(4, 4, 3), (15, 20, 2)]),
    "b": (30, 30, [(0, 0, 2)]),  # touches the border
    "c": (20, 36, []),  # no target
    "d": (24, 32, [(10, 10, 4)]),
}
KEYS = {"iou", "niou", "precision", "recall", "f1", "pd", "fa", "auc", "n_images", "n_targets"}


def make_mask(h, w, targets):
    mask = np.zeros((h, w), np.uint8)
    for row, col, size in targets:
        mask[row:row + size, col:col + size] = 1
    return mask


def make_prediction(name, mask, seed):
    """A plausible probability map: the targets (frame d's shifted 4 px: a miss), one false blob, low noise."""
    rng = np.random.default_rng(seed)
    prob = (rng.random(mask.shape) ** 6 * 0.45).astype(np.float32)  # background below 0.45
    target = np.roll(mask, 4, axis=1) if name == "d" else mask
    prob[target > 0] = rng.uniform(0.6, 0.98, int(target.sum()))
    if name == "a":
        prob[20:22, 2:4] = 0.8  # a 2 x 2 false alarm, the same area as target 2
    return prob


@pytest.fixture()
def dataset(tmp_path):
    """Write root/{trainval,test}/{images,masks}/*.png and pred/{mat,img}; return (root, pred, {name: (prob, mask)})."""
    root, pred = tmp_path / "data", tmp_path / "pred"
    arrays = {}
    for split, frames in (("trainval", {"t1": (16, 16, [(3, 3, 2)]), "t2": (16, 16, [])}), ("test", FRAMES)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for name, (h, w, targets) in frames.items():
            mask = make_mask(h, w, targets)
            cv2.imwrite(str(root / split / "images" / f"{name}.png"), np.full((h, w), 60, np.uint8))
            cv2.imwrite(str(root / split / "masks" / f"{name}.png"), mask * 255)
            if split == "test":
                arrays[name] = (make_prediction(name, mask, seed=len(arrays)), mask)
    (pred / "mat").mkdir(parents=True)
    (pred / "img").mkdir()
    for name, (prob, _) in arrays.items():
        scipy.io.savemat(pred / "mat" / f"{name}.mat", {"T": prob, "D": np.zeros_like(prob)})
        cv2.imwrite(str(pred / "img" / f"{name}.png"), np.round(prob * 255).astype(np.uint8))
    return root, pred, arrays


def run(root, pred, *extra):
    return cal_from_mask.main(["--pred", str(pred), "--data-root", str(root), "--split", "test", "--workers", "0",
                               "--overwrite", *extra])   # the tests score one folder again and again


def test_end_to_end_known_numbers(dataset, capsys):
    root, pred, arrays = dataset
    assert run(root, pred) == 0
    report = json.loads((pred / "metrics.json").read_text())
    assert KEYS <= set(report) and report["protocol"] == "ours"
    assert (report["n_images"], report["n_targets"]) == (4, 4)
    # a: both targets found, one 4-pixel false blob; b: found; d: shifted 4 px -> missed and 16 false pixels
    assert report["pd"] == pytest.approx(3 / 4)
    assert report["fa"] == pytest.approx((4 + 16) / sum(h * w for h, w, _ in FRAMES.values()))
    expected = Evaluator()
    for prob, mask in arrays.values():
        expected.update(prob, mask)
    for key, value in expected.compute().items():
        assert report[key] == pytest.approx(value, abs=1e-12), key
    assert len(report["roc"]["thresholds"]) == 201 and report["sources"] == {"mat": 4, "png": 0}
    assert (pred / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "Pd" in out and "x1e-6" in out and "75.00 %" in out


def test_mat_and_png_agree_within_8_bit_quantisation(dataset, tmp_path):
    root, pred, _ = dataset
    reports = {}
    for source in ("mat", "png"):
        out = tmp_path / source
        assert run(root, pred, "--source", source, "--out", str(out)) == 0
        reports[source] = json.loads((out / "metrics.json").read_text())
    mat, png = reports["mat"], reports["png"]
    assert png["sources"] == {"mat": 0, "png": 4}
    for key in ("iou", "niou", "precision", "recall", "f1", "pd", "fa", "n_images", "n_targets"):
        assert png[key] == mat[key], key  # no probability lies within 1/510 of 0.5 here
    assert png["auc"] == pytest.approx(mat["auc"], abs=1 / 255)
    np.testing.assert_allclose(png["roc"]["fa"], mat["roc"]["fa"], atol=0.02)


def test_missing_predictions_are_listed(dataset, tmp_path, capsys):
    root, pred, _ = dataset
    (pred / "mat" / "b.mat").unlink()
    (pred / "img" / "b.png").unlink()
    (pred / "mat" / "d.mat").unlink()
    (pred / "img" / "d.png").unlink()
    assert run(root, pred) == 2
    err = capsys.readouterr().err
    assert "2 of 4" in err and "\n  b\n  d\n" in err and "--allow-missing" in err
    assert run(root, pred, "--allow-missing", "--out", str(tmp_path / "some")) == 0
    report = json.loads((tmp_path / "some" / "metrics.json").read_text())
    assert report["n_images"] == 2 and report["missing"] == ["b", "d"]


def test_predictions_directly_in_the_folder(dataset, tmp_path):
    root, pred, arrays = dataset
    flat = tmp_path / "flat"
    flat.mkdir()
    for name, (prob, _) in arrays.items():
        if name in ("a", "b"):
            scipy.io.savemat(flat / f"{name}.mat", {"T": prob})
        else:
            cv2.imwrite(str(flat / f"{name}.png"), np.round(prob * 255).astype(np.uint8))
    assert run(root, flat) == 0
    assert json.loads((flat / "metrics.json").read_text())["sources"] == {"mat": 2, "png": 2}


@pytest.mark.parametrize("protocol", ["ours", "release"])
def test_logits_are_refused_naming_the_file(dataset, capsys, protocol):
    root, pred, arrays = dataset
    scipy.io.savemat(pred / "mat" / "c.mat", {"T": np.log(arrays["c"][0] + 1e-6) - 3})
    assert run(root, pred, "--protocol", protocol) == 2
    err = capsys.readouterr().err
    assert "c.mat" in err and "sigmoid" in err


def test_mat_without_T_is_refused(dataset, capsys):
    root, pred, arrays = dataset
    scipy.io.savemat(pred / "mat" / "a.mat", {"D": arrays["a"][0]})
    assert run(root, pred) == 2
    assert "no variable 'T'" in capsys.readouterr().err


def test_mask_of_another_size(dataset, capsys):
    root, pred, arrays = dataset
    h, w, targets = FRAMES["d"]
    big = cv2.resize(make_mask(h, w, targets), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(root / "test" / "masks" / "d.png"), big * 255)
    assert run(root, pred) == 0  # same aspect: resized to the prediction's size, with a warning
    err = capsys.readouterr().err
    assert "warning: mask" in err and f"{2 * w}x{2 * h}" in err and f"{w}x{h}" in err
    report = json.loads((pred / "metrics.json").read_text())
    assert report["n_targets"] == 4 and any("d.png" in note for note in report["warnings"])
    cv2.imwrite(str(root / "test" / "masks" / "d.png"), np.zeros((h, 3 * w), np.uint8))
    assert run(root, pred) == 2  # another aspect ratio: an error naming both files
    err = capsys.readouterr().err
    assert "different aspect" in err and "d.png" in err and "d.mat" in err
    assert "re-export the prediction at the frame's size" in err and "replace the mask" not in err


def test_release_protocol_reproduces_its_defects(dataset, tmp_path):
    root, pred, arrays = dataset
    dim = tmp_path / "dim"
    (dim / "mat").mkdir(parents=True)
    for name, (prob, _) in arrays.items():  # a timid detector: every map below 0.2
        scipy.io.savemat(dim / "mat" / f"{name}.mat", {"T": prob * np.float32(0.2)})
    assert run(root, dim) == 0
    ours = json.loads((dim / "metrics.json").read_text())
    assert ours["pd"] == 0 and ours["fa"] == 0  # nothing above 0.5
    assert run(root, dim, "--protocol", "release") == 0
    release = json.loads((dim / "metrics.json").read_text())
    assert release["protocol"] == "release" and "comparison" in release["note"]
    assert release["pd"] > 0.5  # pred / max(pred) > 0.5: every frame's brightest region becomes a detection
    assert release["fa"] > 0  # frame c has no target, yet its brightest pixels are detections
    assert release["n_images"] == 4


def test_unknown_data_root_is_an_error(tmp_path, capsys):
    assert cal_from_mask.main(["--pred", str(tmp_path), "--data-root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_reading_threads_give_the_same_report(dataset, tmp_path):
    root, pred, _ = dataset
    reports = []
    for workers in ("0", "2"):
        out = tmp_path / workers
        assert cal_from_mask.main(["--pred", str(pred), "--data-root", str(root), "--workers", workers,
                                   "--out", str(out)]) == 0
        reports.append(json.loads((out / "metrics.json").read_text()))
    reports[0].pop("pred_dir"), reports[1].pop("pred_dir")
    assert reports[0] == reports[1]


def test_sirst_v1_masks_score_perfectly_with_misc_111_fitted(tmp_path, capsys):
    """Real data: predictions equal to the loader's masks score 1; Misc_111's larger mask is fitted visibly."""
    root = need(DATASETS / "SIRST-v1")
    samples, _ = list_split(root, "test")
    (tmp_path / "mat").mkdir()
    for sample in samples:
        _, mask, _ = load_pair(sample)
        scipy.io.savemat(tmp_path / "mat" / f"{sample.name}.mat", {"T": mask.astype(np.float32)})
    assert cal_from_mask.main(["--pred", str(tmp_path), "--data-root", str(root), "--split", "test"]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert (report["n_images"], report["iou"], report["niou"], report["pd"], report["fa"]) == (86, 1, 1, 1, 0)
    assert any("Misc_111_pixels0.png is 592x400" in note for note in report["warnings"])
    assert "Misc_111" in capsys.readouterr().err


def _png_only(pred, tmp_path, arrays, binary):
    """Write tmp/NAME/img/*.png: the masks as 0/1 (binary) or round(255 p)."""
    folder = tmp_path / "png_pred"
    (folder / "img").mkdir(parents=True)
    for name, (prob, mask) in arrays.items():
        cv2.imwrite(str(folder / "img" / f"{name}.png"), mask.astype(np.uint8) if binary else
                    np.round(prob * 255).astype(np.uint8))
    return folder


def test_png_of_zeros_and_ones_is_read_as_a_binary_map(dataset, tmp_path, capsys):
    root, _, arrays = dataset
    folder = _png_only(None, tmp_path, arrays, binary=True)
    assert run(root, folder) == 0
    err = capsys.readouterr().err
    report = json.loads((folder / "metrics.json").read_text())
    assert report["pd"] == 1.0 and report["iou"] == 1.0 and report["fa"] == 0.0  # not all background
    notes = [n for n in report["warnings"] if "only the values 0 and 1" in n]
    assert len(notes) == 1 and notes[0].startswith(f"3 PNG prediction(s) in {folder / 'img'}")  # c has no target
    assert err.count("only the values 0 and 1") == 1


def test_all_empty_masks_report_pd_recall_auc_as_undefined(dataset, capsys):
    root, pred, arrays = dataset
    for name, (_prob, mask) in arrays.items():
        cv2.imwrite(str(root / "test" / "masks" / f"{name}.png"), np.zeros_like(mask))
    assert run(root, pred) == 0
    captured = capsys.readouterr()
    report = json.loads((pred / "metrics.json").read_text())
    assert report["pd"] is None and report["recall"] is None and report["auc"] is None and report["f1"] is None
    assert report["fa"] > 0 and report["n_targets"] == 0
    assert "undefined" in captured.err
    assert [line.split()[-1] for line in captured.out.splitlines() if line.strip().startswith(("Pd", "AUC"))] == \
        ["-", "-"]


def test_unwritable_out_is_one_line(dataset, tmp_path, capsys):
    root, pred, _ = dataset
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run(root, pred, "--out", str(blocker)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {blocker} is a file") and "pass a folder" in err  # before any scoring
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"
    assert run(root, pred, "--out", str(blocker / "sub")) == 2  # under a file: the write fails, one line
    err = capsys.readouterr().err
    assert f"error: cannot write the report to {blocker / 'sub'}" in err and "Traceback" not in err


def test_manifest_refuses_mixed_and_incomplete_runs(dataset, capsys):
    from utils.files import write_json

    root, pred, arrays = dataset
    assert run(root, pred) == 0
    assert "has no manifest.json" in capsys.readouterr().err  # another tool's folder: scored, with a warning
    files = [f"{sub}/{name}.{ext}" for name in arrays for sub, ext in (("mat", "mat"), ("img", "png"))]
    write_json(pred / "manifest.json", {"files": [f for f in files if not f.startswith(("mat/d", "img/d"))]})
    assert run(root, pred) == 2
    err = capsys.readouterr().err
    assert "mixes runs" in err and "img/d.png" in err and "mat/d.mat" in err and "--overwrite" in err
    write_json(pred / "manifest.json", {"files": files + ["mat/e.mat"]})
    assert run(root, pred) == 2
    assert "mat/e.mat" in capsys.readouterr().err
    write_json(pred / "manifest.json", {"files": files})
    assert run(root, pred) == 0


def test_forked_scoring_processes_give_the_same_report(tmp_path):
    """A whole cal_from_mask.py process (no torch, one thread: it forks scoring workers) against one that scores
    in its own process: the same report, to the last digit of every count and the ROC."""
    import subprocess
    import sys

    from utils import ROOT
    from utils.eval.scoring import PROCESS_MIN_FRAMES
    root, pred = tmp_path / "data", tmp_path / "pred"
    for sub in ("test/images", "test/masks", "trainval/images", "trainval/masks", "mat"):
        (root / sub if sub != "mat" else pred / sub).mkdir(parents=True)
    for split, n in (("trainval", 2), ("test", PROCESS_MIN_FRAMES + 6)):
        for k in range(n):
            targets = [(k % 20, (3 * k) % 20, 1 + k % 3)] if k % 5 else []  # every 5th frame holds no target
            mask = make_mask(24, 24, targets)
            cv2.imwrite(str(root / split / "images" / f"{k:03d}.png"), np.full((24, 24), 60, np.uint8))
            cv2.imwrite(str(root / split / "masks" / f"{k:03d}.png"), mask * 255)
            if split == "test":
                prob = make_prediction("d" if k % 7 == 0 else "x", mask, seed=k)
                scipy.io.savemat(pred / "mat" / f"{k:03d}.mat", {"T": prob})
    reports = []
    for workers in ("0", "2"):
        out = tmp_path / workers
        done = subprocess.run([sys.executable, str(ROOT / "cal_from_mask.py"), "--pred", str(pred), "--data-root",
                               str(root), "--workers", workers, "--out", str(out), "--quiet"],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads((out / "metrics.json").read_text()))
    assert reports[0]["n_images"] == PROCESS_MIN_FRAMES + 6
    for report in reports:
        report.pop("pred_dir")
        report["niou"] = round(report["niou"], 12)  # a sum over frames in another order: the last bit may differ
    assert reports[0] == reports[1]
