"""inference.py on small synthetic data with a random-weight network: files, sizes, errors, tiles, detections."""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import scipy.io
import torch

import inference
from models import get_model
from tests.conftest import FIXTURES, need
from utils.checkpoint import atomic_save
from models import load_model
from utils.runtime import Predictor
from utils.synthetic import make_scene, write_dataset

ODD_NAME, ODD_HW = "odd", (45, 70)  # a frame of another size, not a multiple of 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Return (dataset root, checkpoint path): 4 synthetic 64 x 64 test frames plus one 45 x 70 frame."""
    tmp = tmp_path_factory.mktemp("inference")
    root = write_dataset(tmp / "data", n_trainval=4, n_test=4, size=(64, 64), seed=0)
    frame, mask = make_scene(7, *ODD_HW)
    cv2.imwrite(str(root / "test" / "images" / f"{ODD_NAME}.png"), frame)
    cv2.imwrite(str(root / "test" / "masks" / f"{ODD_NAME}.png"), mask * 255)
    torch.manual_seed(0)
    net = get_model("LRRNet")
    ckpt = tmp / "random.pt"
    atomic_save({"model": net.state_dict(), "model_name": "LRRNet", "model_hparams": net.hparams()}, ckpt)
    return root, ckpt


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """Run inference.py once on the test split with --overlay; return (exit code, out dir, root)."""
    root, ckpt = data
    out = tmp_path_factory.mktemp("out")
    code = inference.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--split", "test", "--out", str(out),
                           "--overlay", "--quiet"])
    return code, out, root


def frame_names(root):
    return sorted(p.stem for p in (root / "test" / "images").iterdir())


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
        assert cv2.imread(str(out / "overlay" / f"{name}.png")).shape == (h, 2 * w + inference.OVERLAY_GAP_PX, 3)
    assert not list(out.rglob("*.tmp"))


def test_mat_and_png_agree_within_one_grey_level(run):
    _, out, root = run
    for name in frame_names(root):
        prob = scipy.io.loadmat(out / "mat" / f"{name}.mat")["T"]
        png = cv2.imread(str(out / "img" / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
        assert np.abs(prob - png).max() <= 0.5 / 255 + 1e-6  # round(255 p): within half a level


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
    assert tuple(rows[0]) == inference.CSV_FIELDS
    report = json.loads((out / "detections.json").read_text())
    assert [f["frame"] for f in report["frames"]] == frame_names(root) and report["errors"] == []
    for entry in report["frames"]:
        prob = scipy.io.loadmat(out / "mat" / f"{entry['frame']}.mat")["T"]
        expected = inference.detect_targets(prob)
        assert entry["targets"] == expected and entry["size_hw"] == list(prob.shape)
        mine = [r for r in rows if r["frame"] == entry["frame"]]
        assert [int(r["area_px"]) for r in mine] == [e["area_px"] for e in expected]
        assert [float(r["x"]) for r in mine] == pytest.approx([e["x"] for e in expected], abs=1e-3)


def test_detect_targets_known_components():
    prob = np.zeros((12, 16), np.float32)
    prob[2:4, 10:13] = [[0.6, 0.9, 0.7], [0.8, 0.6, 0.6]]  # 2 x 3 block, first in raster order
    prob[5, 1], prob[6, 2], prob[7, 3] = 0.9, 0.7, 0.8  # a diagonal: one 8-connected target
    prob[9:12, 14:16] = 0.55  # touches the border
    prob[0, 0] = 0.5  # exactly 0.5 is not a detection (p > 0.5)
    rows = inference.detect_targets(prob)
    assert [r["target"] for r in rows] == [1, 2, 3]
    block, diagonal, corner = rows
    assert (block["x"], block["y"]) == pytest.approx((11.0, 2.5))
    assert (block["bbox_x"], block["bbox_y"], block["bbox_w"], block["bbox_h"], block["area_px"]) == (10, 2, 3, 2, 6)
    assert block["peak_prob"] == pytest.approx(0.9) and block["mean_prob"] == pytest.approx(4.2 / 6)
    assert (diagonal["x"], diagonal["y"]) == pytest.approx((2.0, 6.0))
    assert (diagonal["bbox_x"], diagonal["bbox_y"], diagonal["bbox_w"], diagonal["bbox_h"]) == (1, 5, 3, 3)
    assert diagonal["area_px"] == 3 and diagonal["mean_prob"] == pytest.approx(0.8)
    assert (corner["x"], corner["y"], corner["area_px"]) == pytest.approx((14.5, 10.0, 6))
    assert inference.detect_targets(np.zeros((5, 5), np.float32)) == []


def test_overlay_colours():
    frame = np.full((20, 20), 0.5, np.float32)
    mask = np.zeros((20, 20), np.uint8)
    mask[3:6, 3:6] = 1  # missed target: green only
    prob = np.zeros((20, 20), np.float32)
    prob[12:15, 12:15] = 0.9  # false alarm: red only
    picture = inference.overlay_image(frame, mask, prob, np.zeros_like(frame))
    assert tuple(picture[3, 3]) == inference.GT_BGR and tuple(picture[4, 4]) == (128, 128, 128)
    assert tuple(picture[12, 12]) == inference.DET_BGR
    both = inference.overlay_image(frame, mask, mask.astype(np.float32), np.ones_like(frame))
    assert tuple(both[3, 3]) == inference.BOTH_BGR
    assert (both[:, 20 + inference.OVERLAY_GAP_PX:] == 255).all()  # D = 1 everywhere -> white


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
    assert code == 0
    assert f"using {first}.png" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "img").iterdir()) == sorted(p.name for p in folder.glob("*.png"))
    assert len(list((tmp_path / "out" / "overlay").iterdir())) == 2
    with pytest.raises(SystemExit):  # nothing to score against
        inference.main(["--checkpoint", str(ckpt), "--images", str(folder), "--score"])


