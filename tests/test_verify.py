"""The second stage (utils.verify): candidate inputs, suppression, training, tau selection, the command, inference."""
import json

import numpy as np
import pytest
import torch

import inference
from models import get_model
from models.verifier import CandidateVerifier, VerifierConfig
from tests.conftest import random_checkpoint
from tests.test_export import SMALL
from tests.test_mixture import Threshold, video_root  # noqa: F401 (a fixture)
from tests.test_video_data import N_FRAMES
from utils.data.synthetic import write_dataset
from utils.eval.metrics import find_components
from utils.infer.device import Predictor
from utils.infer.predict import PredictOptions, detect_targets, predict_frame, predict_maps
from utils.verify import train as verify
from utils.verify.apply import Verification, candidate_inputs, suppress
from utils.verify.train import Candidates, choose_tau, split_scores


def two_blobs() -> tuple[np.ndarray, np.ndarray]:
    """Return (frame, prob) 40 x 50: a 3 x 3 blob (p 0.9, frame 0.8) at rows 10-12, cols 20-22; a 1 x 2 one at the
    top-right corner."""
    frame = np.full((40, 50), 0.2, np.float32)
    prob = np.zeros((40, 50), np.float32)
    prob[10:13, 20:23], frame[10:13, 20:23] = 0.9, 0.8
    prob[11, 21] = 0.95
    prob[0, 48:50], frame[0, 48:50] = 0.7, 0.6
    return frame, prob


def rejecting(bias: float) -> CandidateVerifier:
    """Return a small verifier whose score is sigmoid(bias) for every candidate (last layer zero, its bias set)."""
    net = CandidateVerifier(VerifierConfig(patch=16, width=2))
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.fill_(bias)
    return net.eval()


def test_candidate_inputs_centre_each_component_with_its_pixels_and_numbers():
    frame, prob = two_blobs()
    comps, patches, features = candidate_inputs(frame, prob, 0.5, patch=16)
    assert comps.n == 2 and patches.shape == (2, 3, 16, 16) and features.shape == (2, 5)
    # raster order: the corner blob (row 0) first; centre of the window = the rounded centroid
    np.testing.assert_allclose(features[0], [2, 0.7, 0.7, 2, 1], rtol=1e-6)
    np.testing.assert_allclose(features[1], [9, 0.95, (8 * 0.9 + 0.95) / 9, 3, 3], rtol=1e-6)
    assert patches[1, 2].sum() == 9 and patches[1, 2, 7:10, 7:10].all()        # its own 3 x 3 pixels, centred
    np.testing.assert_array_equal(patches[1, 0, 7:10, 7:10], frame[10:13, 20:23])
    np.testing.assert_array_equal(patches[1, 1, 7:10, 7:10], prob[10:13, 20:23])
    assert patches[0, 2].sum() == 2 and patches[0, 1, :8].sum() == 0            # beyond the top border: no pixels
    np.testing.assert_array_equal(patches[0, 0], np.pad(frame, 8, mode="reflect")[0:16, 48:64])  # centroid (0, 48.5)


def test_suppress_puts_rejected_components_below_the_threshold_and_leaves_the_rest():
    frame, prob = two_blobs()
    comps = find_components(prob > 0.5)
    out = suppress(prob, comps, np.array([0.9, 0.2]), tau=0.4, threshold=0.5)
    np.testing.assert_allclose(out[10:13, 20:23], prob[10:13, 20:23] * (0.2 / 0.4) * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out[0], prob[0])  # accepted
    assert (out[10:13, 20:23] < 0.5).all()
    assert [d["area_px"] for d in detect_targets(out, 0.5)] == [2]
    assert suppress(prob, comps, np.array([0.5, 0.5]), tau=0.5, threshold=0.5) is prob  # nothing rejected
    ones = np.ones((4, 4), np.float32)   # p = 1 and s just under tau: (s / tau) * t rounds to t in float32
    just_under = np.array([0.15 * (1 - 1e-9)])
    assert suppress(ones, find_components(ones > 0.5), just_under, tau=0.15, threshold=0.5).max() < 0.5
    fortran = np.asfortranarray(prob)   # as scipy.io.loadmat returns a .mat map: reshape(-1) of a copy is no view
    np.testing.assert_array_equal(suppress(fortran, comps, np.array([0.9, 0.2]), tau=0.4, threshold=0.5), out)


