"""Reviewing false alarms (utils/review.py) and counting reviewed objects apart (cal_from_mask.py --reviewed)."""
import csv
import json

import cv2
import numpy as np
import pytest

import cal_from_mask
from tests.test_boxscore import FRAMES, LABELS, one_line_error, write_labels, write_predictions
from utils import review
from utils.data.labels import read_box_labels
from utils.eval.boxscore import false_alarm_rows, match, score_boxes
from utils.eval.reviews import read_review
from utils.infer.record import read_detections


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
    assert {k: report[k] for k in plain if k != "notes"} == {k: plain[k] for k in plain if k != "notes"}
    apart = report["counted_apart"]   # the main numbers above do not move; this entry is added
    assert apart["n_apart"] == 2 and apart["n_false_alarms"] == 2 and apart["fa_per_frame"] == pytest.approx(2 / 8)
    assert apart["absent_frames_with_fa"] == 0.0 and apart["frames_with_fa"] == pytest.approx(2 / 8)
    assert apart["pd"] == plain["pd"] and apart["per_class"]["DRONE"]["n_false_alarms"] == 1
    assert apart["per_class"]["BIRD"]["n_false_alarms"] == 1
    # how complete the review is: BIRD 0's is clutter, DRONE 3's has no row within 3 px, and two rows match nothing
    # (DRONE 3's 4 px away, BIRD 2's on a detected target)
    assert (apart["n_clutter"], apart["n_not_reviewed"], apart["n_review_rows_unmatched"]) == (1, 1, 2)
    assert any("1 of the 4 false alarms have no reviewed row" in n for n in report["notes"])
    assert any("2 row(s) of the review match no false alarm" in n for n in report["notes"])


def test_the_nearest_review_row_decides(case, tmp_path):
    """A false alarm on a clutter row stays a false alarm though an object row lies 2.5 px away."""
    path = write_review(tmp_path / "review.csv", [("IR_DRONE_001", 1, 30.0, 30.0, "clutter"),
                                                  ("IR_DRONE_001", 1, 32.5, 30.0, "object")])
    report = score_boxes(read_box_labels(case[0]), read_detections(case[1]), review=read_review(path))
    assert report["counted_apart"]["n_apart"] == 0 and report["counted_apart"]["n_clutter"] == 1


def test_review_files_from_spreadsheets(case, tmp_path, capsys):
    """A UTF-8 byte-order mark is read; a file in another encoding is one line naming it."""
    labels, pred = case
    path = tmp_path / "bom.csv"
    path.write_bytes("video,frame,x,y,verdict,note\nIR_DRONE_001,1,11,21,Object,é\n".encode("utf-8-sig"))
    assert read_review(path) == {("IR_DRONE_001", 1): [(11.0, 21.0, "object", "é")]}
    path.write_bytes("video,frame,x,y,verdict,note\nIR_DRONE_001,1,11,21,object,é\n".encode("cp1252"))
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path)],
                   "bom.csv", "not UTF-8 CSV", "CSV UTF-8")
    path.write_text("video,frame,x,y,verdict\nIR_DRONE_001,-1,11,21,object\n")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path)],
                   "bom.csv line 2", "0-based frame")
    path.write_text("video,frame,x,y,verdict\nIR_DRONE_001,1,nan,21,object\n")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path)], "finite")


