"""Inputs that used to give silent nonsense or a traceback, run in-process through each command's main():
exit code 2, one line naming the file and the fix, nothing written; and the command-line conventions
(utils/cli.py) every entry point shares."""
import hashlib
import importlib
import json

import cv2
import numpy as np
import pytest
import torch

import cal_from_mask
import inference
import run_configs
from models import CheckpointError, get_model, load_model
from tests.conftest import random_checkpoint
from tests.test_boxscore import write_labels, write_predictions
from utils import strip as strip_command
from utils.data import DataError, iter_video_frames
from utils.data.synthetic import write_dataset
from utils.infer.predict import predict_frame
from utils.infer.writers import to_uint8
from utils.train import config as cfgs
from utils.train.setup import build_network

TINY = dict(base_width=4, width_mults=(1, 2), blocks_per_level=1, groups=2)  # a small LRRNet: fast on a CPU


def argv(*args) -> list[str]:
    """Return the arguments as a command line (paths as text)."""
    return [str(a) for a in args]


def checksums(folder):
    """Return {relative path: sha256} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str, *words) -> None:
    """Assert stderr is one line 'error: ...' holding every word."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert str(word) in lines[0], err


# ----------------------------------------------------------------------------- checkpoints


def nan_checkpoint(path, tensor="out_conv.bias"):
    """Write a tiny checkpoint whose `tensor` is all NaN; return its path."""
    random_checkpoint(path, **TINY)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"][tensor] = torch.full_like(ckpt["model"][tensor], float("nan"))
    torch.save(ckpt, path)
    return path


def test_non_finite_weights_are_refused_at_load(tmp_path, capsys):
    frames = write_dataset(tmp_path / "data", n_trainval=2, n_test=2, size=(32, 32)) / "test" / "images"
    ckpt = nan_checkpoint(tmp_path / "diverged.pt")
    with pytest.raises(CheckpointError, match="holds non-finite weights .*first out_conv.bias"):
        load_model(ckpt)
    out = tmp_path / "out"
    assert inference.main(argv("--checkpoint", ckpt, "--images", frames, "--out", out, "--device", "cpu", "--quiet")) == 2
    one_error_line(capsys.readouterr().err, ckpt, "out_conv.bias", "best.pt")
    assert not out.exists()