def test_predict_maps_applies_an_attached_verification():
    frame = np.full((24, 32), 0.2, np.float32)
    frame[5:9, 5:9] = 0.9
    predictor = Predictor(Threshold(), torch.device("cpu"))
    alone = predict_maps(predictor, [frame])[0][0]
    assert len(detect_targets(alone)) == 1
    predictor.verification = Verification(rejecting(-20.0), tau=0.5)
    assert detect_targets(predict_maps(predictor, [frame])[0][0]) == []
    tiled = PredictOptions(tile_above=0, tile=16, overlap=8)  # tiled frames are verified too
    assert detect_targets(predict_maps(predictor, [frame], tiled)[0][0]) == []
    predictor.verification = Verification(rejecting(20.0), tau=0.5)
    np.testing.assert_array_equal(predict_maps(predictor, [frame])[0][0], alone)
    predictor.verification = None   # predict_frame applies one for its frame and leaves the predictor as it was
    assert predict_frame(predictor, frame, verification=Verification(rejecting(-20.0), 0.5)).detections == []
    assert predictor.verification is None and len(predict_frame(predictor, frame).detections) == 1


def box_candidates() -> Candidates:
    """Return 3 video frames (frame 2 target-free): frame 0's target and a clutter blob, frame 1's target, frame 2's
    blob."""
    n = 4
    return Candidates(patches=np.zeros((n, 3, 16, 16), np.float16), features=np.ones((n, 5), np.float32),
                      target=np.array([True, False, True, False]), frame=np.array([0, 0, 1, 2]),
                      overlap=np.zeros(n, np.int64), box=np.array([0, -1, 0, -1]), present=np.array([1, 1, 0]),
                      mask_px=np.zeros(3, np.int64), kind=np.array("box"))


def test_split_scores_count_as_the_box_scorer_and_pool_iou_exactly():
    data, scores = box_candidates(), np.array([0.9, 0.3, 0.2, 0.6])
    alone = split_scores(data, scores, None)
    assert (alone["pd"], alone["fa_per_frame"], alone["absent_frames_with_fa"], alone["recall"]) == (1.0, 2 / 3, 1.0, 1.0)
    kept = split_scores(data, scores, 0.5)      # drops frame 0's clutter and frame 1's target
    assert (kept["pd"], kept["fa_per_frame"], kept["recall"], kept["kept_clutter"]) == (0.5, 1 / 3, 0.5, 1)
    masks = Candidates(patches=np.zeros((2, 3, 16, 16), np.float16), features=np.array([[10, 1, 1, 1, 1],
                                                                                      [5, 1, 1, 1, 1]], np.float32),
                       target=np.array([True, False]), frame=np.array([0, 0]), overlap=np.array([8, 0]),
                       box=np.array([-1, -1]), present=np.array([1]), mask_px=np.array([9]), kind=np.array("mask"))
    assert split_scores(masks, np.array([0.9, 0.1]), None)["iou"] == pytest.approx(8 / (9 + 15 - 8))
    assert split_scores(masks, np.array([0.9, 0.1]), 0.5)["iou"] == pytest.approx(8 / (9 + 10 - 8))


def test_still_frames_with_several_boxes_count_each_target():
    boxes = np.array([[10, 10, 4, 4], [40, 40, 6, 6], [11, 11, 4, 4]], np.float64)   # the third overlaps the first
    centroids = np.array([[12.0, 12.0], [42.0, 43.0], [30.0, 30.0], [17.0, 13.0]])    # (row, col)
    assert verify.holding_box(centroids, boxes).tolist() == [0, 1, -1, -1]          # 17 > 10 + 4 + 2 grown: outside
    assert verify.holding_box(centroids, np.zeros((0, 4))).tolist() == [-1] * 4
    assert verify.label_boxes({"box": torch.tensor([np.nan] * 4)}).shape == (0, 4)
    # frame 0: two targets, both found by three candidates (two on the first); frame 1: one target, missed, one clutter
    n = 4
    data = Candidates(patches=np.zeros((n, 3, 16, 16), np.float16), features=np.ones((n, 5), np.float32),
                      target=np.array([True, True, True, False]), frame=np.array([0, 0, 0, 1]),
                      overlap=np.zeros(n, np.int64), box=np.array([0, 0, 1, -1]), present=np.array([2, 1]),
                      mask_px=np.zeros(2, np.int64), kind=np.array("box"))
    alone = split_scores(data, np.array([0.9, 0.9, 0.9, 0.9]), None)
    assert (alone["pd"], alone["fa_per_frame"]) == (pytest.approx(2 / 3), 0.5)
    kept = split_scores(data, np.array([0.9, 0.1, 0.2, 0.9]), 0.5)   # box 0 kept by one candidate, box 1 dropped
    assert (kept["pd"], kept["fa_per_frame"], kept["recall"]) == (pytest.approx(1 / 3), 0.5, pytest.approx(1 / 3))


