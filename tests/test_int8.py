"""int8 exports (utils.export --int8): the round trip on a small random network and on the shipped checkpoint, the
checkpoint's verifier after the ONNX network, the opset range, and inference.py's dtype choice."""
import json
import shutil

import numpy as np
import pytest
import torch

import inference
from models import load_model
from models.load import load_checkpoint
from tests.conftest import need, random_checkpoint
from utils import ROOT, export
from utils.cli import EXIT_ERROR
from utils.data import iter_video_frames, read_frame
from utils.data.synthetic import write_dataset
from utils.infer.device import Predictor, cpu_has_native_bf16, resolve_dtype
from utils.infer.onnx import OPSET, OPSET_MAX, OnnxPredictor
from utils.infer.predict import detect_targets

pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; install it to test the ONNX export")
SMALL = dict(width_mults=(1, 2), blocks_per_level=1)  # two levels, 5 blocks fewer: a few seconds to export
GENERAL = ROOT / "checkpoints" / "lrrnet_general.pt"
CLIP = ROOT / "datasets" / "samples" / "videos" / "IR_BIRD_019_128-255.mp4"
# a small random network quantises badly (no training has shaped its ranges): measured mean |dp| 0.043 and mean
# |dD| 0.59 of mean |D| on its own test frames. These bounds catch a broken round trip (a lost scale, a swapped
# output), not accuracy: the trained checkpoint's test below and docs/speed.md do that
MAX_MEAN_DP_RANDOM = 0.1
MAX_MEAN_DD_RANDOM = 1.0


@pytest.mark.parametrize("opset", ["5", "99", str(OPSET - 1), str(OPSET_MAX + 1)])
def test_opset_outside_the_range_is_one_line_before_any_work(tmp_path, capsys, opset):
    ckpt = random_checkpoint(tmp_path / "small.pt", **SMALL)
    code = export.main(["--checkpoint", str(ckpt), "--onnx", str(tmp_path / "x.onnx"), "--opset", opset])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_ERROR and len(err) == 1 and err[0].startswith("error: --opset " + opset)
    assert f"{OPSET} to {OPSET_MAX}" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.pt"]  # nothing written