def test_a_foreign_architecture_is_summarised(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({f"layer{i}.conv{j}.weight": torch.zeros(2, 2) for i in range(40) for j in range(5)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    n_own = len(get_model("LRRNet").state_dict())
    assert f"of its 200 tensors, {n_own} missing" in message and "200 unexpected (e.g. layer0.conv0.weight" in message
    assert len(message) < 600 and str(path) in message


def test_bad_model_hparams_name_the_file(tmp_path):
    path = random_checkpoint(tmp_path / "odd.pt", **TINY)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_hparams"]["wings"] = 2
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} has model_name 'LRRNet' and model_hparams"):
        load_model(path)


@pytest.mark.slow   # two full-size networks built and loaded
def test_fine_tuning_says_the_verifier_is_left_behind(tmp_path):
    path = random_checkpoint(tmp_path / "general.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["verifier"] = {"tau": 0.5}
    torch.save(ckpt, path)
    notes = []
    build_network(cfgs.build("synthetic", {"init": str(path)}), torch.device("cpu"), notes=notes)
    assert len(notes) == 1 and str(path) in notes[0] and "python -m utils.verify" in notes[0]
    build_network(cfgs.build("synthetic"), torch.device("cpu"), notes=notes)   # no --init: nothing to say
    assert len(notes) == 1


def test_predict_frame_takes_one_channel_either_way():
    net = get_model("LRRNet", **TINY).eval()
    frame = (np.arange(32 * 40) % 251).astype(np.uint8).reshape(32, 40)
    want = predict_frame(net, frame, device="cpu").prob
    assert np.array_equal(predict_frame(net, frame[None], device="cpu").prob, want)
    assert np.array_equal(predict_frame(net, frame[..., None], device="cpu").prob, want)
    with pytest.raises(DataError, match=r"^the frame has shape \(5, 32, 40\): pass an H x W grey"):
        predict_frame(net, np.zeros((5, 32, 40), np.uint8), device="cpu")


# ----------------------------------------------------------------------------- box labels


def test_a_label_box_outside_the_frame_is_refused(tmp_path, capsys):
    frames = {("IR_DRONE_001", k): [(11.0, 21.0, 0.9)] for k in range(3)}
    pred = write_predictions(tmp_path / "pred", frames, size_hw=(256, 320))
    good = [("IR_DRONE_001", k, (10.0, 20.0, 4.0, 3.0)) for k in range(3)]
    assert cal_from_mask.main(argv("--boxes", write_labels(tmp_path / "good.csv", good), "--pred", pred, "--quiet")) == 0
    assert json.loads((pred / "box_metrics.json").read_text())["pd"] == 1.0
    capsys.readouterr()
    before = checksums(pred)
    bad = write_labels(tmp_path / "bad.csv", [*good[:2], ("IR_DRONE_001", 2, (5000.0, 5000.0, 10.0, 10.0))])
    assert cal_from_mask.main(argv("--boxes", bad, "--pred", pred, "--quiet", "--overwrite")) == 2
    one_error_line(capsys.readouterr().err, bad, "IR_DRONE_001:2", "5000,5000,10,10", "320 x 256", "wholly outside")
    assert checksums(pred) == before


def test_labels_skipped_by_every_and_after_the_end_are_told_apart(tmp_path, capsys):
    pred = write_predictions(tmp_path / "pred", {("IR_DRONE_001", k): [] for k in (0, 3, 6)})
    labels = write_labels(tmp_path / "labels.csv", [("IR_DRONE_001", k, (10.0, 20.0, 4.0, 3.0)) for k in range(10)])
    assert cal_from_mask.main(argv("--boxes", labels, "--pred", pred, "--quiet")) == 0
    err = capsys.readouterr().err
    report = json.loads((pred / "box_metrics.json").read_text())
    assert report["unpredicted_labels"]["count"] == 7
    assert report["labels_between_processed"] == {"count": 4, "first": [f"IR_DRONE_001:{k}" for k in (1, 2, 4, 5)]}
    assert report["labels_after_last_processed"] == {"count": 3, "first": [f"IR_DRONE_001:{k}" for k in (7, 8, 9)]}
    assert "4 label(s) of the scored videos fall between processed frames" in err
    assert "3 label(s) of the scored videos lie after their video's last processed frame" in err


# ----------------------------------------------------------------------------- 16-bit video


def write_grey16_video(path, frames):
    """Write 16-bit grey frames losslessly (FFV1 gray16le); skip the test where this OpenCV cannot."""
    h, w = frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 10, (w, h),
                             [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0])
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write 16-bit FFV1 video (FFmpeg backend)")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.mark.slow   # a whole inference.py --video run
def test_a_16_bit_video_is_read_at_full_depth(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [(6000 + rng.integers(0, 2041, (32, 40))).astype(np.uint16) for _ in range(3)]   # a 14-bit sensor range
    frames[1][10:13, 20:23] = 8040
    video = write_grey16_video(tmp_path / "cam.mkv", frames)
    got = list(iter_video_frames(video, full_depth=True))
    assert [k for k, _ in got] == [0, 1, 2] and all(np.array_equal(g, f) for (_, g), f in zip(got, frames))
    ckpt = random_checkpoint(tmp_path / "tiny.pt", **TINY)
    out = tmp_path / "out"
    assert inference.main(argv("--checkpoint", ckpt, "--video", video, "--out", out, "--save-maps", "--sixteen-bit",
                           "percentile", "--device", "cpu", "--dtype", "fp32", "--quiet")) == 0
    net = load_model(ckpt)[0]
    for k, frame in enumerate(frames):   # the maps of the video are those of its 16-bit frames, stretched as frames are
        want = to_uint8(predict_frame(net, frame, device="cpu", sixteen_bit="percentile").prob)
        assert np.array_equal(cv2.imread(str(out / "img" / f"cam_{k:06d}.png"), cv2.IMREAD_UNCHANGED), want)


# ----------------------------------------------------------------------------- run_configs.py


def fake_resume_run(folder, done=6, **edits):
    """Write a run folder that --resume reads up to its checks: config.json (with `edits`) and a last.pt whose
    config is the synthetic recipe's, `done` epochs in; return it."""
    folder.mkdir(parents=True)
    cfg = cfgs.build("synthetic", {"epochs": done, "device": "cpu"})
    (folder / "config.json").write_text(json.dumps({**cfg.to_dict(), **edits}))
    state = {key: {} for key in ("model", "optimizer", "scheduler", "scaler", "rng")}
    torch.save({**state, "epoch": done, "best_metric": 0.0, "best_epoch": 1, "history": [], "config": cfg.to_dict(),
                "world_size": 1, "amp_dtype": str(torch.float32)}, folder / "last.pt")
    return folder


def test_synthetic_with_other_data_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_configs.main(["--config", "synthetic", "--sources", "NUDT-SIRST", "--out", out]) == 2
    one_error_line(capsys.readouterr().err, "--sources", "synthetic: true", "--no-synthetic")
    assert run_configs.main(["--config", "synthetic", "--data-root", tmp_path, "--out", out]) == 2
    one_error_line(capsys.readouterr().err, "--data-root", "--no-synthetic")
    assert not out.exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_malformed_config_json_on_resume(tmp_path, capsys, content):
    run = fake_resume_run(tmp_path / "run")
    (run / "config.json").write_text(content)
    before = checksums(run)
    assert run_configs.main(["--resume", run]) == 2
    one_error_line(capsys.readouterr().err, run / "config.json", "restore the run's config.json")
    assert checksums(run) == before


def test_resume_refuses_config_json_edited_by_hand(tmp_path, capsys):
    run = fake_resume_run(tmp_path / "run", lr=1e-3)
    before = checksums(run)
    assert run_configs.main(["--resume", run, "--epochs", "8"]) == 2
    one_error_line(capsys.readouterr().err, run / "config.json", "lr is 0.001 there, 0.002 in the checkpoint")
    assert checksums(run) == before


def test_resume_refuses_fewer_epochs_than_done(tmp_path, capsys):
    run = fake_resume_run(tmp_path / "run")
    before = checksums(run)
    assert run_configs.main(["--resume", run, "--epochs", "2"]) == 2
    one_error_line(capsys.readouterr().err, run, "--epochs 2 is below the 6 epochs already done")
    assert checksums(run) == before


# ----------------------------------------------------------------------------- the command line (utils/cli.py)


def test_a_bad_command_line_is_one_line(capsys):
    with pytest.raises(SystemExit) as caught:
        inference.main(argv("--checkpoint", "x.pt", "--images", "f", "--tile", "nine"))
    assert caught.value.code == 2
    one_error_line(capsys.readouterr().err, "--tile", "'nine' is not an integer", "python inference.py --help")
    assert run_configs.main(["--config", "synthetic", "--lr", "fast"]) == 2
    one_error_line(capsys.readouterr().err, "--lr", "python run_configs.py --help")


@pytest.mark.parametrize("option", [("--scale", "1000"), ("--n", "5000"), ("--scale", "0")])
def test_a_strip_too_large_to_draw_is_one_line(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as caught:
        strip_command.main(argv("--video", tmp_path / "v.mp4", "--pred", tmp_path, "--boxes", tmp_path / "l.csv",
                        "--out", tmp_path / "s.png", *option))
    assert caught.value.code == 2
    one_error_line(capsys.readouterr().err, f"{option[0]} {option[1]}", "from 1 to")
    assert list(tmp_path.iterdir()) == []


def test_bool_flags_are_shown_as_they_work(capsys):
    with pytest.raises(SystemExit):
        inference.main(argv("--help"))
    text = capsys.readouterr().out
    assert "--overwrite [true|false], --no-overwrite" in text and "--no-overwrite [true|false]" not in text
    with pytest.raises(SystemExit) as caught:
        inference.main(argv("--checkpoint", "x.pt", "--images", "f", "--no-overlay", "true"))
    assert caught.value.code == 2 and "--no-overlay takes no value" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["utils.export", "utils.merge", "utils.strip", "utils.review", "utils.checkpoint",
                                    "utils.demo", "utils.lowrank", "utils.robustness", "utils.verify.train",
                                    "utils.data.summary", "utils.data.synthetic"])
def test_module_commands_name_themselves(module, capsys):
    command = {"utils.verify.train": "utils.verify", "utils.data.summary": "utils.data",
               "utils.data.synthetic": "utils.synthetic"}.get(module, module)
    with pytest.raises(SystemExit) as caught:
        importlib.import_module(module).main(["--help"])
    assert caught.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m {command} ")


def test_run_configs_has_quiet(capsys):
    with pytest.raises(SystemExit):
        run_configs.main(["--help"])
    assert "--quiet [true|false], --no-quiet" in capsys.readouterr().out
