"""inference.py --video: streaming video inference, detections per frame, overlays, temporal confirmation, errors."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import inference
from tests.conftest import random_checkpoint
from utils.cli import EXIT_PARTIAL
from utils.infer.device import Predictor
from utils.infer.predict import PredictOptions, TemporalConfirmer, parse_confirm
from utils.infer.runner import run_on_video

H, W, N_FRAMES = 48, 64, 12
SQUARE = 4  # px


def square_position(i: int) -> tuple[int, int]:
    """Return (row, col) of the top-left corner of the bright square in frame i (moves 3 px right a frame)."""
    return 20, 5 + 3 * i


def write_video(path, n=N_FRAMES, flicker_at=None):
    """Write a grey mp4 (3-channel, as the real data): dark noise-free background, a moving bright square; at frame
    `flicker_at` a second bright square appears for that frame only."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (W, H))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((H, W), 40, np.uint8)
        r, c = square_position(i)
        frame[r:r + SQUARE, c:c + SQUARE] = 230
        if i == flicker_at:
            frame[5:5 + SQUARE, 50:50 + SQUARE] = 230
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


class Bright(nn.Module):
    """A stand-in network: T = 20 (x - 0.5), so bright pixels (> 0.5) are detections; D = x."""

    def forward(self, x):
        return x, 20 * (x - 0.5)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "clip_a.mp4")
    write_video(folder / "clip_b.mp4", n=7, flicker_at=3)
    return folder


def test_every_frame_detected_at_the_square(videos, tmp_path):
    predictor = Predictor(Bright(), torch.device("cpu"))
    report = run_on_video(predictor, videos / "clip_a.mp4", tmp_path, PredictOptions(batch_size=3), progress=False)
    assert report.error is None
    assert [keys["frame"] for keys, _ in report.frames] == list(range(N_FRAMES))
    for keys, entry in report.frames:
        assert entry["size_hw"] == [H, W] and len(entry["targets"]) == 1
        r, c = square_position(keys["frame"])
        target = entry["targets"][0]
        assert (target["x"], target["y"]) == pytest.approx((c + 1.5, r + 1.5), abs=0.6)  # codec blur: sub-pixel
    every3 = run_on_video(predictor, videos / "clip_a.mp4", tmp_path, PredictOptions(), every=3, progress=False)
    assert [keys["frame"] for keys, _ in every3.frames] == [0, 3, 6, 9]


def test_confirmation_removes_a_one_frame_flicker(videos, tmp_path):
    predictor = Predictor(Bright(), torch.device("cpu"))
    raw = run_on_video(predictor, videos / "clip_b.mp4", tmp_path, progress=False)
    assert [len(e["targets"]) for _, e in raw.frames] == [1, 1, 1, 2, 1, 1, 1]
    confirmed = run_on_video(predictor, videos / "clip_b.mp4", tmp_path, confirm=TemporalConfirmer(2, 3, radius=5),
                             progress=False)
    # the moving square (3 px a frame, within 5 px of its last position) is confirmed from the second frame;
    # the flicker at frame 3 has no support in frames 1-2
    assert [len(e["targets"]) for _, e in confirmed.frames] == [0, 1, 1, 1, 1, 1, 1]
    assert [t["x"] for t in confirmed.frames[3][1]["targets"]] == [t["x"] for t in raw.frames[3][1]["targets"]
                                                                   if t["x"] < 40]


def test_temporal_confirmer_counts_the_window():
    confirm = TemporalConfirmer(k=2, n=3, radius=2.0)
    det = lambda x: {"target": 1, "x": x, "y": 0.0}  # noqa: E731
    assert confirm([det(0.0)]) == []            # support 1
    assert confirm([]) == []
    assert len(confirm([det(1.0)])) == 1        # frames 0 and 2 within 2 px
    assert confirm([det(10.0)]) == []           # nothing near in frames 1-2
    assert parse_confirm("3/5") == (3, 5)
    for bad in ("5/3", "0/2", "three/5", "3"):
        with pytest.raises(ValueError):
            parse_confirm(bad)


