"""Every command that writes a file, misused: it refuses (exit code 2, one `error:` line, every file there unchanged
byte for byte) to write onto one of its own inputs, into a folder it reads, or onto an existing file without
--overwrite; an output folder is locked for the length of a run; a stopped run's leftovers are its own."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import cal_from_mask
import inference
import run_configs
from tests.conftest import random_checkpoint
from tests.test_boxscore import FRAMES, LABELS, write_labels, write_predictions
from tests.test_video_inference import write_video
from utils import ROOT, lowrank, merge, review, robustness, strip
from utils.data import summary, synthetic
from utils.export import main as export_main
from utils.files import LOCK_NAME, OutputError, check_output, locked_folder
from utils.infer.record import temp_path
from utils.infer.writers import VideoOverlay
from utils.verify import train as verify

SMALL = dict(width_mults=(1, 2), blocks_per_level=1)  # two levels: fast to build, save and run


def digests(*paths):
    """Return {path: sha256} of every file under the paths (folders walked; a missing path maps to None)."""
    found = {}
    for path in paths:
        if path.is_dir():
            found.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
                          if p.is_file()})
        else:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return found


def refused(capsys, code, *words):
    """Assert exit code 2 and one `error:` line on stderr holding every word."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("[")]  # ffmpeg's own lines aside
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Return (folder, a small random checkpoint, a 12-frame video, its box labels)."""
    folder = tmp_path_factory.mktemp("outputs")
    ckpt = random_checkpoint(folder / "tiny.pt", **SMALL)
    video = write_video(folder / "clip.mp4")
    labels = folder / "labels.csv"
    labels.write_text("video,frame,x,y,w,h\n" + "".join(f"clip,{i},{5 + 3 * i},20,4,4\n" for i in range(12)))
    return folder, ckpt, video, labels


def infer(*args):
    return inference.main(["--quiet", "--device", "cpu", *map(str, args)])


# ----------------------------------------------------------------------------- the shared rule


def test_check_output_refuses_inputs_read_folders_and_existing_files(tmp_path):
    data = tmp_path / "labels.csv"
    data.write_text("x")
    os.link(data, tmp_path / "hard.csv")
    for path in (data, tmp_path / "." / "labels.csv", tmp_path / "hard.csv"):  # the same file, however named
        with pytest.raises(OutputError, match="is this command's input"):
            check_output(path, True, [("--boxes", data)])
    with pytest.raises(OutputError, match="which this command reads"):
        check_output(tmp_path / "run" / "img" / "x.png", True, folders=[("maps", tmp_path / "run" / "img")])
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output(tmp_path / "hard.csv")
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, True)
    assert check_output(tmp_path / "hard.csv", True) == tmp_path / "hard.csv"
    assert check_output(tmp_path / "new.csv") == tmp_path / "new.csv"


# ----------------------------------------------------------------------------- readers of a run: strip, scorer, review


@pytest.fixture()
def run(tmp_path):
    """Return (labels, a video run's folder, its video): the files the tests must leave unchanged."""
    labels = write_labels(tmp_path / "labels.csv", LABELS)
    pred = write_predictions(tmp_path / "pred", FRAMES)
    (pred / "manifest.json").write_text('{"files": []}\n')
    (pred / "img").mkdir()
    video = tmp_path / "IR_DRONE_001.mp4"
    video.write_bytes(b"a video")
    return labels, pred, video


def test_strip_refuses_its_inputs_and_an_existing_png(run, capsys):
    labels, pred, video = run
    before = digests(labels, pred, video)
    argv = ["--video", str(video), "--pred", str(pred), "--boxes", str(labels)]
    for out in (labels, video, pred / "detections.json", pred / "manifest.json"):
        refused(capsys, strip.main([*argv, "--out", str(out), "--overwrite"]), str(out), "input")
    for out in (pred / "strip.png", pred / "img" / "strip.png"):    # the scorers would read it as a map
        refused(capsys, strip.main([*argv, "--out", str(out)]), str(out), "reads")
    existing = labels.parent / "strip.png"
    existing.write_bytes(b"someone's picture")
    refused(capsys, strip.main([*argv, "--out", str(existing)]), str(existing), "--overwrite")
    assert digests(labels, pred, video, existing) == {**before, **digests(existing)}
    assert existing.read_bytes() == b"someone's picture"


def test_scorer_refuses_its_inputs_and_existing_reports(run, tmp_path, capsys):
    labels, pred, _ = run
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_text("id,video,frame,x,y,peak_prob,absent,verdict,note\n")
    before = digests(labels, pred, reviewed)
    argv = ["--boxes", str(labels), "--pred", str(pred), "--quiet", "--overwrite"]
    for target in (labels, pred / "detections.json", pred / "detections.csv", pred / "manifest.json"):
        refused(capsys, cal_from_mask.main([*argv, "--json", str(target)]), f"--json {target}", "input")
    refused(capsys, cal_from_mask.main([*argv, "--reviewed", str(reviewed), "--json", str(reviewed)]), "input")
    refused(capsys, cal_from_mask.main([*argv, "--json", str(pred / "img" / "m.json")]), "reads")
    assert digests(labels, pred, reviewed) == before
    # an existing report is replaced only with --overwrite
    assert cal_from_mask.main(["--boxes", str(labels), "--pred", str(pred), "--quiet"]) == 0
    capsys.readouterr()
    before = digests(pred)
    refused(capsys, cal_from_mask.main(["--boxes", str(labels), "--pred", str(pred), "--quiet"]),
            str(pred / "box_metrics.json"), "--overwrite")
    assert digests(pred) == before
    assert cal_from_mask.main(argv) == 0


def test_review_refuses_the_run_folder_and_an_earlier_review(run, tmp_path, capsys):
    labels, pred, _ = run
    before = digests(labels, pred)
    argv = ["--boxes", str(labels), "--pred", str(pred), "--quiet"]
    for out in (pred, pred / "img", pred / "mat"):
        refused(capsys, review.main([*argv, "--out", str(out)]), f"--out {out}", "mix of runs")
    assert digests(labels, pred) == before and not (pred / "mat").exists()
    out = tmp_path / "review"   # an earlier review without verdicts: replaced only with --overwrite
    out.mkdir()
    (out / "false_alarms.csv").write_text("id,video,frame,x,y,peak_prob,absent,verdict,note\n")
    (out / "sheet_001.png").write_bytes(b"an earlier sheet")
    before = digests(out)
    refused(capsys, review.main([*argv, "--out", str(out)]), f"--out {out}", "--overwrite")
    assert digests(out) == before


# ----------------------------------------------------------------------------- checkpoints: merge, export, verify


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("merge")
    return [random_checkpoint(folder / f"{name}.pt", seed=i, **SMALL) for i, name in enumerate(("a", "b", "c"))]


def test_merge_never_writes_onto_its_inputs_nor_an_existing_file(checkpoints, tmp_path, capsys):
    a, b, c = checkpoints
    before = digests(a, b, c)
    argv = ["--into", str(a), "--add", str(b), "--base", str(c)]
    for out in (a, b, c):
        refused(capsys, merge.main([*argv, "--out", str(out), "--overwrite"]), f"--out {out}", "input")
    existing = tmp_path / "old.pt"
    existing.write_bytes(b"an older merge")
    refused(capsys, merge.main([*argv, "--out", str(existing)]), f"--out {existing}", "--overwrite")
    assert digests(a, b, c, existing) == {**before, str(existing): hashlib.sha256(b"an older merge").hexdigest()}
    assert merge.main([*argv, "--out", str(existing), "--overwrite"]) == 0


def test_merge_refuses_non_finite_weights_before_writing(checkpoints, tmp_path, capsys):
    a, b, c = checkpoints
    out = tmp_path / "huge.pt"
    refused(capsys, merge.main(["--into", str(a), "--add", str(b), "--base", str(c), "--scale", "1e39",
                                "--out", str(out)]), "not finite", "--scale 1e+39", "smaller --scale")
    assert not out.exists()
    merged = merge.task_arithmetic(*(torch.load(p, weights_only=True)["model"] for p in (a, b, c)), 1e39)
    assert not all(torch.isfinite(v).all() for v in merged.values())   # the case is real: float32 overflows


def test_export_verify_refuse_an_existing_file(checkpoints, tmp_path, capsys):
    a = checkpoints[0]
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an earlier export")
    refused(capsys, export_main(["--checkpoint", str(a), "--onnx", str(onnx)]), f"--onnx {onnx}", "--overwrite")
    assert onnx.read_bytes() == b"an earlier export"
    before = digests(a)
    refused(capsys, verify.main(["--checkpoint", str(a), "--out", str(a)]), f"--out {a}", "--overwrite")
    assert digests(a) == before


# ----------------------------------------------------------------------------- folders of reports: robustness, lowrank


@pytest.mark.parametrize("tool, names", [(robustness, ("robustness.json",)),
                                         (lowrank, ("lowrank.csv", "lowrank.json", "spectra.png"))])
def test_report_folders_refuse_existing_files(checkpoints, tmp_path, capsys, tool, names):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / names[-1]).write_text("an earlier report")
    before = digests(out)
    code = tool.main(["--checkpoint", str(checkpoints[0]), "--data-root", str(data), "--out", str(out), "--quiet"])
    refused(capsys, code, str(out / names[-1]), "--overwrite")
    assert digests(out) == before


def test_data_pictures_refuse_an_existing_png_and_the_dataset(tmp_path, capsys):
    root = tmp_path / "video_root"
    (root / "videos").mkdir(parents=True)
    picture = tmp_path / "pictures.png"
    picture.write_bytes(b"an earlier picture")
    refused(capsys, summary.main(["--data-root", str(root), "--pictures", str(picture)]), str(picture), "--overwrite")
    inside = root / "videos" / "p.png"
    refused(capsys, summary.main(["--data-root", str(root), "--pictures", str(inside)]), str(inside), "reads")
    assert picture.read_bytes() == b"an earlier picture" and not inside.exists()


# ----------------------------------------------------------------------------- inference: the lock, leftovers, inputs


def test_a_folder_being_written_is_refused_at_once(tiny, tmp_path, capsys):
    _, ckpt, video, _ = tiny
    out = tmp_path / "busy"
    with locked_folder(out):    # another run holds it (flock: separate opens conflict even in one process)
        (out / "detections.json").write_text("the other run's")
        before = digests(out)
        refused(capsys, infer("--checkpoint", ckpt, "--video", video, "--out", out, "--overwrite"),
                f"--out {out}", "being written by another run", f"pid {os.getpid()}")
        assert digests(out) == before
        refused(capsys, run_configs.main(["--config", "synthetic", "--out", str(out), "--device", "cpu"]),
                "being written by another run")
        assert digests(out) == before
    assert not (out / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "killed"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from utils.files import locked_folder\n"
                               f"with locked_folder({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            with locked_folder(out):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)   # left behind by the killed run
    with locked_folder(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert list(out.iterdir()) == []   # the lock leaves nothing behind


@pytest.mark.slow   # three inference runs
def test_a_stopped_runs_temporary_video_is_cleaned(tiny, tmp_path, capsys):
    _, ckpt, video, _ = tiny
    out = tmp_path / "stopped"
    out.mkdir()
    (out / "clip.tmp.mp4").write_bytes(b"half an overlay")   # what a SIGKILL during --overlay leaves
    (out / LOCK_NAME).write_text("999999999\n")               # and its lock, no longer held
    assert infer("--checkpoint", ckpt, "--video", video, "--out", out, "--overlay") == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "detections.csv", "detections.json", "manifest.json"]
    (out / "clip.tmp.mp4").write_bytes(b"half an overlay")   # beside a whole run: --overwrite clears both
    capsys.readouterr()
    before = digests(out)
    refused(capsys, infer("--checkpoint", ckpt, "--video", video, "--out", out, "--overlay"), "--overwrite")
    assert digests(out) == before
    assert infer("--checkpoint", ckpt, "--video", video, "--out", out, "--overlay", "--overwrite") == 0
    assert not (out / "clip.tmp.mp4").exists()


@pytest.mark.slow   # an inference run
def test_overwrite_never_removes_an_input(tiny, tmp_path, capsys):
    _, ckpt, video, _ = tiny
    out = tmp_path / "overlaid"
    assert infer("--checkpoint", ckpt, "--video", video, "--out", out, "--overlay") == 0
    capsys.readouterr()
    before = digests(out)   # the earlier run's overlay is now this run's input: --overwrite would remove it first
    refused(capsys, infer("--checkpoint", ckpt, "--video", out / "clip.mp4", "--out", out, "--overwrite"),
            "clip.mp4", "input")
    assert digests(out) == before


def test_a_video_that_cannot_be_opened_writes_nothing(tiny, tmp_path, capsys):
    _, ckpt, _, _ = tiny
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    refused(capsys, infer("--checkpoint", ckpt, "--video", broken, "--out", tmp_path / "nothing"), "broken.mp4")
    assert not (tmp_path / "nothing").exists()


@pytest.mark.slow   # two processes that import torch
def test_two_runs_into_one_folder_one_is_refused(tiny, tmp_path):
    """The case as a user types it: two processes at once into one --out; exactly one writes, the other exits 2."""
    folder, ckpt, video, _ = tiny
    other = write_video(tmp_path / "other.mp4", n=7)
    out = tmp_path / "shared"
    command = [sys.executable, "inference.py", "--quiet", "--device", "cpu", "--checkpoint", str(ckpt), "--out",
               str(out), "--video"]
    first = subprocess.Popen([*command, str(video)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    while first.poll() is None and not (out / LOCK_NAME).exists():
        time.sleep(0.05)
    second = subprocess.run([*command, str(other)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    first.wait(timeout=120)
    assert sorted([first.returncode, second.returncode]) == [0, 2]
    err = second.stderr if second.returncode == 2 else first.stderr.read()
    assert "error: --out" in err and "Traceback" not in err


def test_video_leftovers_name_is_the_record_s(tmp_path):
    """The overlay's temporary name comes from the run record, so prepare_out knows it as a leftover."""
    assert VideoOverlay(tmp_path / "a.mp4", 30).tmp == temp_path(tmp_path / "a.mp4") == tmp_path / "a.tmp.mp4"
    assert temp_path(tmp_path / "detections.json") == tmp_path / "detections.json.tmp"


def test_synthetic_refuses_a_folder_it_did_not_write_and_replaces_its_own_only_with_overwrite(tmp_path, capsys):
    argv = ["--n-trainval", "3", "--n-test", "2", "--height", "32", "--width", "32"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    refused(capsys, synthetic.main(["--out", str(mine), *argv]), f"--out {mine}", "synthetic.json")
    assert digests(mine) == {str(mine / "notes.txt"): hashlib.sha256(b"mine").hexdigest()}
    scenes = tmp_path / "scenes"
    assert synthetic.main(["--out", str(scenes), *argv]) == 0
    before = digests(scenes)
    refused(capsys, synthetic.main(["--out", str(scenes), "--n-trainval", "2", "--n-test", "1", "--height", "32",
                                    "--width", "32"]), "--overwrite")
    assert digests(scenes) == before
    assert synthetic.main(["--out", str(scenes), "--n-trainval", "2", "--n-test", "1", "--height", "32", "--width",
                           "32", "--overwrite"]) == 0   # a smaller set: the earlier set's extra scenes are gone
    assert sorted(p.name for p in (scenes / "trainval" / "images").iterdir()) == ["000000.png", "000001.png"]
    assert sorted(p.name for p in (scenes / "test" / "masks").iterdir()) == ["100000.png"]


def test_training_into_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    refused(capsys, run_configs.main(["--config", "synthetic", "--out", str(blocker), "--device", "cpu"]),
            f"--out {blocker}", "not a folder")
    assert blocker.read_text() == "keep me"
