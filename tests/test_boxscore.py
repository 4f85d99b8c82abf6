"""Box-label scoring (utils/boxscore.py, cal_from_mask.py --boxes) on hand-made labels, detections and maps."""
import json

import cv2
import numpy as np
import pytest

import cal_from_mask
from utils import ROOT
from utils.data.labels import read_box_labels
from utils.data.video import target_class
from utils.eval.boxes import inside_grown_box
from utils.eval.boxscore import CURVE_THRESHOLDS, BoxScoreError, format_box_table, score_boxes
from utils.infer.record import read_detections

# Edge-coordinate box (10, 20, 4, 3) grown by 2 px: x in [8, 16], y in [18, 25]; a centre-coordinate
# centroid is inside when 7.5 <= cx <= 15.5 and 17.5 <= cy <= 24.5.
DRONE_BOX = (10.0, 20.0, 4.0, 3.0)
BIRD_BOX = (100.25, 50.5, 10.0, 10.0)  # left border of the grown box: cx = 100.25 - 2.5 = 97.75
LABELS = [
    ("IR_DRONE_001", 0, DRONE_BOX), ("IR_DRONE_001", 1, None), ("IR_DRONE_001", 2, DRONE_BOX),
    ("IR_DRONE_001", 3, DRONE_BOX), ("IR_DRONE_001", 4, DRONE_BOX),
    ("IR_BIRD_001", 0, BIRD_BOX), ("IR_BIRD_001", 1, None), ("IR_BIRD_001", 2, BIRD_BOX),
    ("IR_BIRD_001", 3, BIRD_BOX),  # never processed: an unpredicted label
    ("IR_AIRPLANE_001", 0, (1.0, 1.0, 5.0, 5.0)),  # a video not in the predictions: out of scope
]
# (video, frame): [(cx, cy, peak_prob)], centroids in pixel-centre coordinates
FRAMES = {
    ("IR_DRONE_001", 0): [(11.0, 21.0, 0.9), (13.2, 22.0, 0.7)],  # a split target: detected once, no false alarm
    ("IR_DRONE_001", 1): [(11.0, 21.0, 0.8), (30.0, 30.0, 0.55)],  # target absent: both are false alarms
    ("IR_DRONE_001", 2): [(15.5, 17.5, 0.9)],  # exactly on the grown border's corner: detected
    ("IR_DRONE_001", 3): [(15.51, 21.0, 0.9)],  # 0.01 px beyond: a false alarm, target missed
    ("IR_DRONE_001", 4): [],  # missed
    ("IR_BIRD_001", 0): [(97.75, 55.0, 0.6), (5.0, 5.0, 0.55)],  # on the left border: detected; + a false alarm
    ("IR_BIRD_001", 1): [],  # absent, clean
    ("IR_BIRD_001", 2): [(105.0, 55.0, 0.52)],
    ("IR_BIRD_001", 9): [(1.0, 1.0, 0.9)],  # processed but unlabelled
    ("IR_HELICOPTER_009", 0): [],  # a video without labels: unlabelled
}


