"""Packs (utils.data.pack, python -m utils.train.pack) and the GPU window command (python -m utils.train.window):
a pack's items equal the dataset's, video splits included; a run reads a pack only with its own data options; a
tiny NUDT-style dataset goes through packing, training on the device path, selection, one test score and the
results row; --time-budget stops cleanly."""
import json

import numpy as np
import pytest
import torch

from tests.test_video_data import N_FRAMES, square_at, write_video
from utils.data import IRSTDDataset, VideoFrameDataset
from utils.data.pack import read_pack
from utils.data.synthetic import write_dataset
from utils.train import config as cfgs
from utils.train import pack, window
from utils.train.setup import packed_sets


def same_items(a, b):
    assert a.names == b.names and len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        for key in ("image", "mask", "ignore", "box"):
            assert (key in x) == (key in y), key
            if key in x:
                assert torch.equal(x[key], y[key]) or (key == "box" and torch.isnan(x[key]).all()
                                                       and torch.isnan(y[key]).all()), (i, key)


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("frames"), n_trainval=10, n_test=4, size=(40, 48), seed=0)


def test_a_pack_holds_the_splits_a_run_reads(tmp_path, frames_root, capsys):
    out = tmp_path / "p.npz"
    assert pack.main(["--config", "nudt_window", "--data-root", frames_root, "--pack", out]) == 0
    assert f"into {out}" in capsys.readouterr().out
    p = read_pack(out)
    for split in ("train", "val", "test"):
        same_items(p.split(0, split), IRSTDDataset(frames_root, split))
    assert pack.main(["--config", "nudt_window", "--data-root", frames_root, "--pack", out]) == 2
    assert "exists" in capsys.readouterr().err
    cfg = cfgs.build("nudt_window", {"data_root": str(frames_root), "pack": str(out), "val_seed": 3})
    with pytest.raises(cfgs.ConfigError, match="--val-seed 0 \\(this run: 3\\)"):
        packed_sets(cfg)


def test_video_sources_are_packed_with_their_boxes(tmp_path, frames_root):
    video = tmp_path / "video"
    (video / "videos").mkdir(parents=True)
    rows = ["video,frame,x,y,w,h"]
    for stem in ("IR_DRONE_001", "IR_BIRD_002"):
        write_video(video / "videos" / f"{stem}.mp4")
        for i in range(N_FRAMES):
            top, left = square_at(i)
            rows.append(f"{stem},{i}," + (",,," if i == 5 else f"{left - 3},{top - 3},14,14"))
    (video / "labels.csv").write_text("\n".join(rows) + "\n")
    (video / "train.txt").write_text("IR_DRONE_001\n")
    (video / "val.txt").write_text("IR_BIRD_002\n")
    out = tmp_path / "mix.npz"
    options = ["--sources", f"{frames_root}:1,{video}:1", "--video-every", "1", "--video-val-every", "2"]
    assert pack.main(["--config", "general_window", *options, "--pack", out, "--no-test"]) == 0
    p = read_pack(out)
    same_items(p.split(1, "train"), VideoFrameDataset(video, "train", every=1))
    same_items(p.split(1, "val"), VideoFrameDataset(video, "val", every=2))
    assert not p.has(0, "test") and p.split(1, "val").box_labelled
    cfg = cfgs.build("general_window", {"sources": f"{frames_root}:1,{video}:1", "video_every": 1,
                                        "video_val_every": 2, "pack": str(out)})
    train, val, test, vals = packed_sets(cfg)
    assert test is None and [name for name, _ in vals] == [str(frames_root), str(video)]
    assert len(train) == len(IRSTDDataset(frames_root, "train")) + N_FRAMES


@pytest.mark.slow
def test_window_trains_a_tiny_nudt_from_its_pack_selects_on_val_and_scores_test_once(tmp_path, frames_root,
                                                                                       monkeypatch, capsys):
    data = tmp_path / "pack.npz"
    assert pack.main(["--config", "nudt_window", "--data-root", frames_root, "--pack", data, "--no-test"]) == 0
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setattr(window, "RUNS_DIR", tmp_path / "runs")
    tiny = ["--data-root", frames_root, "--pack", data, "--crop-size", "32", "--batch-size", "4", "--epochs", "3",
            "--steps-per-epoch", "2", "--val-every", "1", "--warmup-iters", "2", "--device", "cpu",
            "--time-budget", "0"]          # no budget (the recipe's 8 min) on a loaded machine
    assert window.main(["--config", "nudt_window", *tiny]) == 0
    results = tmp_path / "out" / "nudt_window"
    assert f"results in {results}" in capsys.readouterr().out
    summary = json.loads((results / "summary.json").read_text())
    assert summary["best"]["test"] is None and summary["epochs"] == 3
    history = torch.load(results / "best.pt", weights_only=True)["history"]
    scores = [r["val"]["selected_score"] for r in history]
    assert summary["best"]["epoch"] == 1 + int(np.argmax(scores))          # best.pt: the first best val score
    assert "optimizer" not in torch.load(results / "best.pt", weights_only=True)
    assert sorted(p.name for p in results.iterdir()) == ["best.pt", "config.json", "results_row.md", "summary.json",
                                                         "train.log"]       # what comes back: 5 small files
    row = (results / "results_row.md").read_text()
    assert row.count("|") == 12 and "`nudt_window` (`--loader device`)" in row
    assert window.main(["--score-test", results, "--data-root", frames_root]) == 0
    summary = json.loads((results / "summary.json").read_text())
    test = summary["best"]["test"]
    assert summary["n_test"] == 4 and test["n_images"] == 4 and 0 <= test["iou"] <= 1
    assert f"**{100 * test['iou']:.2f}**" in (results / "results_row.md").read_text()
    assert window.main(["--score-test", results, "--data-root", frames_root]) == 2   # once only
    # a budget already spent: one epoch, validated, best.pt selected, stopped cleanly and said so
    monkeypatch.delenv("OUT")
    monkeypatch.setattr(window, "RUNS_DIR", tmp_path / "runs2")
    assert window.main(["--config", "nudt_window", *tiny, "--time-budget", "0.0001"]) == 0
    (run,) = (tmp_path / "runs2").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["stopped_early"] == "time budget of 0.0001 min"
    assert summary["best"]["epoch"] == 1 and (run / "last.pt").is_file()
