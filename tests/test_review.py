"""Reviewing false alarms (utils/review.py) and counting reviewed objects apart (cal_from_mask.py --reviewed)."""
import csv
import json

import cv2
import numpy as np
import pytest

import cal_from_mask
from tests.test_boxscore import FRAMES, LABELS, one_line_error, write_labels, write_predictions
from utils import review
from utils.boxscore import false_alarm_rows, match, read_box_labels, read_detections, read_review, score_boxes


@pytest.fixture()
def case(tmp_path):
    return write_labels(tmp_path / "labels.csv", LABELS), write_predictions(tmp_path / "pred", FRAMES)


def write_review(path, rows):
    """Write a review CSV of (video, frame, x, y, verdict) rows; return the path."""
    lines = ["id,video,frame,x,y,peak_prob,absent,verdict,note"]
    lines += [f"{k},{v},{f},{x},{y},0.9,0,{verdict},seen" for k, (v, f, x, y, verdict) in enumerate(rows, 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_false_alarm_rows_by_hand(case):
    rows = false_alarm_rows(match(read_box_labels(case[0]), read_detections(case[1])))
    # the scorer's 4 false alarms: both detections of the absent DRONE frame 1, DRONE 3's one just outside the
    # grown box, BIRD 0's second detection; none of the unlabelled frames
    assert [(r["video"], r["frame"], r["x"], r["y"], r["absent"]) for r in rows] == [
        ("IR_DRONE_001", 1, 11.0, 21.0, 1), ("IR_DRONE_001", 1, 30.0, 30.0, 1), ("IR_DRONE_001", 3, 15.51, 21.0, 0),
        ("IR_BIRD_001", 0, 5.0, 5.0, 0)]
    assert [r["id"] for r in rows] == [1, 2, 3, 4] and all(r["verdict"] == "" for r in rows)
    assert len(false_alarm_rows(match(read_box_labels(case[0]), read_detections(case[1])), 0.6)) == 2


def test_counted_apart_by_hand(case, tmp_path):
    path = write_review(tmp_path / "review.csv", [
        ("IR_DRONE_001", 1, 11.0, 21.0, "object"),
        ("IR_DRONE_001", 1, 31.5, 30.0, "object"),     # 1.5 px from the detection at (30, 30): the same one
        ("IR_DRONE_001", 3, 15.51, 25.0, "object"),    # 4 px away: another place, not counted apart
        ("IR_BIRD_001", 0, 5.0, 5.0, "clutter"),       # clutter stays a false alarm
        ("IR_BIRD_001", 2, 105.0, 55.0, "object"),     # a detected target: not a false alarm, nothing to take
    ])
    labels, detections = read_box_labels(case[0]), read_detections(case[1])
    plain = score_boxes(labels, detections)
    report = score_boxes(labels, detections, review=read_review(path))
    assert {k: report[k] for k in plain if k != "counted_apart"} == plain  # the main numbers do not move
    apart = report["counted_apart"]
    assert apart["n_apart"] == 2 and apart["n_false_alarms"] == 2 and apart["fa_per_frame"] == pytest.approx(2 / 8)
    assert apart["absent_frames_with_fa"] == 0.0 and apart["frames_with_fa"] == pytest.approx(2 / 8)
    assert apart["pd"] == plain["pd"] and apart["per_class"]["DRONE"]["n_false_alarms"] == 1
    assert apart["per_class"]["BIRD"]["n_false_alarms"] == 1


def test_cli_reviewed_and_its_errors(case, tmp_path, capsys):
    labels, pred = case
    path = write_review(tmp_path / "review.csv", [("IR_DRONE_001", 1, 11.0, 21.0, "object")])
    assert cal_from_mask.main(["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path)]) == 0
    saved = json.loads((pred / "box_metrics.json").read_text())["counted_apart"]
    assert saved["n_apart"] == 1 and saved["review"] == str(path)
    assert "counted apart: 1 of the 4 false alarms" in capsys.readouterr().out
    bad = write_review(tmp_path / "bad.csv", [("IR_DRONE_001", 1, 11.0, 21.0, "bird")])
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(bad)],
                   "bad.csv line 2", "'bird'", "object, clutter")
    bad.write_text("video,frame,x\nIR_DRONE_001,1,3\n")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(bad)], "y, verdict")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path),
                            "--threshold", "0.3"], "threshold >= 0.5")
    one_line_error(capsys, ["--pred", str(pred), "--data-root", str(tmp_path), "--reviewed", str(path)], "--boxes")


