"""The boxes layout (still frames with box labels, like IRSTD-1K-boxes) on a folder the test writes: detection, the
fixed val carving, the one label reader, the pseudo-mask items, box-level validation, scoring still-frame detections,
and a run, an inference and a score through it."""
import json

import cv2
import numpy as np
import pytest
import torch

import cal_from_mask
import inference
import run_configs
from tests.conftest import DATASETS, need
from tests.test_mixture import Threshold
from utils.data import DataError, StillBoxDataset, detect_layout, index_split, main, read_box_labels, read_still_labels
from utils.data.labels import label_columns
from utils.data.layouts import STILL_VAL_FRACTION
from utils.data.synthetic import write_dataset
from utils.eval.boxes import pairs_inside
from utils.eval.boxscore import BoxScoreError, format_box_table, score_box_folder
from utils.infer.record import detections_meta, write_detections
from utils.train.validate import evaluate_boxes

SIDE, SQUARE = 64, 6  # frames of 64 x 64 px, grey 40, targets are 6 x 6 squares of 200


def write_still_root(root, extra_rows=()):
    """Write 12 frames and labels: s00-s09 two boxed squares each; s10 a boxed square, an unboxed square and a box with
    no square; s11 labelled target-free. Return root."""
    (root / "images").mkdir(parents=True)
    rows = ["frame,x,y,w,h"]
    for k in range(12):
        frame = np.full((SIDE, SIDE), 40, np.uint8)
        name = f"s{k:02d}"
        squares = [(10, 10), (40, 40)] if k < 10 else [(10, 10), (40, 40)] if k == 10 else []
        for top, left in squares:
            frame[top:top + SQUARE, left:left + SQUARE] = 200
        cv2.imwrite(str(root / "images" / f"{name}.png"), frame)
        boxed = squares if k < 10 else [(10, 10)] if k == 10 else []
        rows += [f"{name},{left - 2},{top - 2},10,10" for top, left in boxed]   # loose boxes around the squares
        if k == 10:
            rows.append(f"{name},45,20,8,8")                                      # a target the frame does not show
        if k == 11:
            rows.append(f"{name},,,,")
    rows += list(extra_rows)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def still_root(tmp_path_factory):
    return write_still_root(tmp_path_factory.mktemp("stills"))


def test_layout_detected_and_val_carved_by_frame(still_root, tmp_path, capsys):
    assert detect_layout(still_root) == "boxes"
    val, _ = index_split(still_root, "val")
    train, _ = index_split(still_root, "train")
    trainval, _ = index_split(still_root, "trainval", val_fraction=0.5, val_seed=7)   # the layout's own val: ignored
    names = [s.name for s in trainval]
    assert len(val) == round(STILL_VAL_FRACTION * 12) == 2 and len(train) == 10
    assert {s.name for s in val}.isdisjoint(s.name for s in train) and sorted(s.name for s in val + train) == names
    assert [s.name for s in index_split(still_root, "val", val_fraction=0.5, val_seed=7)[0]] == [s.name for s in val]
    assert all(s.mask is None for s in trainval)
    # the same names give the same val, wherever the folder is
    copy = write_still_root(tmp_path / "copy")
    assert [s.name for s in index_split(copy, "val")[0]] == [s.name for s in val]
    with pytest.raises(DataError, match="has no test split: use --split val"):
        index_split(still_root, "test")
    assert main(["--data-root", str(still_root)]) == 0
    out = capsys.readouterr().out
    assert "layout: boxes" in out and "trainval        12       22" in out and "fraction 0.2, seed 0" in out