def write_labels(path, rows):
    lines = ["video,frame,x,y,w,h"]
    for video, frame, box in rows:
        lines.append(f"{video},{frame}," + (",,," if box is None else ",".join(f"{v:g}" for v in box)))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_predictions(folder, frames, size_hw=(256, 320)):
    """Write folder/detections.json (and .csv) in the video inference's format; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, csv_rows = [], ["video,frame,target,x,y,bbox_x,bbox_y,bbox_w,bbox_h,area_px,peak_prob,mean_prob"]
    for (video, frame), targets in frames.items():
        listed = []
        for k, (x, y, peak) in enumerate(targets, 1):
            row = {"target": k, "x": x, "y": y, "bbox_x": int(x), "bbox_y": int(y), "bbox_w": 1, "bbox_h": 1,
                   "area_px": 1, "peak_prob": peak, "mean_prob": peak}
            listed.append(row)
            csv_rows.append(f"{video},{frame}," + ",".join(str(v) for v in row.values()))
        entries.append({"video": video, "frame": frame, "size_hw": list(size_hw), "targets": listed})
    content = {"checkpoint": "x.pt", "threshold": 0.5, "errors": [], "frames": entries}
    (folder / "detections.json").write_text(json.dumps(content))
    (folder / "detections.csv").write_text("\n".join(csv_rows) + "\n")
    return folder


@pytest.fixture()
def case(tmp_path):
    return write_labels(tmp_path / "labels.csv", LABELS), write_predictions(tmp_path / "pred", FRAMES)


def test_coordinate_conversion_and_grown_border():
    x, y, w, h = DRONE_BOX
    boxes = np.tile(DRONE_BOX, (6, 1))
    # grown box in edge coordinates [x - 2, x + w + 2]; a centre centroid cx sits at cx + 0.5 in edge coordinates
    cx = np.array([x + w + 1.5, x + w + 1.51, x - 2.5, x - 2.51, x + w + 2.0, 12.0])
    cy = np.array([y + h + 1.5, 21.0, y - 2.5, 21.0, 21.0, y + h + 1.51])
    assert inside_grown_box(cx, cy, boxes).tolist() == [True, False, True, False, False, False]
    assert not inside_grown_box([11.0], [21.0], np.full((1, 4), np.nan))[0]  # absent target: nothing inside


def test_labels_are_read_with_absent_targets_and_classes(case):
    labels = read_box_labels(case[0])
    assert labels[("IR_DRONE_001", 0)] == DRONE_BOX and labels[("IR_DRONE_001", 1)] is None and len(labels) == 10
    assert target_class("IR_BIRD_001") == "BIRD" and target_class("plain") == "plain"


def test_scores_by_hand(case):
    report = score_boxes(read_box_labels(case[0]), read_detections(case[1]))
    # 8 scored frames: DRONE 0-4 (4 targets, 1 absent), BIRD 0-2 (2 targets, 1 absent)
    assert (report["n_frames"], report["n_targets"], report["n_absent_frames"]) == (8, 6, 2)
    assert report["n_detected"] == 4 and report["pd"] == pytest.approx(4 / 6)
    assert report["n_false_alarms"] == 4 and report["fa_per_frame"] == pytest.approx(0.5)
    assert report["frames_with_fa"] == pytest.approx(3 / 8) and report["absent_frames_with_fa"] == pytest.approx(0.5)
    assert set(report["per_class"]) == {"BIRD", "DRONE"}
    drone, bird = report["per_class"]["DRONE"], report["per_class"]["BIRD"]
    assert (drone["pd"], drone["fa_per_frame"], drone["frames_with_fa"], drone["absent_frames_with_fa"]) == \
        (0.5, pytest.approx(0.6), pytest.approx(0.4), 1.0)
    assert drone["n_false_alarms"] == 3  # 2 in the absent frame, 1 just outside the border; none from the split
    assert (bird["pd"], bird["fa_per_frame"], bird["absent_frames_with_fa"], bird["n_frames"]) == \
        (1.0, pytest.approx(1 / 3), 0.0, 3)
    assert report["unlabelled_frames"] == {"count": 2, "first": ["IR_BIRD_001:9", "IR_HELICOPTER_009:0"]}
    assert report["unpredicted_labels"] == {"count": 1, "first": ["IR_BIRD_001:3"]}
    assert (report["videos_scored"], report["videos_skipped"]) == (2, 1)
    assert any("IR_BIRD_001:3" in note for note in report["notes"])


def test_threshold_applies_to_peak_prob(case):
    report = score_boxes(read_box_labels(case[0]), read_detections(case[1]), threshold=0.6)
    # dropped: DRONE 1's 0.55 false alarm, BIRD 0's 0.55 false alarm, BIRD 2's 0.52 detection
    assert report["n_detected"] == 3 and report["n_false_alarms"] == 2
    assert report["per_class"]["BIRD"]["pd"] == 0.5


def test_curve_from_peaks_is_monotone_and_matches_at_half(case):
    report = score_boxes(read_box_labels(case[0]), read_detections(case[1]))
    curve = report["curve"]
    assert curve["source"] == "peaks" and curve["thresholds"] == list(CURVE_THRESHOLDS) and len(curve["pd"]) == 19
    pd, fa = np.array(curve["pd"]), np.array(curve["fa_per_frame"])
    assert np.all(np.diff(pd) <= 0) and np.all(np.diff(fa) <= 0)
    at = curve["thresholds"].index(0.5)
    assert (pd[at], fa[at]) == (pytest.approx(report["pd"]), pytest.approx(report["fa_per_frame"]))
    assert curve["meaningful"] == [t >= 0.5 for t in CURVE_THRESHOLDS] and "0.5" in curve["note"]
    assert pd[0] == pd[at] and fa[0] == fa[at]  # below 0.5 every detection counts: flat
    # at 0.95 nothing is left: no detections, no false alarms
    assert (pd[-1], fa[-1]) == (0.0, 0.0)
    assert curve["per_class"]["DRONE"]["pd"][at] == 0.5


def test_threshold_below_half_needs_maps(case):
    with pytest.raises(BoxScoreError, match="save-maps"):
        score_boxes(read_box_labels(case[0]), read_detections(case[1]), threshold=0.3)


# ----------------------------------------------------------------------------- maps


def make_maps(tmp_path):
    """Two 32 x 40 frames with 8-bit maps; return (labels path, pred folder)."""
    labels = write_labels(tmp_path / "labels.csv", [("IR_DRONE_002", 0, (10.0, 10.0, 4.0, 4.0)),
                                                    ("IR_DRONE_002", 1, None)])
    f0 = np.zeros((32, 40), np.uint8)
    f0[11, 11:14] = (230, 140, 230)  # one component at t <= 0.5 (140/255 = 0.549), split in two from 0.55 up
    f0[25, 30:32] = 153  # a false alarm at t <= 0.6 (153/255 = 0.6 exactly)
    f1 = np.zeros((32, 40), np.uint8)
    f1[5, 5] = 102  # target absent; a false alarm at t <= 0.4 (102/255 = 0.4 exactly)
    pred = write_predictions(tmp_path / "pred", {("IR_DRONE_002", 0): [(12.0, 11.0, 230 / 255), (30.5, 25.0, 0.6)],
                                                 ("IR_DRONE_002", 1): []}, size_hw=(32, 40))
    (pred / "img").mkdir()
    cv2.imwrite(str(pred / "img" / "IR_DRONE_002_000000.png"), f0)
    cv2.imwrite(str(pred / "img" / "IR_DRONE_002_000001.png"), f1)
    return labels, pred


def test_curve_from_maps(tmp_path):
    labels, pred = make_maps(tmp_path)
    report = score_boxes(read_box_labels(labels), read_detections(pred))
    curve = report["curve"]
    assert curve["source"] == "maps" and all(curve["meaningful"])
    t = np.array(curve["thresholds"])
    pd, fa = np.array(curve["pd"]), np.array(curve["fa_per_frame"])
    assert np.all(pd[t <= 0.9] == 1.0) and pd[-1] == 0.0  # 230/255 = 0.902 < 0.95
    assert np.all(fa[t <= 0.4] == 1.0) and np.all(fa[(t > 0.4) & (t <= 0.6)] == 0.5) and np.all(fa[t > 0.6] == 0)
    at = curve["thresholds"].index(0.5)
    assert (pd[at], fa[at]) == (report["pd"], report["fa_per_frame"]) == (1.0, 0.5)
    assert report["main_source"] == "detections"


def test_threshold_below_half_from_maps(tmp_path):
    labels, pred = make_maps(tmp_path)
    report = score_boxes(read_box_labels(labels), read_detections(pred), threshold=0.4)
    assert report["main_source"] == "maps" and (report["pd"], report["fa_per_frame"]) == (1.0, 1.0)
    assert report["absent_frames_with_fa"] == 1.0


def test_missing_maps_fall_back_to_peaks_or_are_refused(tmp_path):
    labels, pred = make_maps(tmp_path)
    (pred / "img" / "IR_DRONE_002_000001.png").unlink()
    report = score_boxes(read_box_labels(labels), read_detections(pred))
    assert report["curve"]["source"] == "peaks" and any("no map" in n for n in report["notes"])
    with pytest.raises(BoxScoreError, match="IR_DRONE_002:1"):
        score_boxes(read_box_labels(labels), read_detections(pred), curve="maps")


def test_map_of_wrong_size_is_refused(tmp_path):
    labels, pred = make_maps(tmp_path)
    cv2.imwrite(str(pred / "img" / "IR_DRONE_002_000001.png"), np.zeros((16, 20), np.uint8))
    with pytest.raises(BoxScoreError, match="16 x 20"):
        score_boxes(read_box_labels(labels), read_detections(pred))


# ----------------------------------------------------------------------------- command line


def test_pd_by_box_size(tmp_path):
    # longer sides 8, 15.9, 16 (edge: 16-32), 31.9, 32 (edge: >= 32) and 60 px; an absent frame has no size
    boxes = [(10.0, 10.0, 8.0, 4.0), (10.0, 10.0, 3.0, 15.9), (10.0, 10.0, 16.0, 16.0), (10.0, 10.0, 31.9, 2.0),
             (10.0, 10.0, 32.0, 5.0), (10.0, 10.0, 60.0, 40.0), None]
    labels = write_labels(tmp_path / "labels.csv", [("IR_HELICOPTER_001", k, box) for k, box in enumerate(boxes)])
    inside = (13.0, 12.0, 0.9)   # inside every box above
    found = {0: [inside], 2: [inside], 4: [inside], 6: [inside]}   # frame 6: absent, a false alarm
    pred = write_predictions(tmp_path / "pred", {("IR_HELICOPTER_001", k): found.get(k, []) for k in range(7)})
    report = score_boxes(read_box_labels(labels), read_detections(pred))
    assert report["per_size"] == {"< 16 px": {"pd": 0.5, "n_targets": 2, "n_detected": 1},
                                  "16-32 px": {"pd": 0.5, "n_targets": 2, "n_detected": 1},
                                  ">= 32 px": {"pd": 0.5, "n_targets": 2, "n_detected": 1}}
    assert report["pd"] == 0.5 and report["n_false_alarms"] == 1
    assert "16-32 px 50.00 % (1 of 2)" in format_box_table(report)
    bird = write_labels(tmp_path / "bird.csv", [("IR_BIRD_001", 0, (1.0, 1.0, 4.0, 4.0))])   # no large target
    empty = score_boxes(read_box_labels(bird), read_detections(write_predictions(tmp_path / "p2", {
        ("IR_BIRD_001", 0): []})))["per_size"][">= 32 px"]
    assert empty == {"pd": None, "n_targets": 0, "n_detected": 0}


def test_cli_end_to_end(case, tmp_path, capsys):
    out = tmp_path / "report"
    assert cal_from_mask.main(["--boxes", str(case[0]), "--pred", str(case[1]), "--out", str(out),
                               "--workers", "0"]) == 0
    report = json.loads((out / "box_metrics.json").read_text())
    for key in ("pd", "fa_per_frame", "frames_with_fa", "absent_frames_with_fa", "n_frames", "n_targets",
                "n_absent_frames", "per_class", "curve", "unlabelled_frames", "unpredicted_labels", "videos_skipped"):
        assert key in report
    assert report["pd"] == pytest.approx(4 / 6) and set(report["per_class"]["BIRD"]) >= {"pd", "fa_per_frame"}
    png = out / "pd_fa_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(out.glob("*.tmp"))
    text = capsys.readouterr().out
    assert "DRONE" in text and "BIRD" in text and "66.67 %" in text


def test_cli_json_option(case, tmp_path):
    target = tmp_path / "elsewhere" / "m.json"
    assert cal_from_mask.main(["--boxes", str(case[0]), "--pred", str(case[1]), "--json", str(target)]) == 0
    assert json.loads(target.read_text())["n_frames"] == 8 and (case[1] / "pd_fa_curve.png").is_file()


def one_line_error(capsys, argv, *words):
    assert cal_from_mask.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for word in words:
        assert word in err, err


def test_cli_errors_are_one_line(case, tmp_path, capsys):
    labels, pred = case
    one_line_error(capsys, ["--boxes", str(tmp_path / "nope.csv"), "--pred", str(pred)], "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("video,frame,x,y,w,h\nIR_DRONE_001,0,1,2,3,4\nIR_DRONE_001,abc,1,2,3,4\n")
    one_line_error(capsys, ["--boxes", str(bad), "--pred", str(pred)], "bad.csv has 1 bad row(s): line 3", "abc")
    bad.write_text("video,frame,x,y,w,h\nIR_DRONE_001,0,1,2,,4\n")
    one_line_error(capsys, ["--boxes", str(bad), "--pred", str(pred)], "line 2", "four numbers")
    other = write_labels(tmp_path / "other.csv", [("IR_BIRD_777", 0, None)])
    one_line_error(capsys, ["--boxes", str(other), "--pred", str(pred)], "no video", "has a label")
    (pred / "detections.json").unlink()
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred)], "detections.json", "frame list")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(tmp_path / "empty")], "inference.py --video")
    one_line_error(capsys, ["--pred", str(pred), "--data-root", str(tmp_path), "--threshold", "0.3"], "--boxes")


def test_cli_modes_are_exclusive(case, capsys):
    with pytest.raises(SystemExit) as exit_:
        cal_from_mask.main(["--boxes", str(case[0]), "--data-root", "x", "--pred", str(case[1])])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_scorer_imports_no_torch_or_matplotlib():
    import subprocess
    import sys

    code = "import sys, utils.eval.boxscore, cal_from_mask; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.split() == ["False", "False"]