# ----------------------------------------------------------------------------- the sheets


def write_video(path, n=30, size_hw=(64, 80)):
    """Write an mp4 whose frame k has a bright 3 x 3 spot at x = 10 + k, y = 20 (a moving object)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size_hw[::-1])
    for k in range(n):
        frame = np.full(size_hw, 60, np.uint8)
        frame[19:22, 9 + k:12 + k] = 250
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def test_review_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    write_video(data / "videos" / "IR_BIRD_001.mp4")
    labels = write_labels(data / "labels.csv", [("IR_BIRD_001", f, None if f >= 20 else (40, 40, 4, 4))
                                                for f in range(30)])
    frames = {("IR_BIRD_001", f): [(10.0 + f, 20.0, 0.95)] for f in (0, 10, 20, 29)}  # all outside the boxes
    pred = write_predictions(tmp_path / "pred", frames, (64, 80))
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--per-sheet", "3"]) == 0
    out = pred / "review"
    assert "4 false alarm(s) in 4 of 4 scored frames; wrote 2 sheet(s)" in capsys.readouterr().out
    sheet = cv2.imread(str(out / "sheet_001.png"))
    # one row of 3 tiles: caption 18 + 128 px crops; whole frame 160 px wide (64 x 80 at 128 px high) + 3 crops
    assert sheet.shape == (4 + 18 + 128 + 4, 3 * (160 + 3 * 128 + 3 * 4 + 4) + 4, 3) and not list(out.glob("*.tmp"))
    rows = list(csv.DictReader(open(out / "false_alarms.csv")))
    assert [(r["frame"], r["absent"], r["verdict"]) for r in rows] == [("0", "0", ""), ("10", "0", ""),
                                                                        ("20", "1", ""), ("29", "1", "")]
    # the centre crop of the first tile shows the spot at frame 0; the t-10 crop has no frame (dark grey panel)
    first = review.tile({"id": 1, "video": "IR_BIRD_001", "frame": 10, "x": 20.0, "y": 20.0, "peak_prob": 0.9,
                         "absent": 0}, review.read_frames(data / "videos" / "IR_BIRD_001.mp4", {0, 10, 20}), 10)
    centre = first[review.CAPTION_H:, 160 + review.GAP + 128 + review.GAP:][:, :128]
    assert centre[64, 64].min() > 200 and centre[0, 0].max() < 120   # the spot is at the centre, background dark
    # fill in verdicts; a second run refuses to overwrite them unless carried
    rows[0]["verdict"], rows[2]["verdict"] = "object", "clutter"
    with open(out / "false_alarms.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet"]) == 2
    assert "holds a filled-in review" in capsys.readouterr().err
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet",
                        "--carry", str(out / "false_alarms.csv")]) == 0
    assert "2 verdict(s) carried" in capsys.readouterr().out
    again = list(csv.DictReader(open(out / "false_alarms.csv")))
    assert [r["verdict"] for r in again] == ["object", "", "clutter", ""] and again[0]["note"] == rows[0]["note"]
    assert not (out / "sheet_002.png").exists()    # one sheet of 24 now: the earlier run's second sheet is gone
    # misuse: the videos are elsewhere
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--out", str(tmp_path / "o2"),
                        "--videos", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "IR_BIRD_001" in err and "--videos" in err


def test_shipped_review_is_complete_and_matches_the_docs():
    """docs/review: every false alarm has a verdict and a note, and the counts are those the README and docs state."""
    from tests.conftest import ROOT

    path = ROOT / "docs" / "review" / "ir_drone_video_val_general.csv"
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert len(rows) == 158 and [int(r["id"]) for r in rows] == list(range(1, 159))
    assert all(r["verdict"] in ("object", "clutter") and r["note"] for r in rows)
    objects = [r for r in rows if r["verdict"] == "object"]
    assert len(objects) == 115 and sum(r["video"] == "IR_DRONE_146" for r in objects) == 59
    review_map = read_review(path)   # loads through the scorer's reader
    assert sum(len(v) for v in review_map.values()) == 158
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "158 false alarms" in readme and "115 are objects" in readme and "43 are clutter" in readme
