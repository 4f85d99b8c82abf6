"""inference.py and cal_from_mask.py misused, as a user would run them (subprocesses): exit code, one line naming the
file and the fix, no traceback, and the files already there unchanged."""
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import random_checkpoint
from utils.data.synthetic import write_dataset

pytestmark = pytest.mark.slow   # whole commands, trained networks or the real clip: make test-fast skips them

REPO = Path(__file__).resolve().parents[1]


def cli(script, *args):
    """Run REPO/script with args; return (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def infer(*args):
    return cli("inference.py", "--quiet", "--device", "cpu", *args)


def score(*args):
    return cli("cal_from_mask.py", "--quiet", "--workers", "0", *args)


def digests(folder):
    """Return {relative path: sha256} of every file under folder (or of the file itself)."""
    folder = Path(folder)
    paths = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Return (tmp, dataset root, checkpoint, out of one clean run on the test split)."""
    tmp = tmp_path_factory.mktemp("misuse")
    root = write_dataset(tmp / "data", n_trainval=4, n_test=4, size=(64, 64))
    ckpt = random_checkpoint(tmp / "random.pt")
    out = tmp / "run"
    code, printed, err = infer("--checkpoint", ckpt, "--data-root", root, "--out", out)
    assert code == 0, err
    return tmp, root, ckpt, out


@pytest.mark.parametrize("kind", ["missing", "corrupt", "folder"])
def test_bad_checkpoint(setup, kind):
    tmp, root, _, _ = setup
    ckpt = tmp / f"ckpt_{kind}.pt"
    if kind == "corrupt":
        ckpt.write_bytes(b"not a checkpoint at all")
    elif kind == "folder":
        ckpt.mkdir(exist_ok=True)
    out = tmp / f"out_{kind}"
    code, _, err = infer("--checkpoint", ckpt, "--data-root", root, "--out", out)
    assert code == 2 and err.startswith("error:") and str(ckpt) in err
    assert not out.exists()