def test_still_labels_one_reader_and_bad_rows_in_one_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffframe,x,y,w,h,\na,1,2,3,4\na,5,6,7,8,\n\nb,,,,\n")
    assert label_columns(path) == ("frame", "x", "y", "w", "h")
    assert read_still_labels(path) == {"a": [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)], "b": []}
    with pytest.raises(DataError, match="header is 'frame,x,y,w,h'"):
        read_box_labels(path)                   # video labels are a different header, refused by name
    path.write_text("frame,x,y,w,h\na,1,2,3\n,1,2,3,4\nb,1,2,-3,4\nc,1,2,3,4\nc,1,2,3,4\nd,,,,\nd,1,1,1,1\ne,x,1,1,1\n")
    with pytest.raises(DataError) as error:
        read_still_labels(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "has 6 bad row(s)" in message
    for part in ("line 2: 4 fields, expected 5", "line 3: the frame field is empty", "line 4: box width and height",
                 "line 6: frame c has the box 1,2,3,4 twice", "line 8: frame d has a target-free row",
                 "line 9: box 'x,1,1,1' is not four numbers"):
        assert part in message
    path.write_text("video,frame,x,y,w,h\nv,0,1,1,1,1\n")
    with pytest.raises(DataError, match="are video labels"):
        read_still_labels(path)


def test_unlabelled_frames_left_out_and_absent_frames_named(tmp_path):
    root = write_still_root(tmp_path / "a")
    cv2.imwrite(str(root / "images" / "zz.png"), np.zeros((SIDE, SIDE), np.uint8))
    trainval, warnings = index_split(root, "trainval")
    assert len(trainval) == 12 and "1 frame(s)" in warnings[0] and "zz" in warnings[0]
    root = write_still_root(tmp_path / "b", extra_rows=["gone,1,1,2,2"])
    with pytest.raises(DataError, match=r"name 1 frame\(s\) absent from .*images: gone"):
        index_split(root, "val")


def test_items_carry_pseudo_masks_and_every_box(still_root):
    data = StillBoxDataset(still_root, "trainval")
    item = data[data.names.index("s00")]
    mask, ignore = item["mask"][0].numpy(), item["ignore"][0].numpy()
    assert item["boxes"].shape == (2, 4) and mask.sum() == 2 * SQUARE * SQUARE
    assert mask[10:16, 10:16].all() and mask[40:46, 40:46].all()
    assert ignore.sum() == 2 * (100 - SQUARE * SQUARE) and not (mask * ignore).any()
    empty = data[data.names.index("s11")]
    assert empty["boxes"].shape == (0, 4) and empty["mask"].sum() == 0 and empty["ignore"].sum() == 0


def test_box_validation_counts_every_target_of_a_frame(still_root):
    scores = evaluate_boxes(Threshold(), StillBoxDataset(still_root, "trainval"), torch.device("cpu"))
    assert (scores["n_frames"], scores["n_targets"], scores["n_absent_frames"]) == (12, 22, 1)
    assert (scores["n_detected"], scores["n_false_alarms"], scores["n_frames_with_fa"]) == (21, 1, 1)
    assert scores["pd"] == pytest.approx(21 / 22) and scores["absent_frames_with_fa"] == 0.0


def test_pairs_inside_lets_one_detection_find_two_targets():
    boxes = np.array([[10, 10, 4, 4], [15, 10, 4, 4], [40, 40, 4, 4]], float)   # grown: x in [8, 16] and [13, 21]
    det, tgt = pairs_inside([0, 0, 1], [14.0, 30.0, 14.0], [12.0, 12.0, 12.0], [0, 0, 1], boxes, 2)
    assert sorted(zip(det.tolist(), tgt.tolist())) == [(0, 0), (0, 1)]   # frame 1's box is far from its detection


def target(x, y, peak):
    """Return one detected target as inference.py records it."""
    return {"target": 1, "x": x, "y": y, "bbox_x": int(x), "bbox_y": int(y), "bbox_w": 1, "bbox_h": 1, "area_px": 1,
            "peak_prob": peak, "mean_prob": peak}


def test_still_detections_scored_per_target(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("frame,x,y,w,h\na,10,20,4,3\na,30,30,5,5\nb,10,20,4,3\nc,,,,\nnot_run,1,1,1,1\n")
    pred = tmp_path / "pred"
    pred.mkdir()
    frames = {"a": [target(11.0, 21.0, 0.9), target(50.0, 50.0, 0.6)],   # a's first target found, one false alarm
              "b": [target(15.51, 21.0, 0.9)],                           # 0.01 px past the grown box: missed + alarm
              "c": [target(5.0, 5.0, 0.7)],                              # target-free: an alarm
              "d": [target(1.0, 1.0, 0.9)]}                              # no label: not scored
    write_detections(pred, [({"frame": k}, {"size_hw": [64, 64], "targets": v}) for k, v in frames.items()],
                     detections_meta("ck.pt", "src", backend="torch", device="cpu", dtype="fp32", verifier=None,
                                     split="val"))
    report = score_box_folder(labels, pred)
    assert (report["kind"], report["n_frames"], report["n_targets"], report["n_detected"]) == ("frames", 3, 3, 1)
    assert report["pd"] == pytest.approx(1 / 3) and report["fa_per_frame"] == 1.0
    assert report["absent_frames_with_fa"] == 1.0 and report["frames_with_fa"] == 1.0
    assert report["unlabelled_frames"]["first"] == ["d"] and report["unpredicted_labels"]["first"] == ["not_run"]
    assert report["per_size"]["< 16 px"] == {"pd": pytest.approx(1 / 3), "n_targets": 3, "n_detected": 1}
    higher = score_box_folder(labels, pred, threshold=0.65)
    assert higher["n_false_alarms"] == 2 and higher["curve"]["fa_per_frame"][CURVE_INDEX_065] == pytest.approx(2 / 3)
    assert "3 still frame(s) scored" in format_box_table(report)
    with pytest.raises(BoxScoreError, match="threshold 0.3"):
        score_box_folder(labels, pred, threshold=0.3)
    video_labels = tmp_path / "video.csv"
    video_labels.write_text("video,frame,x,y,w,h\nv,0,1,1,1,1\n")
    with pytest.raises(BoxScoreError, match="lacks video, frame"):
        score_box_folder(video_labels, pred)
    assert cal_from_mask.main(["--boxes", str(labels), "--pred", str(pred), "--quiet"]) == 0
    assert "scored 3 still frames" in capsys.readouterr().out
    assert json.loads((pred / "box_metrics.json").read_text())["n_detected"] == 1


CURVE_INDEX_065 = 12   # t = 0.65 in 0.05, 0.10, ...


@pytest.mark.slow
def test_a_run_inference_and_score_through_a_still_source(still_root, tmp_path, capsys):
    """A --sources run with a still-frame box source validates on its val split; inference on that split with
    --score scores the detections against its labels."""
    write_dataset(tmp_path / "synth", n_trainval=12, n_test=4, size=(64, 64), seed=0)
    out = tmp_path / "run"
    argv = ["--config", "synthetic", "--no-synthetic", "--sources", f"{tmp_path / 'synth'}:1,{still_root}:1", "--crop-size", "32",
            "--batch-size", "2", "--steps-per-epoch", "2", "--epochs", "1", "--val-every", "1", "--hard-negatives",
            "0", "--out", str(out)]
    assert run_configs.main(argv) == 0
    val = json.loads((out / "summary.json").read_text())["best"]["val"]
    still = val["sources"][str(still_root)]
    assert (still["n_frames"], still["n_targets"]) == (2, sum(len(StillBoxDataset(still_root, "val").boxes[i])
                                                              for i in range(2)))
    pred = tmp_path / "pred"
    assert inference.main(["--checkpoint", str(out / "best.pt"), "--data-root", str(still_root), "--split", "val",
                           "--out", str(pred), "--score", "--quiet"]) == 0
    report = json.loads((pred / "box_metrics.json").read_text())
    assert report["kind"] == "frames" and report["n_frames"] == 2 and report["n_targets"] == still["n_targets"]
    # the same rule in training and in the scorer: the counts agree
    assert (report["n_detected"], report["n_false_alarms"]) == (still["n_detected"], still["n_false_alarms"])


@pytest.mark.slow
def test_real_irstd1k_boxes_layout():
    root = need(DATASETS / "IRSTD-1K-boxes")
    val, _ = index_split(root, "val")
    train, _ = index_split(root, "train")
    assert (len(val), len(train)) == (160, 640)
    labels = read_still_labels(root / "labels.csv")
    assert sum(len(labels[s.name]) for s in val) == 246 and sum(len(b) for b in labels.values()) == 1216