def test_auto_dtype_is_bf16_exactly_where_the_cpu_computes_it():
    want = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_dtype("auto", torch.device("cpu")) == want
    assert resolve_dtype("fp32", torch.device("cpu")) == "fp32" and resolve_dtype("bf16", torch.device("cpu")) == "bf16"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Return (checkpoint with the general model's verifier, its float32 export, a synthetic dataset root)."""
    tmp = tmp_path_factory.mktemp("int8")
    ckpt = random_checkpoint(tmp / "small.pt", seed=3, **SMALL)
    state = load_checkpoint(ckpt)
    state["verifier"] = load_checkpoint(need(GENERAL))["verifier"]   # a real verifier, after a random LRRNet
    torch.save(state, ckpt)
    root = write_dataset(tmp / "data", n_trainval=30, n_test=2, size=(64, 64), seed=1)
    onnx_path = tmp / "small.onnx"
    assert export.main(["--checkpoint", str(ckpt), "--onnx", str(onnx_path), "--check-sizes"]) == 0
    return ckpt, onnx_path, root


@pytest.mark.slow
def test_onnx_backend_applies_the_checkpoints_verifier(small, tmp_path):
    ckpt, onnx_path, root = small
    entry = load_checkpoint(ckpt)["verifier"]
    stored = OnnxPredictor(onnx_path).verifier_entry
    assert stored["tau"] == entry["tau"] and stored["hparams"] == entry["hparams"]
    assert all(torch.equal(stored["state_dict"][k], v) for k, v in entry["state_dict"].items())
    for flag, expect in (("--verify", entry["tau"]), ("--no-verify", None)):
        out = tmp_path / flag
        assert inference.main(["--checkpoint", str(onnx_path), "--backend", "onnxruntime", "--images",
                               str(root / "test" / "images"), "--out", str(out), flag, "--quiet"]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["options"]["verifier"] or {}).get("tau") == expect
        assert manifest["options"]["dtype"] == "fp32"


@pytest.mark.slow
def test_int8_round_trip_on_a_small_random_network(small, tmp_path):
    ckpt, _, root = small
    path = tmp_path / "small.int8.onnx"
    assert export.main(["--checkpoint", str(ckpt), "--onnx", str(path), "--int8", "--calibration-data", str(root),
                        "--calibration-frames", "3", "--check-sizes"]) == 0
    predictor = OnnxPredictor(path)
    assert predictor.dtype_name == "int8" and predictor.verifier_entry is not None
    q = predictor.quantization
    assert q["format"] == "QDQ" and q["method"] == "minmax"
    assert q["calibration"]["frames"] == 3 and q["calibration"]["split"] == "val"
    net, _ = load_model(ckpt)
    frames = [read_frame(f) for f in sorted((root / "test" / "images").iterdir())]  # the calibration's distribution
    x = torch.from_numpy(np.stack(frames))[:, None]
    with torch.inference_mode():
        d_ref, t_ref = net.float().eval()(x)
    d, t = predictor(x)
    dp, dd = (torch.sigmoid(t) - torch.sigmoid(t_ref)).abs(), (d - d_ref).abs()
    print(f"small random network, int8 - fp32: mean |dp| {dp.mean():.4f}, max {dp.max():.4f}; mean |dD| {dd.mean():.4f} "
          f"of mean |D| {d_ref.abs().mean():.4f}")
    # 8-bit activations, a step of 1/255 of each tensor's calibrated range, through 10 convolutions of random weights
    assert dp.mean() < MAX_MEAN_DP_RANDOM and dd.mean() < MAX_MEAN_DD_RANDOM * d_ref.abs().mean()
    out = tmp_path / "out"
    assert inference.main(["--checkpoint", str(path), "--backend", "onnxruntime", "--data-root", str(root),
                           "--split", "test", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["dtype"] == "int8" and manifest["options"]["verifier"] is not None
    detections = json.loads((out / "detections.json").read_text())
    assert detections["dtype"] == "int8"


@pytest.mark.slow
def test_int8_keeps_the_shipped_checkpoints_detections_on_the_real_clip(tmp_path):
    """The general checkpoint, calibrated on the sample clip's frames (a stand-in val split: the real calibration
    reads the training data's val split), against float32 PyTorch on 4 other frames of the clip."""
    need(GENERAL)
    root = tmp_path / "clipdata"
    (root / "videos").mkdir(parents=True)
    shutil.copy(CLIP, root / "videos" / CLIP.name)
    shutil.copy(ROOT / "datasets" / "samples" / "labels.csv", root / "labels.csv")
    (root / "val.txt").write_text(CLIP.stem + "\n")
    (root / "train.txt").write_text("")
    path = tmp_path / "general.int8.onnx"
    assert export.main(["--checkpoint", str(GENERAL), "--onnx", str(path), "--int8", "--calibration-data",
                        str(root), str(root), str(root), "--calibration-frames", "3", "--check-sizes"]) == 0
    int8 = OnnxPredictor(path)
    net, _ = load_model(GENERAL)
    fp32 = Predictor(net, torch.device("cpu"), "fp32")
    for _, frame in iter_video_frames(CLIP, every=37, start=5):
        x = torch.from_numpy(frame.astype(np.float32) / 255)[None, None]
        p_ref, p = (torch.sigmoid(model(x)[1])[0, 0].numpy() for model in (fp32, int8))
        ref, got = detect_targets(p_ref), detect_targets(p)
        assert len(ref) == len(got)
        for one, other in ((ref, got), (got, ref)):  # every target has one within 1 px in the other's list
            for a in one:
                assert min(np.hypot(a["x"] - b["x"], a["y"] - b["y"]) for b in other) <= 1
        print(f"general, int8 - fp32 on clip frame: {len(ref)} targets fp32, {len(got)} int8, mean |dp| "
              f"{np.abs(p - p_ref).mean():.2e}, max {np.abs(p - p_ref).max():.3f}")
        assert np.abs(p - p_ref).mean() < 1e-3


def test_percentile_calibration_frames_are_centre_crops_of_one_size():
    """onnxruntime's percentile calibration needs frames of one size: the centres at the largest size all hold."""
    class Frames:
        def __init__(self, shapes):
            self.sizes = shapes
            self.frames = [np.arange(h * w, dtype=np.float32).reshape(h, w) for h, w in shapes]

        def __getitem__(self, i):
            return {"image": torch.from_numpy(self.frames[i])[None]}

    sets = [("a", Frames([(10, 12), (8, 20)])), ("b", Frames([(9, 9)]))]
    chosen = [("a", 0), ("b", 0), ("a", 1)]
    assert export.common_size(sets, chosen) == (8, 9)
    crops = list(export.frames_of(sets, chosen, (8, 9)))
    assert [c.shape for c in crops] == [(8, 9)] * 3
    np.testing.assert_array_equal(crops[0], sets[0][1].frames[0][1:9, 1:10])      # the centre: 1 row, 1 column off
    assert [f.shape for f in export.frames_of(sets, chosen)] == [(10, 12), (9, 9), (8, 20)]   # MinMax: native sizes


def test_a_missing_onnx_module_names_the_package_to_install(monkeypatch):
    from utils.infer import onnx as onnx_module

    def missing(name):
        raise ImportError(name)
    monkeypatch.setattr(onnx_module.importlib, "import_module", missing)
    with pytest.raises(onnx_module.ExportError, match=r"onnxruntime.quantization is not installed: pip install "
                                                      r"onnxruntime \("):
        onnx_module.require("onnxruntime.quantization")