def test_cli_reviewed_and_its_errors(case, tmp_path, capsys):
    labels, pred = case
    path = write_review(tmp_path / "review.csv", [("IR_DRONE_001", 1, 11.0, 21.0, "object")])
    assert cal_from_mask.main(["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path),
                               "--out", str(tmp_path / "scored")]) == 0   # pred stays free of reports: errors below
    saved = json.loads((tmp_path / "scored" / "box_metrics.json").read_text())["counted_apart"]
    assert saved["n_apart"] == 1 and saved["review"] == str(path)
    assert "counted apart: 1 of the 4 false alarms" in capsys.readouterr().out
    bad = write_review(tmp_path / "bad.csv", [("IR_DRONE_001", 1, 11.0, 21.0, "bird")])
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(bad)],
                   "bad.csv line 2", "'bird'", "object, clutter")
    bad.write_text("video,frame,x\nIR_DRONE_001,1,3\n")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(bad)], "y, verdict")
    one_line_error(capsys, ["--boxes", str(labels), "--pred", str(pred), "--reviewed", str(path),
                            "--threshold", "0.3"], "a review applies to the detections", "threshold >= 0.5")
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
    # a tile for frame 25, centred on its spot (x = 35): the t crop shows the spot at its centre, the t-10 crop the
    # spot 10 px to the left (it moves 1 px a frame), and t+10 (frame 35) is past the video's end: a dark grey panel
    first = review.tile({"id": 1, "video": "IR_BIRD_001", "frame": 25, "x": 35.0, "y": 20.0, "peak_prob": 0.9,
                         "absent": 0}, review.read_frames(data / "videos" / "IR_BIRD_001.mp4", {15, 25, 35}), 10)
    crops = [first[review.CAPTION_H:, 160 + review.GAP + k * (128 + review.GAP):][:128, :128] for k in range(3)]
    assert crops[1][64, 64].min() > 200 and crops[1][10, 10].max() < 120    # spot at the centre, background dark
    assert crops[0][64, 64].max() < 120 and crops[0][64, 64 - 20].min() > 200   # 10 px (20 shown) to the left
    assert (crops[2] == 40).all(axis=2).mean() > 0.9                            # no frame 35
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
    # only what is left to review is drawn: 2 of the 4 (ids 2 and 4), one sheet of 1 x 2 tiles
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--unreviewed-only",
                        "--carry", str(out / "false_alarms.csv")]) == 0
    assert cv2.imread(str(out / "sheet_001.png")).shape[1] == 2 * (160 + 3 * 128 + 3 * 4 + 4) + 4
    assert len(list(csv.DictReader(open(out / "false_alarms.csv")))) == 4
    capsys.readouterr()
    assert not (out / ".review.partial").exists()
    # carrying into itself at a threshold that drops reviewed rows would lose them: refused, the file untouched
    before = (out / "false_alarms.csv").read_text()
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--threshold", "0.99",
                        "--carry", str(out / "false_alarms.csv")]) == 2
    assert "2 reviewed row(s)" in capsys.readouterr().err and (out / "false_alarms.csv").read_text() == before
    # the threshold must be one the run's detections can answer
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--threshold", "0.3",
                        "--out", str(tmp_path / "o1")]) == 2
    assert "[0.5, 1]" in capsys.readouterr().err
    # other suffixes, in any case, are found
    (data / "videos" / "IR_BIRD_001.mp4").rename(data / "videos" / "IR_BIRD_001.MP4")
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--out", str(tmp_path / "o3")]) == 0
    capsys.readouterr()
    # a false alarm in a frame past the video's end, and --out a file: one line each
    write_predictions(pred, {**frames, ("IR_BIRD_001", 29): [], ("IR_BIRD_001", 40): [(5.0, 5.0, 0.9)]}, (64, 80))
    write_labels(labels, [("IR_BIRD_001", f, None) for f in range(41)])
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--out", str(tmp_path / "o4")]) == 2
    assert "has no frame 40" in capsys.readouterr().err and not (tmp_path / "o4").exists() or \
        not any((tmp_path / "o4").iterdir())
    (tmp_path / "afile").write_text("x")
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    # misuse: the videos are elsewhere
    assert review.main(["--boxes", str(labels), "--pred", str(pred), "--quiet", "--out", str(tmp_path / "o2"),
                        "--videos", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "IR_BIRD_001" in err and "--videos" in err


def test_shipped_review_is_complete_and_matches_the_docs():
    """docs/review: every false alarm has a verdict and a note, and the counts are those docs/results.md states."""
    from utils import ROOT

    path = ROOT / "docs" / "review" / "ir_drone_video_val_general.csv"
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert len(rows) == 158 and [int(r["id"]) for r in rows] == list(range(1, 159))
    assert all(r["verdict"] in ("object", "clutter") and r["note"] for r in rows)
    objects = [r for r in rows if r["verdict"] == "object"]
    assert len(objects) == 115 and sum(r["video"] == "IR_DRONE_146" for r in objects) == 59
    review_map = read_review(path)   # loads through the scorer's reader
    assert sum(len(v) for v in review_map.values()) == 158
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert "158 false alarms" in results and "115 are objects" in results and "43 are clutter" in results
    birds = [r for r in objects if r["video"].startswith("IR_BIRD")]
    assert f"{len(birds)} birds ({sum(r['absent'] == '1' for r in birds)} in frames labelled absent)" in results
    # the counted-apart row: what is left is the clutter, over the 1,541 scored frames and their 63 absent ones
    clutter = [r for r in rows if r["verdict"] == "clutter"]
    fa, frames = len(clutter) / 1541, len({(r["video"], r["frame"]) for r in clutter}) / 1541
    absent = len({(r["video"], r["frame"]) for r in clutter if r["absent"] == "1"}) / 63
    row = f"| 95.13 % | {fa:.3f} | {100 * frames:.1f} % | {100 * absent:.1f} % |"
    assert row == "| 95.13 % | 0.028 | 2.8 % | 1.6 % |" and row in results


def test_second_review_agrees():
    """The blind second review gives every false alarm the same verdict (docs/video.md says so)."""
    from utils import ROOT

    first, second = (list(csv.DictReader(open(ROOT / "docs" / "review" / name, encoding="utf-8")))
                     for name in ("ir_drone_video_val_general.csv", "ir_drone_video_val_general_second.csv"))
    assert [(r["id"], r["video"], r["frame"], r["verdict"]) for r in first] == \
        [(r["id"], r["video"], r["frame"], r["verdict"]) for r in second]


def test_review_of_what_the_verifier_removed():
    """docs/review ..._noverify.csv: LRRNet alone's 520 false alarms, the 158 kept ones with the first review's verdicts,
    and the counts of what the verifier removed that docs/results.md states."""
    from utils import ROOT

    kept = {(r["video"], r["frame"], r["x"], r["y"]): r["verdict"] for r in
            csv.DictReader(open(ROOT / "docs" / "review" / "ir_drone_video_val_general.csv", encoding="utf-8"))}
    rows = list(csv.DictReader(open(ROOT / "docs" / "review" / "ir_drone_video_val_general_noverify.csv",
                                    encoding="utf-8")))
    assert len(rows) == 520 and all(r["verdict"] in ("object", "clutter") for r in rows)
    carried = [r for r in rows if (r["video"], r["frame"], r["x"], r["y"]) in kept]
    assert len(carried) == 158 and all(kept[(r["video"], r["frame"], r["x"], r["y"])] == r["verdict"] for r in carried)
    removed = [r for r in rows if (r["video"], r["frame"], r["x"], r["y"]) not in kept]
    n_clutter = sum(r["verdict"] == "clutter" for r in removed)
    n_objects = sum(r["verdict"] == "object" for r in rows)
    results = " ".join((ROOT / "docs" / "results.md").read_text(encoding="utf-8").split())   # line breaks do not matter
    assert (len(removed), n_clutter, n_objects) == (362, 356, 121)
    assert f"of the {len(removed)} false alarms it takes away" in results and f"finds {n_clutter} clutter" in results
    assert f"{len(rows) - n_objects} are clutter and {n_objects} objects" in results
    assert f"{0.259:.3f}" == f"{(len(rows) - n_objects) / 1541:.3f}" and "| 95.74 % | 0.259 |" in results


def test_review_of_the_shipped_v2_checkpoint():
    """docs/review ..._v2*.csv: v2's false alarms with and without its verifier, every one with a verdict and a note;
    the verifier only removes detections, so the kept ones are rows of the LRRNet-alone review with the same verdict;
    the counts and counted-apart rows of docs/results.md follow from the files."""
    from utils import ROOT

    def rows_of(name):
        return list(csv.DictReader(open(ROOT / "docs" / "review" / name, encoding="utf-8")))

    pair, alone = rows_of("ir_drone_video_val_general_v2.csv"), rows_of("ir_drone_video_val_general_v2_noverify.csv")
    assert all(r["verdict"] in ("object", "clutter") and r["note"] for r in pair + alone)
    key = lambda r: (r["video"], r["frame"], r["x"], r["y"])   # noqa: E731
    verdict = {key(r): r["verdict"] for r in alone}
    assert all(verdict.get(key(r)) == r["verdict"] for r in pair)
    n_objects = sum(r["verdict"] == "object" for r in alone)
    n_kept_objects = sum(r["verdict"] == "object" for r in pair)
    n_clutter, n_kept_clutter = len(alone) - n_objects, len(pair) - n_kept_objects
    assert (len(alone), n_clutter, n_objects, len(pair), n_kept_objects) == (451, 330, 121, 182, 120)
    results = " ".join((ROOT / "docs" / "results.md").read_text(encoding="utf-8").split())
    assert f"Of the {len(alone)}, {n_clutter} are clutter and {n_objects} objects" in results
    assert f"removes {round(100 * (1 - n_kept_clutter / n_clutter))} % of the clutter and keeps {n_kept_objects} of the {n_objects}" in results
    assert f"{n_kept_objects} objects, {n_kept_clutter} clutter" in results
    # counted apart: what is left is the clutter, over the 1,541 scored frames and their 63 target-absent ones
    for rows, pd in ((pair, "94.38 %"), (alone, "95.40 %")):
        clutter = [r for r in rows if r["verdict"] == "clutter"]
        frames = len({(r["video"], r["frame"]) for r in clutter}) / 1541
        absent = len({(r["video"], r["frame"]) for r in clutter if r["absent"] == "1"}) / 63
        assert f"| {pd} | {len(clutter) / 1541:.3f} | {100 * frames:.1f} % | {100 * absent:.1f} % |" in results
