"""ONNX export: the round trip on a small random network, inference.py's onnxruntime backend, and misuse."""
import json

import cv2
import numpy as np
import pytest
import scipy.io

import inference
from models import load_model
from tests.conftest import random_checkpoint
from utils import export
from utils.cli import EXIT_ERROR
from utils.data.synthetic import make_scene, write_dataset
from utils.files import file_sha256
from utils.infer.onnx import OnnxPredictor

pytestmark = pytest.mark.slow   # whole commands, trained networks or the real clip: make test-fast skips them

pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; install it to test the ONNX export")
SMALL = dict(width_mults=(1, 2), blocks_per_level=1)  # two levels, 5 blocks fewer: a few seconds to export


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Return (checkpoint, its .onnx export, a dataset root): a small random LRRNet and 3 test frames, one odd-sized."""
    tmp = tmp_path_factory.mktemp("export")
    ckpt = random_checkpoint(tmp / "small.pt", seed=3, **SMALL)
    onnx_path = tmp / "small.onnx"
    assert export.main(["--checkpoint", str(ckpt), "--onnx", str(onnx_path), "--check-sizes"]) == 0
    root = write_dataset(tmp / "data", n_trainval=2, n_test=2, size=(64, 64), seed=1)
    frame, mask = make_scene(5, 45, 70)
    cv2.imwrite(str(root / "test" / "images" / "odd.png"), frame)
    cv2.imwrite(str(root / "test" / "masks" / "odd.png"), mask * 255)
    return ckpt, onnx_path, root


def test_export_matches_pytorch_on_dynamic_sizes(small):
    ckpt, onnx_path, _ = small
    net, _ = load_model(ckpt)
    # batch 2, a size that needs padding, a tall one and a tiny one: all through the one exported graph
    rows = export.check_export(net, onnx_path, [(2, 37, 53), (1, 64, 96), (1, 120, 40), (1, 9, 17)])
    for row in rows:
        assert row["max_abs_dT"] < 5e-4 and row["max_abs_dD"] < 5e-4, row  # measured: <= 5e-5 (1 or 2 threads)


def test_export_carries_the_checkpoints_metadata(small):
    ckpt, onnx_path, _ = small
    meta = OnnxPredictor(onnx_path).meta
    assert meta["checkpoint"] == ckpt.name
    assert meta["checkpoint_sha256"] == file_sha256(ckpt)
    assert meta["model_hparams"]["width_mults"] == [1, 2]


def test_export_cli_prints_the_check_and_exits_0(small, tmp_path, capsys):
    ckpt, _, _ = small
    out = tmp_path / "again.onnx"
    assert export.main(["--checkpoint", str(ckpt), "--onnx", str(out), "--check-sizes", "1x33x47"]) == 0
    printed = capsys.readouterr().out
    assert "| 1x33x47 |" in printed and "onnxruntime matches PyTorch" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["again.onnx"]  # no temporary file left


def test_export_beyond_tolerance_exits_1(small, tmp_path, capsys):
    ckpt, _, _ = small
    code = export.main(["--checkpoint", str(ckpt), "--onnx", str(tmp_path / "x.onnx"), "--check-sizes", "1x16x16",
                        "--tolerance", "0"])
    # float32 kernels of two libraries differ in summation order: with zero tolerance the check must fail
    assert code == 1 and "above --tolerance" in capsys.readouterr().err


def test_onnxruntime_backend_writes_the_same_files_and_maps(small, tmp_path):
    ckpt, onnx_path, root = small
    outs = {}
    for backend, path in (("torch", ckpt), ("onnxruntime", onnx_path)):
        outs[backend] = tmp_path / backend
        code = inference.main(["--checkpoint", str(path), "--backend", backend, "--data-root", str(root),
                               "--split", "test", "--out", str(outs[backend]), "--dtype", "fp32", "--quiet"])
        assert code == 0
    manifests = {b: json.loads((o / "manifest.json").read_text()) for b, o in outs.items()}
    assert manifests["torch"]["files"] == manifests["onnxruntime"]["files"]
    stems = sorted(p.stem for p in (outs["torch"] / "mat").iterdir())
    assert "odd" in stems and len(stems) == 3
    for stem in stems:
        a, b = (scipy.io.loadmat(outs[k] / "mat" / f"{stem}.mat") for k in ("torch", "onnxruntime"))
        assert a["T"].shape == b["T"].shape
        # float32 sums in another order (and another thread count): within the export's own 2e-3 on logits
        assert np.abs(a["T"] - b["T"]).max() < 1e-3 and np.abs(a["D"] - b["D"]).max() < 2e-3
    detections = {b: json.loads((o / "detections.json").read_text()) for b, o in outs.items()}
    counts = {b: [len(f["targets"]) for f in d["frames"]] for b, d in detections.items()}
    # random weights put many pixels near p = 0.5, where a 1e-4 difference may split or join a component
    assert len(counts["torch"]) == len(counts["onnxruntime"]) == 3
    assert all(abs(x - y) <= 2 for x, y in zip(counts["torch"], counts["onnxruntime"]))
    assert detections["onnxruntime"]["backend"] == "onnxruntime" and detections["torch"]["backend"] == "torch"
    assert manifests["onnxruntime"]["options"]["backend"] == "onnxruntime"


@pytest.mark.parametrize("case", ["onnx_with_torch", "pt_with_onnxruntime", "missing_onnx", "bad_suffix"])
def test_misuse_is_one_line_naming_the_file(small, tmp_path, capsys, case):
    ckpt, onnx_path, root = small
    if case == "bad_suffix":
        code = export.main(["--checkpoint", str(ckpt), "--onnx", str(tmp_path / "model.pt")])
        named = "model.pt"
    else:
        path, backend = {"onnx_with_torch": (onnx_path, "torch"), "pt_with_onnxruntime": (ckpt, "onnxruntime"),
                         "missing_onnx": (tmp_path / "absent.onnx", "onnxruntime")}[case]
        code = inference.main(["--checkpoint", str(path), "--backend", backend, "--data-root", str(root),
                               "--out", str(tmp_path / "out"), "--quiet"])
        named = path.name
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_ERROR and len(err) == 1 and named in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_onnxruntime_backend_refuses_low_precision(small, capsys):
    _, onnx_path, root = small
    with pytest.raises(SystemExit):
        inference.main(["--checkpoint", str(onnx_path), "--backend", "onnxruntime", "--data-root", str(root),
                        "--dtype", "bf16"])
    assert "--backend onnxruntime runs the export in its own precision" in capsys.readouterr().err
