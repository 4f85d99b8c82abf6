"""One box metric: the box scorer (cal_from_mask.py --boxes), training's video validation and the verifier's tau
selection count the same generated run with utils.eval.boxes and get identical numbers."""
import numpy as np
import pytest
import torch

from tests.test_mixture import Threshold
from tests.test_video_data import N_FRAMES, square_at, write_video
from utils.data import VideoFrameDataset
from utils.eval.boxes import METRIC_KEYS, BoxCounts, frame_outcomes, inside_grown_box
from utils.eval.boxscore import score_box_folder
from utils.eval.selection import selection_score
from utils.infer.device import Predictor
from utils.infer.predict import PredictOptions
from utils.infer.record import write_detections
from utils.infer.runner import run_on_video
from utils.train.validate import evaluate_boxes
from utils.verify.train import collect, split_scores

ABSENT, ELSEWHERE, EDGE = 5, 7, 9   # labelled absent; a box away from the square; one its grown border just holds


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Return (video root, labels.csv): one video of a moving square; its labels hold a hit in most frames, an absent
    frame (a false alarm), a box away from the square (a miss and a false alarm), and one at the grown border."""
    root = tmp_path_factory.mktemp("agree")
    (root / "videos").mkdir()
    write_video(root / "videos" / "IR_BIRD_001.mp4")
    rows = ["video,frame,x,y,w,h"]
    for i in range(N_FRAMES):
        top, left = square_at(i)   # the square spans [left, left + 8) x [top, top + 8); centroid left + 3.5
        box = {ABSENT: ",,,", ELSEWHERE: "50,2,6,6", EDGE: f"{left - 2.5},{top},5,8"}.get(
            i, f"{left - 1},{top - 1},10,10")
        rows.append(f"IR_BIRD_001,{i},{box}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "val.txt").write_text("IR_BIRD_001\n")
    (root / "train.txt").write_text("IR_BIRD_001\n")
    return root


def test_the_three_callers_count_the_same(run, tmp_path):
    device = torch.device("cpu")
    # 1. what inference.py --video writes, scored as cal_from_mask.py --boxes scores it
    report = run_on_video(Predictor(Threshold(), device), run / "videos" / "IR_BIRD_001.mp4", tmp_path,
                          PredictOptions(), progress=False)
    write_detections(tmp_path, report.frames, {"threshold": 0.5})
    scorer = score_box_folder(run / "labels.csv", tmp_path)
    # 2. training's validation on the same frames
    dataset = VideoFrameDataset(run, "val", every=1)
    training = evaluate_boxes(Threshold(), dataset, device)
    # 3. the verifier's val table with no candidate dropped
    candidates = collect(Predictor(Threshold(), device), dataset, progress=False)
    verifier = split_scores(candidates, np.ones(len(candidates.target)), None)

    expected = {"n_frames": N_FRAMES, "n_targets": N_FRAMES - 1, "n_detected": N_FRAMES - 2,
                "n_false_alarms": 2, "n_frames_with_fa": 2, "n_absent_frames_with_fa": 1}
    assert {k: scorer[k] for k in expected} == expected
    assert scorer["pd"] == pytest.approx((N_FRAMES - 2) / (N_FRAMES - 1)) and scorer["absent_frames_with_fa"] == 1.0
    for other in (training, verifier):
        assert {k: other[k] for k in METRIC_KEYS} == {k: scorer[k] for k in METRIC_KEYS}
    assert selection_score({"v": training}) == selection_score({"v": verifier}) == selection_score({"v": scorer})


def test_box_counts_accumulate_merge_and_leave_undefined_rates_undefined():
    a = BoxCounts().update([True, True, False], [True, False, False], [0, 2, 1])
    b = BoxCounts().update(True, True, 0)
    assert a.compute()["pd"] == 0.5 and a.compute()["fa_per_frame"] == 1.0 and a.compute()["absent_frames_with_fa"] == 1
    merged = BoxCounts().merge(a).merge(b).compute()
    assert (merged["pd"], merged["fa_per_frame"], merged["frames_with_fa"]) == (2 / 3, 3 / 4, 2 / 4)
    assert merged == BoxCounts().update([True, True, False, True], [True, False, False, True], [0, 2, 1, 0]).compute()
    empty = BoxCounts().compute()   # nothing counted: every rate is undefined, never 0
    assert all(empty[k] is None for k in ("pd", "fa_per_frame", "frames_with_fa", "absent_frames_with_fa"))
    only_absent = BoxCounts().update(False, True, 0).compute()   # a "detection" in an absent frame is no target
    assert only_absent["pd"] is None and only_absent["n_detected"] == 0 and only_absent["absent_frames_with_fa"] == 0
    assert BoxCounts().all_reduce().compute() == empty   # no process group: unchanged


def test_frame_outcomes_and_the_grown_box_rule():
    box = np.array([[10.0, 20.0, 4.0, 6.0]])        # edge coords [10, 14] x [20, 26]; grown [8, 16] x [18, 28]
    cx = np.array([7.5, 7.4, 15.5, 15.6, 12.0])       # centre coords: inside when 7.5 <= cx <= 15.5
    inside = inside_grown_box(cx, np.full(5, 22.0), np.repeat(box, 5, 0))
    assert inside.tolist() == [True, False, True, False, True]
    assert not inside_grown_box([12.0], [22.0], np.full((1, 4), np.nan)).any()   # an absent target holds nothing
    detected, n_fa = frame_outcomes(np.array([0, 0, 2, 2]), np.array([True, False, False, False]), 3)
    assert detected.tolist() == [True, False, False] and n_fa.tolist() == [1, 0, 2]