def test_choose_tau_takes_the_best_score_that_keeps_pd_and_iou():
    data = box_candidates()
    tau, rows = choose_tau({"video": (data, np.array([0.9, 0.3, 0.7, 0.6]))}, 0.01, taus=(0.2, 0.5, 0.65, 0.8))
    assert tau == 0.65      # drops both clutter blobs, keeps both targets; 0.8 would drop frame 1's target
    by_tau = {r["tau"]: r for r in rows}
    assert by_tau[None]["score"] == pytest.approx(1 - 2 / 3) and by_tau[0.65]["score"] == pytest.approx(1.0)
    assert not by_tau[0.8]["allowed"] and by_tau[0.5]["score"] == pytest.approx(1 - 1 / 3)
    assert choose_tau({"video": (data, np.array([0.1, 0.9, 0.1, 0.9]))}, 0.0, taus=(0.5,))[0] is None
    assert "(selected)" in verify.format_val_table(rows, tau)


def test_training_separates_bright_compact_blobs_from_edges():
    rng = np.random.default_rng(0)
    n, p = 96, 16
    patches = rng.normal(0.3, 0.02, (n, 3, p, p)).astype(np.float32)
    target = np.arange(n) % 2 == 0
    patches[target, 0, 6:10, 6:10] += 0.5          # targets: a bright spot on flat background
    patches[~target, 0, :, 8:] += 0.5               # clutter: an edge through the centre
    patches[:, 1:] = 0
    patches[:, 1:, 6:10, 6:10] = 1
    data = Candidates(patches=patches.astype(np.float16), features=np.tile([16, 0.9, 0.8, 4, 4], (n, 1)).astype(
        np.float32), target=target, frame=np.arange(n), overlap=np.zeros(n, np.int64), box=np.full(n, -1),
        present=np.zeros(0, np.int64),
        mask_px=np.zeros(0, np.int64), kind=np.array("mixed"))
    net, history = verify.train_verifier(data, VerifierConfig(patch=16, width=4), epochs=15, batch=32, lr=1e-2,
                                         progress=False)
    assert history[-1] < history[0] / 3
    fresh = patches.copy()
    fresh[:, 0] += rng.normal(0, 0.02, fresh[:, 0].shape)   # new noise: not the training patches
    scores = verify.score_patches(net, fresh, data.features, torch.device("cpu"))
    assert (scores[target] > 0.5).mean() >= 0.95 and (scores[~target] < 0.5).mean() >= 0.95
    with pytest.raises(verify.VerifyError, match="both are needed"):
        verify.train_verifier(Candidates(**{**data.__dict__, "target": np.ones(n, bool)}), epochs=1, progress=False)


