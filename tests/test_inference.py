"""inference.py on small synthetic data with a random-weight network: files, sizes, errors, the tiled path."""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import scipy.io
import torch

import inference
from models import load_model
from tests.conftest import FIXTURES, need, random_checkpoint
from utils.cli import EXIT_ERROR, EXIT_PARTIAL
from utils.data.synthetic import make_scene, write_dataset
from utils.infer.device import Predictor
from utils.infer.predict import DETECTION_FIELDS, detect_targets
from utils.infer.writers import OVERLAY_GAP_PX

ODD_NAME, ODD_HW = "odd", (45, 70)  # a frame of another size, not a multiple of 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Return (dataset root, checkpoint path): 4 synthetic 64 x 64 test frames plus one 45 x 70 frame."""
    tmp = tmp_path_factory.mktemp("inference")
    root = write_dataset(tmp / "data", n_trainval=4, n_test=4, size=(64, 64), seed=0)
    frame, mask = make_scene(7, *ODD_HW)
    cv2.imwrite(str(root / "test" / "images" / f"{ODD_NAME}.png"), frame)
    cv2.imwrite(str(root / "test" / "masks" / f"{ODD_NAME}.png"), mask * 255)
    return root, random_checkpoint(tmp / "random.pt")


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """Run inference.py once on the test split with --overlay; return (exit code, out dir, root)."""
    root, ckpt = data
    out = tmp_path_factory.mktemp("out")
    code = inference.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--split", "test", "--out", str(out),
                           "--overlay", "--quiet", "--dtype", "fp32"])   # fp32: the maps are compared with the network's
    return code, out, root


def frame_names(root):
    return sorted(p.stem for p in (root / "test" / "images").iterdir())


