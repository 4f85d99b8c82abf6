"""Several sources in one run (utils.data.mixture, --sources): parsing, weights, pasted targets, mined false alarms,
the ignore-aware loss, box-level validation and a whole tiny run on a folder dataset plus a box-labelled video."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import run_configs
from tests.conftest import random_checkpoint
from tests.test_video_data import N_FRAMES, square_at, write_video
from utils.data import VideoFrameDataset
from utils.data.mixture import MixedTrainSet
from utils.data.synthetic import FAINT_DIAMETER_PX, FAINT_PEAK, MASK_FRACTION, paste_targets, write_dataset
from utils.data.transforms import TrainTransform
from utils.eval.selection import detectability_term, extended_score, selection_score, source_term
from utils.train.config import ConfigError, parse_sources
from utils.train.losses import LRRLoss, false_alarm_loss, soft_iou_loss
from utils.train.mining import false_alarm_points, mine_hard_negatives
from utils.train.state import decode_points, encode_points
from utils.train.validate import evaluate_boxes


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    """Return a 1-video root (train and val the same video): an 8 x 8 square of 200 on grey 40, frame 5 labelled absent."""
    root = tmp_path_factory.mktemp("video")
    (root / "videos").mkdir()
    write_video(root / "videos" / "IR_DRONE_001.mp4")
    rows = ["video,frame,x,y,w,h"]
    for i in range(N_FRAMES):
        top, left = square_at(i)
        rows.append(f"IR_DRONE_001,{i}," + (",,," if i == 5 else f"{left - 3},{top - 3},14,14"))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "train.txt").write_text("IR_DRONE_001\n")
    (root / "val.txt").write_text("IR_DRONE_001\n")
    return root


class Threshold(nn.Module):
    """A stand-in network: D = the frame, T = a steep logit of frame > 0.5 (the square of 200, not the grey 40)."""

    def forward(self, x):
        return x, (x - 0.5) * 50


def test_parse_sources():
    assert parse_sources("SIRSTv1:1,NUDT-SIRST:0.5, IR-Drone-Video:0") == [
        ("SIRSTv1", 1.0), ("NUDT-SIRST", 0.5), ("IR-Drone-Video", 0.0)]
    assert parse_sources("/data/a:b/c") == [("/data/a:b/c", 1.0)]   # a colon in a path, no weight
    for bad, word in (("A:1,,B", "empty entry"), ("A:-1", "weight"), ("A:inf", "weight"), ("A,A:2", "twice"),
                      ("A:0,B", "first source")):
        with pytest.raises(ConfigError, match=word):
            parse_sources(bad)


def test_ignored_pixels_leave_the_softiou_and_sparsity_terms():
    logits = torch.full((1, 1, 8, 8), -10.0)
    logits[..., 2:4, 2:4] = 10.0                       # predicted target: 4 px
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:4, 2:4] = 1.0
    ignore = torch.zeros(1, 1, 8, 8)
    ignore[..., 5:8, 5:8] = 1.0
    stray = logits.clone()
    stray[..., 6, 6] = 10.0                            # a detection inside the ignored region
    keep = 1 - ignore
    assert soft_iou_loss(stray, mask, keep=keep).item() == pytest.approx(soft_iou_loss(logits, mask, keep=keep).item())
    assert soft_iou_loss(stray, mask, keep=keep).item() < 1e-3
    assert soft_iou_loss(stray, mask).item() > 0.15
    loss = LRRLoss("weighted", 1.0, 1.0, 0.0)
    with_ignore = loss(stray, stray, stray, mask, ignore)[1]["l1"].item()
    assert with_ignore == pytest.approx(loss(logits, logits, logits, mask, ignore)[1]["l1"].item())
    assert with_ignore < loss(stray, stray, stray, mask)[1]["l1"].item() - 0.01


def test_false_alarm_term_acts_on_confident_blobs_away_from_targets_and_boxes():
    logits = torch.full((2, 1, 32, 32), -8.0)
    mask = torch.zeros_like(logits)
    mask[0, 0, 10:12, 10:12] = 1.0
    logits[0, 0, 10:12, 10:12] = 6.0                   # a found target
    logits[0, 0, 13, 10] = 6.0                         # its edge, 1 px outside the mask: SoftIoU's business
    clean = false_alarm_loss(logits, mask)
    assert clean.item() == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-8.0))), rel=1e-4)
    blob = logits.clone().requires_grad_(True)
    with torch.no_grad():
        blob[1, 0, 25, 25] = 4.0                       # a confident false alarm in the target-free crop
    loss = false_alarm_loss(blob, mask, k=4)
    loss.backward()
    assert loss.item() == pytest.approx((float(torch.nn.functional.softplus(torch.tensor(4.0)))
                                         + 7 * float(torch.nn.functional.softplus(torch.tensor(-8.0)))) / 8, rel=1e-4)
    assert blob.grad[1, 0, 25, 25].item() > 0.1 and blob.grad[0, 0, 13, 10].item() == 0
    keep = torch.ones_like(mask)
    keep[1, 0, 22:28, 22:28] = 0                       # inside a labelled box (ignored): not a false alarm
    assert false_alarm_loss(blob.detach(), mask, keep, k=4).item() == pytest.approx(clean.item(), rel=1e-4)
    parts = LRRLoss("weighted", w_fa=0.5, fa_topk=4)(blob.detach(), blob.detach(), blob.detach(), mask)
    without = LRRLoss("weighted")(blob.detach(), blob.detach(), blob.detach(), mask)
    assert parts[0].item() == pytest.approx(without[0].item() + 0.5 * loss.item(), rel=1e-5)


def test_pasted_targets_have_exact_masks_and_keep_off_busy_pixels():
    rng = np.random.default_rng(0)
    frame = (rng.normal(100, 5, (96, 128)).clip(0, 255).round() / 255).astype(np.float32)
    busy = np.zeros(frame.shape, bool)
    busy[:, :64] = True                                # the left half holds real targets
    out, mask = paste_targets(frame, busy, np.random.default_rng(1), 3)
    assert mask.any() and not mask[:, :64 + 20].any()  # centres >= 20 px from busy pixels, blobs < 20 px
    changed = np.abs(out - frame) > 0.5 / 255
    assert changed[mask > 0].all()                     # every mask pixel is above half the peak: raised
    assert (out * 255 == np.round(out * 255)).all() and out.min() >= 0 and out.max() <= 1
    assert MASK_FRACTION == 0.5


def test_faint_pasted_targets_are_small_and_faint_whatever_the_clutter():
    rng = np.random.default_rng(0)
    frame = (rng.normal(120, 30, (256, 256)).clip(0, 215).round() / 255).astype(np.float32)   # heavy clutter
    rises, areas = [], []
    for seed in range(20):
        for faint in (0.0, 1.0):
            out, mask = paste_targets(frame, np.zeros(frame.shape, bool), np.random.default_rng(seed), 3, faint)
            labels, n = ndimage.label(mask)
            for k in range(1, n + 1):
                rise = float(((out - frame) * 255)[labels == k].max())
                if faint:
                    rises.append(rise)
                    areas.append(int((labels == k).sum()))
                else:
                    assert rise > 50                   # SCR 3-8 of a 30-grey-level clutter
    assert len(rises) >= 40
    assert 1.5 <= min(rises) and max(rises) <= FAINT_PEAK[1] + 0.5    # 6-40 grey levels at the blob's centre
    assert max(areas) <= np.pi * (FAINT_DIAMETER_PX[1] * 1.25 / 2) ** 2 + 4    # half-maximum area of a 6 px point


def test_false_alarms_are_components_away_from_known_pixels():
    prob = np.zeros((40, 40), np.float32)
    prob[5:8, 5:8] = 0.9                               # on the target
    prob[20:23, 30:33] = 0.9                           # a false alarm
    prob[12, 12] = 0.9                                 # 2 px from the target's pixel: not a false alarm
    known = np.zeros((40, 40), bool)
    known[6, 6] = known[10, 10] = True
    points = false_alarm_points(prob, known)
    assert points.tolist() == [[21.0, 31.0]]


def test_focus_places_the_crop_around_it():
    transform = TrainTransform(crop_size=16, target_prob=0.0, flip=False, rot90=False)
    image = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64)
    for seed in range(20):
        torch.manual_seed(seed)
        crop, _ = transform(image, torch.zeros(1, 64, 64), focus=(50.0, 7.0))
        assert (crop == 50 * 64 + 7).any()


def test_points_survive_a_checkpoint():
    points = {3: np.array([[1.5, 2.0]], np.float32), 7: np.array([[4.0, 5.0], [6.0, 7.0]], np.float32)}
    back = decode_points(encode_points(points))
    assert sorted(back) == [3, 7] and all(np.array_equal(back[k], points[k]) for k in points)
    assert decode_points(encode_points({})) == {} and decode_points(None) == {}


def test_sampling_weights_give_each_source_and_the_mined_frames_their_share(video_root, tmp_path):
    write_dataset(tmp_path / "synth", n_trainval=8, n_test=2, size=(48, 48), seed=0)
    from utils.data import IRSTDDataset

    frames = IRSTDDataset(tmp_path / "synth", "train", val_fraction=0.25)
    video = VideoFrameDataset(video_root, "train", every=1)
    mixed = MixedTrainSet([("synth", frames), ("video", video)], [1.0, 3.0])
    w = mixed.sample_weights()
    assert w[: len(frames)].sum() == pytest.approx(0.25) and w[len(frames):].sum() == pytest.approx(0.75)
    mixed.hard_points = {len(frames) + 1: np.array([[5.0, 5.0]], np.float32)}
    mixed.hard_frac = 0.4
    assert mixed.sample_weights()[len(frames) + 1] == pytest.approx(0.4)
    item = mixed[len(frames) + 5]                       # the absent frame: no mask, no ignore
    assert set(item) >= {"image", "mask", "ignore", "name", "source"} and item["mask"].sum() == 0
    points = mine_hard_negatives(Threshold(), mixed, torch.device("cpu"))
    assert [k for k in points if k >= len(frames)] == [len(frames) + 5]   # the square in the frame labelled absent


def test_box_validation_counts_targets_and_false_alarms(video_root):
    scores = evaluate_boxes(Threshold(), VideoFrameDataset(video_root, "val", every=1), torch.device("cpu"))
    assert (scores["n_frames"], scores["n_targets"], scores["n_absent_frames"]) == (N_FRAMES, N_FRAMES - 1, 1)
    assert scores["pd"] == 1.0 and scores["fa_per_frame"] == pytest.approx(1 / N_FRAMES)
    assert scores["absent_frames_with_fa"] == 1.0 and scores["frames_with_fa"] == pytest.approx(1 / N_FRAMES)
    assert selection_score({"a": {"iou": 0.5}, "b": scores}) == pytest.approx((0.5 + 1 - 1 / N_FRAMES) / 2)


def test_the_extended_score_adds_faint_point_targets_as_a_source():
    def row(shape, contrast, detected, n=10, polarity=1, kind="all", detector="model"):
        return {"detector": detector, "shape": shape, "polarity": polarity, "kind": kind, "contrast": contrast,
                "n": n, "detected": detected}
    rows = [row("point 3x3", 8, 2), row("point 3x3", 12, 4), row("point 5x5", 20, 9, n=20),
            row("point 3x3", 40, 10), row("point 7x7", 12, 0), row("point 3x3", 12, 10, polarity=-1),
            row("point 3x3", 12, 0, kind="cloud"), row("point 3x3", 12, 10, detector="top-hat")]
    report = {"rows": rows, "fa_per_frame": 0.25}
    assert detectability_term(report) == pytest.approx((2 + 4 + 9) / 40 - 0.25)   # only the six cells it names
    assert extended_score({"a": {"iou": 0.5}}, report) == pytest.approx((0.5 + 15 / 40 - 0.25) / 2)
    with pytest.raises(ValueError, match="no model cells"):
        detectability_term({"rows": rows[3:], "fa_per_frame": 0.0})


@pytest.mark.slow
def test_a_mixed_run_end_to_end(video_root, tmp_path):
    write_dataset(tmp_path / "synth", n_trainval=12, n_test=4, size=(64, 64), seed=0)
    out = tmp_path / "run"
    argv = ["--config", "synthetic", "--sources", f"{tmp_path / 'synth'}:1,{video_root}:1", "--video-every", "2",
            "--video-val-every", "3", "--crop-size", "32", "--batch-size", "2", "--steps-per-epoch", "2",
            "--epochs", "2", "--val-every", "1", "--copy-paste", "0.5", "--noise-prob", "0.5", "--hard-negatives", "1",
            "--w-fa", "0.1",
            "--synthetic", "false", "--out", str(out)]
    assert run_configs.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    val = summary["best"]["val"]
    assert set(val["sources"]) == {str(tmp_path / "synth"), str(video_root)}
    assert val["sources"][str(video_root)]["n_frames"] == 4 and "score" in val
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["history"][-1]["hard_frames"] == len(decode_points(ckpt["hard_points"]))
    assert ckpt["epoch"] == 2 and summary["best"]["test"]["n_images"] == 4
    assert all(record["fa"] > 0 for record in ckpt["history"])


def test_select_scores_candidates_on_val_and_chooses_by_the_extended_score(video_root, tmp_path, capsys):
    from utils import select
    write_dataset(tmp_path / "synth", n_trainval=12, n_test=4, size=(64, 64), seed=0)
    ckpts = [random_checkpoint(tmp_path / f"{k}.pt", seed=k, width_mults=(1, 2), blocks_per_level=1) for k in (0, 1)]
    point = {"detector": "model", "shape": "point 3x3", "polarity": 1, "kind": "all", "contrast": 12, "n": 10}
    reports = []
    for k, detected in enumerate((9, 1)):
        reports.append(tmp_path / f"detect{k}.json")
        reports[-1].write_text(json.dumps({"rows": [{**point, "detected": detected}], "fa_per_frame": 0.1}))
    sources = f"{tmp_path / 'synth'}:1,{video_root}:1"
    argv = ["--config", "general_ft", "--sources", sources, "--checkpoints", *map(str, ckpts),
            "--detectability", *map(str, reports), "--json", str(tmp_path / "rows.json")]
    assert select.main(argv) == 0
    out = json.loads((tmp_path / "rows.json").read_text())
    assert [r["detectability_term"] for r in out["rows"]] == [pytest.approx(0.8), pytest.approx(0.0)]
    for row in out["rows"]:
        terms = [source_term(m) for m in row["sources"].values()]
        assert len(terms) == 2 and row["score"] == pytest.approx(np.mean(terms))
        assert row["extended_score"] == pytest.approx(np.mean(terms + [row["detectability_term"]]))
    best = max(out["rows"], key=lambda r: r["extended_score"])
    assert out["chosen"] == best["checkpoint"] and "(chosen)" in capsys.readouterr().out
    assert select.main(argv[:-5] + ["--detectability", str(reports[0])]) == 2     # one report for two checkpoints
    assert "give one per checkpoint" in capsys.readouterr().err
    assert select.main(argv) == 2                                                # --json exists: not replaced