def test_cli_on_a_folder_with_a_broken_video(videos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("clip_a.mp4", "clip_b.mp4"):
        (folder / name).write_bytes((videos / name).read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    ckpt = random_checkpoint(tmp_path / "random.pt")
    out = tmp_path / "out"
    code = inference.main(["--checkpoint", str(ckpt), "--video", str(folder), "--out", str(out), "--overlay",
                           "--quiet", "--every", "2"])
    err = capsys.readouterr()
    assert code == EXIT_PARTIAL and "broken.mp4" in err.err and "frames/s" in err.out
    report = json.loads((out / "detections.json").read_text())
    assert [e["video"] for e in report["errors"]] == ["broken"]
    listed = [(f["video"], f["frame"]) for f in report["frames"]]
    assert listed == [("clip_a", i) for i in range(0, N_FRAMES, 2)] + [("clip_b", i) for i in range(0, 7, 2)]
    with open(out / "detections.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[:3] == ["video", "frame", "target"]
        rows = list(reader)
    assert len(rows) == sum(len(f["targets"]) for f in report["frames"])
    for stem, n in (("clip_a", 6), ("clip_b", 4)):  # annotated videos, frames enlarged 2x
        capture = cv2.VideoCapture(str(out / f"{stem}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == n
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (2 * W, 2 * H)
        capture.release()
    assert not list(out.glob("*.tmp*"))


def test_cli_refuses_clashing_names_and_an_overlay_over_its_input(videos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip_a.mp4").write_bytes((videos / "clip_a.mp4").read_bytes())
    (folder / "clip_a.avi").write_bytes((videos / "clip_a.mp4").read_bytes())
    ckpt = random_checkpoint(tmp_path / "random.pt")
    assert inference.main(["--checkpoint", str(ckpt), "--video", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "share a name" in capsys.readouterr().err
    (folder / "clip_a.avi").unlink()
    assert inference.main(["--checkpoint", str(ckpt), "--video", str(folder), "--out", str(folder), "--overlay"]) == 2
    assert "would overwrite the input video" in capsys.readouterr().err
    assert (folder / "clip_a.mp4").read_bytes() == (videos / "clip_a.mp4").read_bytes()


def test_unwritable_out_is_one_line(videos, tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "random.pt")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code = inference.main(["--checkpoint", str(ckpt), "--video", str(videos / "clip_b.mp4"), "--out",
                           str(blocker / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write to") and "Traceback" not in err


def test_cli_refuses_a_missing_video_and_video_only_options(tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "random.pt")
    assert inference.main(["--checkpoint", str(ckpt), "--video", str(tmp_path / "absent.mp4")]) == 2
    assert "absent.mp4 does not exist" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((16, 16), np.uint8))
    assert inference.main(["--checkpoint", str(ckpt), "--images", str(tmp_path), "--every", "2"]) == 2
    assert "apply to videos only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inference.main(["--checkpoint", str(ckpt), "--video", str(tmp_path), "--confirm", "4/3"])


def test_one_run_per_folder_manifest_and_box_scorer_refuses_mixed_runs(videos, tmp_path, capsys):
    import shutil

    import cal_from_mask

    ckpt = random_checkpoint(tmp_path / "random.pt")
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--video", str(videos / "clip_b.mp4"), "--out", str(out), "--quiet",
            "--save-maps", "--overlay"]
    assert inference.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"] == ["clip_b"] and "clip_b.mp4" in manifest["files"]
    assert "img/clip_b_000000.png" in manifest["files"] and len(manifest["checkpoint"]["sha256"]) == 64
    labels = tmp_path / "labels.csv"
    labels.write_text("video,frame,x,y,w,h\n" + "".join(f"clip_b,{i},{square_position(i)[1]},{square_position(i)[0]},"
                                                        f"{SQUARE},{SQUARE}\n" for i in range(7)))
    capsys.readouterr()
    assert inference.main(args) == 2  # a second run into the same folder: refused, nothing touched
    assert "pass --overwrite to replace it, or another --out" in capsys.readouterr().err
    assert inference.main(args + ["--overwrite"]) == 0
    assert cal_from_mask.main(["--pred", str(out), "--boxes", str(labels), "--quiet"]) == 0
    shutil.copy(out / "img" / "clip_b_000000.png", out / "img" / "clip_z_000000.png")  # another run's map
    assert cal_from_mask.main(["--pred", str(out), "--boxes", str(labels), "--quiet", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "mixes runs" in err and "img/clip_z_000000.png" in err and "Traceback" not in err
    (out / "img" / "clip_z_000000.png").unlink()
    (out / "detections.json").write_text((out / "detections.json").read_text().replace('"every": 1', '"every": 2'))
    assert cal_from_mask.main(["--pred", str(out), "--boxes", str(labels), "--quiet", "--overwrite"]) == 2
    assert "detections.json is not the one" in capsys.readouterr().err