def test_the_command_writes_a_checkpoint_that_inference_applies(video_root, tmp_path, monkeypatch, capsys):  # noqa: F811
    write_dataset(tmp_path / "synth", n_trainval=10, n_test=3, size=(48, 48), seed=0)
    ckpt = random_checkpoint(tmp_path / "in.pt", **SMALL)
    sources = f"{tmp_path / 'synth'},{video_root}"

    def fake_load_model(path):   # the thresholding stand-in: candidates are the bright square and synthetic targets
        return Threshold(), {"config": {"sources": sources, "val_fraction": 0.3, "val_seed": 0}}

    monkeypatch.setattr(verify, "load_model", fake_load_model)
    out, run_dir = tmp_path / "out.pt", tmp_path / "run"
    argv = ["--checkpoint", str(ckpt), "--out", str(out), "--run-dir", str(run_dir), "--video-every", "1", "0",
            "--video-val-every", "1", "0", "--epochs", "2", "--width", "2", "--max-drop", "0.99"]
    assert verify.main(argv) == 0
    argv.append("--overwrite")         # the runs below write out.pt again
    printed = capsys.readouterr().out
    assert "(selected)" in printed and "test (3 frames) without / with" in printed
    entry = torch.load(out, weights_only=True)["verifier"]
    assert entry["tau"] in verify.TAUS and entry["hparams"] == {"patch": 48, "width": 2}
    assert set(entry["test"]) == {"without", "with", "n_test"} and len(entry["val"]) == len(verify.TAUS) + 1
    video = Candidates.load(run_dir / "candidates" / f"{video_root.name}_val.npz")
    assert len(video.present) == N_FRAMES and video.present.sum() == N_FRAMES - 1   # frame 5 labelled absent
    assert video.target.sum() == N_FRAMES - 1 and (~video.target).sum() == 1      # its square: clutter
    assert json.loads((run_dir / "report.json").read_text())["tau"] == entry["tau"]
    collect = verify.collect
    monkeypatch.setattr(verify, "collect", lambda *a, **k: pytest.fail("collected again instead of reusing"))
    assert verify.main(argv) == 0      # again: the candidates come from the caches
    monkeypatch.setattr(verify, "collect", collect)
    sparser = [*argv[:argv.index("--video-every")], "--video-every", "2", "0", *argv[argv.index("--video-every") + 3:]]
    assert verify.main(sparser) == 0   # another sampling of the training videos: collected anew, not reused
    assert len(Candidates.load(run_dir / "candidates" / f"{video_root.name}_train.npz").present) == N_FRAMES // 2
    # inference.py applies the stored verifier (LRRNet here is the random network of in.pt) and records it
    images = tmp_path / "synth" / "test" / "images"
    for flag, expect in (("--verify", entry["tau"]), ("--no-verify", None)):
        result = tmp_path / f"infer{flag}"
        assert inference.main(["--checkpoint", str(out), "--images", str(images), "--out", str(result), flag,
                               "--quiet"]) == 0
        manifest = json.loads((result / "manifest.json").read_text())
        assert (manifest["options"]["verifier"] or {}).get("tau") == expect


def test_misuse_ends_in_one_line(tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "single.pt", **SMALL)
    torch.save(get_model("LRRNet").state_dict(), tmp_path / "raw.pth")   # a bare state_dict, as the authors publish
    assert verify.main(["--checkpoint", str(tmp_path / "raw.pth"), "--out", str(tmp_path / "o.pt"),
                        "--sources", "SIRSTv1"]) == 2
    assert "raw state_dict" in capsys.readouterr().err
    assert verify.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o.pt")]) == 2
    assert "pass --sources" in capsys.readouterr().err
    assert verify.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o.pt"), "--sources", "nowhere"]) == 2
    assert "--sources 'nowhere'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        verify.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o.onnx")])
    assert "should end in .pt" in capsys.readouterr().err
    broken = torch.load(ckpt, weights_only=True)
    broken["verifier"] = {"state_dict": {}, "hparams": {"patch": 48, "width": 16}, "tau": 0.5}
    torch.save(broken, tmp_path / "broken.pt")
    assert inference.main(["--checkpoint", str(tmp_path / "broken.pt"), "--images", str(tmp_path),
                           "--out", str(tmp_path / "r")]) == 2
    assert "--no-verify" in capsys.readouterr().err


def test_balance_weights_give_each_class_half_and_each_source_the_same_share_of_targets():
    target, groups = np.array([True, True, True, False]), np.array([0, 0, 1, 0])
    np.testing.assert_allclose(verify.balance_weights(target, groups), [0.5, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(verify.balance_weights(target), [2 / 3, 2 / 3, 2 / 3, 2.0])
    patch = torch.arange(9.0).reshape(1, 1, 3, 3)    # no symmetry: the 8 views all differ
    views = [verify.dihedral(patch, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], patch) and torch.equal(views[4], patch.flip(3))