def test_non_empty_out_is_refused_then_overwritten(setup):
    tmp, root, ckpt, run = setup
    out = tmp / "again"
    shutil.copytree(run, out)
    before = digests(out)
    code, _, err = infer("--checkpoint", ckpt, "--data-root", root, "--split", "trainval", "--out", out)
    assert code == 2 and str(out) in err and "pass --overwrite to replace it, or another --out" in err
    assert digests(out) == before
    (out / "notes.txt").write_text("mine")  # a file inference.py does not write: even --overwrite refuses
    before = digests(out)
    code, _, err = infer("--checkpoint", ckpt, "--data-root", root, "--split", "trainval", "--out", out, "--overwrite")
    assert code == 2 and "notes.txt" in err and digests(out) == before
    (out / "notes.txt").unlink()
    code, _, err = infer("--checkpoint", ckpt, "--data-root", root, "--split", "trainval", "--out", out, "--overwrite")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"] == "trainval" and sorted(p.stem for p in (out / "mat").iterdir()) == manifest["frames"]
    assert manifest["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_a_file_as_out(setup):
    tmp, root, ckpt, _ = setup
    blocker = tmp / "blocker.txt"
    blocker.write_text("keep me")
    before = digests(blocker)
    code, _, err = infer("--checkpoint", ckpt, "--data-root", root, "--out", blocker)
    assert code == 2 and str(blocker) in err and "--out" in err and digests(blocker) == before
    code, _, err = score("--pred", setup[3], "--data-root", root, "--out", blocker)
    assert code == 2 and str(blocker) in err and "--out" in err and digests(blocker) == before


def test_corrupt_frame_and_duplicate_names(setup):
    tmp, root, ckpt, _ = setup
    frames = tmp / "frames"
    frames.mkdir()
    names = sorted(p.name for p in (root / "test" / "images").iterdir())[:2]
    for name in names:
        shutil.copy(root / "test" / "images" / name, frames)
    stem = Path(names[0]).stem
    shutil.copy(frames / names[0], frames / f"{stem}.PNG")  # a.png and a.PNG: one name
    cv2.imwrite(str(frames / f"{stem}.tif"), cv2.imread(str(frames / names[0]), cv2.IMREAD_UNCHANGED))
    (frames / "broken.png").write_bytes(b"garbage")
    code, printed, err = infer("--checkpoint", ckpt, "--images", frames, "--out", tmp / "frames_out")
    assert code == 1 and "broken.png" in err
    assert "wrote 2 of 5 frames" in printed and f"{stem}.tif" in printed and "2 frame(s) skipped" in printed


def test_scorer_misuse(setup):
    tmp, root, ckpt, run = setup
    # a 0/1 PNG prediction: read as a binary map, with one warning naming the folder
    binary = tmp / "binary"
    (binary / "img").mkdir(parents=True)
    for mask in (root / "test" / "masks").iterdir():
        cv2.imwrite(str(binary / "img" / mask.name), (cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8))
    code, _, err = score("--pred", binary, "--data-root", root)
    assert code == 0 and f"in {binary / 'img'} hold only the values 0 and 1" in err and "no manifest.json" in err
    assert json.loads((binary / "metrics.json").read_text())["pd"] == 1.0
    # mixed runs: a map the manifest does not list
    mixed = tmp / "mixed"
    shutil.copytree(run, mixed)
    shutil.copy(mixed / "img" / sorted((mixed / "img").iterdir())[0].name, mixed / "img" / "stranger.png")
    before = digests(mixed)
    code, _, err = score("--pred", mixed, "--data-root", root)
    assert code == 2 and "img/stranger.png" in err and "mixes runs" in err and digests(mixed) == before
    # a prediction of another aspect ratio: re-export the prediction, not replace the mask
    wrong = tmp / "wrong"
    (wrong / "img").mkdir(parents=True)
    for mask in (root / "test" / "masks").iterdir():
        cv2.imwrite(str(wrong / "img" / mask.name), np.zeros((64, 100), np.uint8))
    code, _, err = score("--pred", wrong, "--data-root", root)
    assert code == 2 and "re-export the prediction at the frame's size" in err and str(wrong / "img") in err


def test_ctrl_c_says_what_was_kept(setup):
    tmp, root, _, _ = setup
    frames = tmp / "many"
    frames.mkdir()
    image = cv2.imread(str(sorted((root / "test" / "images").iterdir())[0]), cv2.IMREAD_UNCHANGED)
    for k in range(40):
        cv2.imwrite(str(frames / f"f{k:03d}.png"), np.roll(image, k, axis=1))
    ckpt = random_checkpoint(tmp / "full.pt")
    out = tmp / "stopped"
    command = [sys.executable, "inference.py", "--quiet", "--device", "cpu", "--checkpoint", ckpt, "--images", frames,
               "--out", out]
    proc = subprocess.Popen(list(map(str, command)), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:   # (SIG_DFL: Python's Ctrl-C handling even where pytest runs as a background job, SIGINT ignored)
        deadline = time.monotonic() + 300
        while not any((out / "img").glob("*.png")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted: {out} holds the outputs of the frames done so far")
    assert not (out / "manifest.json").exists()
    again = subprocess.run(list(map(str, command + ["--overwrite"])), cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "wrote 40 of 40 frames" in again.stdout, again.stderr


def test_a_clip_label_outside_the_frame_is_refused(tmp_path):
    clip = REPO / "datasets" / "samples"
    ckpt = random_checkpoint(tmp_path / "tiny.pt", base_width=4, width_mults=(1, 2), blocks_per_level=1, groups=2)
    out = tmp_path / "clip"
    code, _, err = infer("--checkpoint", ckpt, "--video", clip / "videos" / "IR_BIRD_019_128-255.mp4", "--every", 16,
                         "--out", out)
    assert code == 0, err
    rows = (clip / "labels.csv").read_text().splitlines()
    moved = [row if not row.startswith("IR_BIRD_019_128-255,48,") else "IR_BIRD_019_128-255,48,5000,5000,10,10"
             for row in rows]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(moved) + "\n")
    before = digests(out)
    code, _, err = score("--boxes", labels, "--pred", out)
    assert code == 2 and err.count("\n") == 1 and str(labels) in err and "IR_BIRD_019_128-255:48" in err, err
    assert "320 x 256" in err and digests(out) == before