@pytest.mark.slow
def test_outputs_for_every_frame_at_native_size(run):
    code, out, root = run
    assert code == 0
    for name in frame_names(root):
        frame = cv2.imread(str(root / "test" / "images" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        mat = scipy.io.loadmat(out / "mat" / f"{name}.mat")
        assert mat["T"].dtype == np.float32 and mat["D"].dtype == np.float32
        assert mat["T"].shape == frame.shape and mat["D"].shape == frame.shape
        assert 0.0 <= mat["T"].min() and mat["T"].max() <= 1.0
        assert cv2.imread(str(out / "img" / f"{name}.png"), cv2.IMREAD_UNCHANGED).shape == frame.shape
        h, w = frame.shape
        assert cv2.imread(str(out / "overlay" / f"{name}.png")).shape == (h, 2 * w + OVERLAY_GAP_PX, 3)
    assert not list(out.rglob("*.tmp"))


def test_mat_and_png_agree_within_one_grey_level(run):
    _, out, root = run
    for name in frame_names(root):
        prob = scipy.io.loadmat(out / "mat" / f"{name}.mat")["T"]
        png = cv2.imread(str(out / "img" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
        assert np.abs(prob - png).max() <= 0.5 / 255 + 1e-6  # round(255 p): within half a level


@pytest.mark.slow
def test_maps_match_the_network_run_directly(run, data):
    _, out, root = run
    net, _ = load_model(data[1])
    frame = cv2.imread(str(root / "test" / "images" / f"{ODD_NAME}.png"), cv2.IMREAD_UNCHANGED)
    d, t = Predictor(net, torch.device("cpu"))(torch.from_numpy(frame.astype(np.float32) / 255)[None, None])
    mat = scipy.io.loadmat(out / "mat" / f"{ODD_NAME}.mat")
    np.testing.assert_allclose(mat["T"], torch.sigmoid(t)[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(mat["D"], d[0, 0].numpy(), atol=1e-4)


def test_detections_files_match_the_maps(run):
    _, out, root = run
    with open(out / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == ("frame", *DETECTION_FIELDS)
    report = json.loads((out / "detections.json").read_text())
    assert [f["frame"] for f in report["frames"]] == frame_names(root) and report["errors"] == []
    for entry in report["frames"]:
        prob = scipy.io.loadmat(out / "mat" / f"{entry['frame']}.mat")["T"]
        expected = detect_targets(prob)
        assert entry["targets"] == expected and entry["size_hw"] == list(prob.shape)
        mine = [r for r in rows if r["frame"] == entry["frame"]]
        assert [int(r["area_px"]) for r in mine] == [e["area_px"] for e in expected]
        assert [float(r["x"]) for r in mine] == pytest.approx([e["x"] for e in expected], abs=1e-3)


@pytest.mark.slow
def test_release_state_dict_accepted(data, tmp_path):
    fixture = need(FIXTURES / "lrrnet_official_format_random_weights.pth")
    root, _ = data
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(root / "test" / "images" / f"{ODD_NAME}.png", folder)
    code = inference.main(["--checkpoint", str(fixture), "--images", str(folder), "--out", str(tmp_path / "out"),
                           "--quiet"])
    assert code == 0
    assert scipy.io.loadmat(tmp_path / "out" / "mat" / f"{ODD_NAME}.mat")["T"].shape == ODD_HW


@pytest.mark.slow
def test_bare_image_folder_without_masks(data, tmp_path, capsys):
    root, ckpt = data
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in frame_names(root)[:2]:
        shutil.copy(root / "test" / "images" / f"{name}.png", folder)
    (folder / "notes.txt").write_text("not a frame")
    first = frame_names(root)[0]
    cv2.imwrite(str(folder / f"{first}.bmp"), cv2.imread(str(folder / f"{first}.png")))  # same stem: one is run
    code = inference.main(["--checkpoint", str(ckpt), "--images", str(folder), "--out", str(tmp_path / "out"),
                           "--overlay", "--quiet"])
    assert code == EXIT_PARTIAL  # a frame was skipped (named): not "wrote 2 of 2"
    printed = capsys.readouterr()
    assert f"using {first}.png" in printed.err
    assert "wrote 2 of 3 frames" in printed.out and f"{first}.bmp" in printed.out
    assert sorted(p.name for p in (tmp_path / "out" / "img").iterdir()) == sorted(p.name for p in folder.glob("*.png"))
    assert len(list((tmp_path / "out" / "overlay").iterdir())) == 2
    with pytest.raises(SystemExit):  # nothing to score against
        inference.main(["--checkpoint", str(ckpt), "--images", str(folder), "--score"])


@pytest.mark.slow
def test_corrupt_frame_named_skipped_and_exit_code(data, tmp_path, capsys):
    root, ckpt = data
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    bad = copy / "test" / "images" / "100001.png"
    bad.write_bytes(b"garbage, not a PNG at all")
    out = tmp_path / "out"
    code = inference.main(["--checkpoint", str(ckpt), "--data-root", str(copy), "--out", str(out), "--quiet"])
    assert code == EXIT_PARTIAL
    assert str(bad) in capsys.readouterr().err
    written = sorted(p.stem for p in (out / "mat").iterdir())
    assert written == [n for n in frame_names(root) if n != "100001"]
    assert sorted(p.stem for p in (out / "img").iterdir()) == written
    report = json.loads((out / "detections.json").read_text())
    assert [e["frame"] for e in report["errors"]] == ["100001"]


def test_bad_checkpoint_exits_2(data, tmp_path, capsys):
    root, _ = data
    code = inference.main(["--checkpoint", str(tmp_path / "absent.pt"), "--data-root", str(root), "--out",
                           str(tmp_path)])
    assert code == EXIT_ERROR and "absent.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_dataset_name_reads_datasets_and_writes_results(data, tmp_path, monkeypatch):
    root, ckpt = data
    monkeypatch.setattr("utils.DATASETS_DIR", tmp_path / "datasets")
    monkeypatch.setattr(inference, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "NUDT-SIRST").symlink_to(root)
    assert inference.main(["--checkpoint", str(ckpt), "--dataset", "NUDT-SIRST", "--quiet", "--score"]) == 0
    out = tmp_path / "results" / "NUDT-SIRST"
    assert len(list((out / "mat").iterdir())) == len(frame_names(root))
    assert json.loads((out / "metrics.json").read_text())["n_images"] == len(frame_names(root))


@pytest.mark.slow
def test_cli_tiling_path_writes_native_size(data, tmp_path):
    root, ckpt = data
    out = tmp_path / "out"
    code = inference.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out), "--quiet",
                           "--tile-above", "0", "--tile", "32", "--overlap", "16"])
    assert code == 0
    assert scipy.io.loadmat(out / "mat" / f"{ODD_NAME}.mat")["T"].shape == ODD_HW


@pytest.mark.slow
def test_val_split_is_carved_and_scored_with_the_checkpoints_seed(data, tmp_path):
    """A layout without val: --split val must be the checkpoint's val (its val_seed), for inference and --score."""
    from utils.checkpoint import atomic_save
    from utils.data import index_split

    root, ckpt = data
    saved = torch.load(ckpt, weights_only=True)
    saved["config"] = {"val_fraction": 0.5, "val_seed": 4}
    atomic_save(saved, tmp_path / "seeded.pt")
    out = tmp_path / "out"
    code = inference.main(["--checkpoint", str(tmp_path / "seeded.pt"), "--data-root", str(root), "--split", "val",
                           "--out", str(out), "--quiet", "--score"])
    assert code == 0
    seeded = sorted(s.name for s in index_split(root, "val", val_fraction=0.5, val_seed=4)[0])
    assert seeded != sorted(s.name for s in index_split(root, "val", val_fraction=0.5, val_seed=0)[0])
    assert sorted(p.stem for p in (out / "mat").iterdir()) == seeded
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == len(seeded) and metrics["missing"] == []