def test_corrupt_frame_named_skipped_and_exit_code(data, tmp_path, capsys):
    root, ckpt = data
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    bad = copy / "test" / "images" / "100001.png"
    bad.write_bytes(b"garbage, not a PNG at all")
    out = tmp_path / "out"
    code = inference.main(["--checkpoint", str(ckpt), "--data-root", str(copy), "--out", str(out), "--quiet"])
    assert code == inference.EXIT_SKIPPED
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
    assert code == inference.EXIT_ERROR and "absent.pt" in capsys.readouterr().err


def test_dataset_name_reads_datasets_and_writes_results(data, tmp_path, monkeypatch):
    root, ckpt = data
    monkeypatch.setattr("utils.data.DATASETS_DIR", tmp_path / "datasets")
    monkeypatch.setattr(inference, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "NUDT-SIRST").symlink_to(root)
    assert inference.main(["--checkpoint", str(ckpt), "--dataset", "NUDT-SIRST", "--quiet", "--score"]) == 0
    out = tmp_path / "results" / "NUDT-SIRST"
    assert len(list((out / "mat").iterdir())) == len(frame_names(root))
    assert json.loads((out / "metrics.json").read_text())["n_images"] == len(frame_names(root))


# ----------------------------------------------------------------------------- tiles


def pointwise(x):
    """A stand-in network whose outputs at a pixel depend on that pixel only: tiling must not change them."""
    return 2 * x - 0.3, 8 * (x - 0.5)


@pytest.mark.parametrize("hw, tile, overlap", [((64, 64), 32, 16), ((45, 70), 16, 8), ((37, 29), 24, 0),
                                               ((20, 20), 32, 8)])
def test_tile_blending_is_exact_for_a_pointwise_network(hw, tile, overlap):
    x = torch.rand(1, 1, *hw, generator=torch.Generator().manual_seed(1))
    d, t = inference.predict_tiled(pointwise, x, tile, overlap, batch_size=3)
    ref_d, ref_t = pointwise(x[0, 0])
    torch.testing.assert_close(d, ref_d, atol=1e-6, rtol=0)
    torch.testing.assert_close(t, ref_t, atol=1e-6, rtol=0)


def test_tile_layout_covers_the_frame():
    assert inference.tile_starts(64, 32, 16) == [0, 16, 32]
    assert inference.tile_starts(70, 32, 8) == [0, 24, 38]  # the last tile flush with the end
    assert inference.tile_starts(20, 32, 8) == [0]
    w = inference.ramp(32, 8, rise=True, fall=False)
    assert w[0] == pytest.approx(0.5 / 8) and (w[8:] == 1).all() and (np.diff(w[:9]) > 0).all()


def test_tiled_network_close_to_whole_frame(data):
    """Tiles normalise (GroupNorm) and attend over themselves only, so tiled maps are close, not equal.

    Measured with this random-weight network on this 64 x 64 scene, tile 32, overlap 16:
    max |p_tiled - p_whole| 0.31, 99th percentile 0.21, mean 0.056. A random network puts p near
    0.5 everywhere; a trained one (synthetic scenes, IoU 0.59, 256 x 256 frames, tile 128,
    overlap 64, 8 scenes) gave mean 5.5e-4, 99th percentile 2e-4, 99.9th 0.08, max 1.0 at a few
    target-rim pixels; its tiled maps scored IoU 0.75 against 0.64 whole (it was trained on 64 px crops).
    """
    net, _ = load_model(data[1])
    predictor = Predictor(net, torch.device("cpu"))
    frame, _ = make_scene(0, 64, 64)
    x = torch.from_numpy(frame.astype(np.float32) / 255)[None, None]
    _, t = predictor(x)
    whole = torch.sigmoid(t[0, 0])
    _, t_tiled = inference.predict_tiled(predictor, x, 32, 16, batch_size=4)
    diff = (torch.sigmoid(t_tiled) - whole).abs()
    assert diff.max() < 0.45 and diff.quantile(0.99) < 0.3 and diff.mean() < 0.08
    _, t_one = inference.predict_tiled(predictor, x, 64, 16, batch_size=4)  # one tile = the whole frame
    torch.testing.assert_close(t_one, t[0, 0], atol=1e-6, rtol=0)


def test_cli_tiling_path_writes_native_size(data, tmp_path):
    root, ckpt = data
    out = tmp_path / "out"
    code = inference.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out), "--quiet",
                           "--tile-above", "0", "--tile", "32", "--overlap", "16"])
    assert code == 0
    assert scipy.io.loadmat(out / "mat" / f"{ODD_NAME}.mat")["T"].shape == ODD_HW
