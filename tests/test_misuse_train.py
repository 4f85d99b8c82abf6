"""Misuse of run_configs.py and python -m utils.data, driven as a user would: one process each.

Every case must end with exit code 2, one line naming the file, no traceback, and leave the
files already there byte-identical.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import get_model
from tests.conftest import random_checkpoint
from utils import ROOT
from utils.data.synthetic import write_dataset
from utils.train import config as cfgs

pytestmark = pytest.mark.slow   # whole commands, trained networks or the real clip: make test-fast skips them

SMALL = ["--synthetic-frames", "8", "--synthetic-size", "32", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
         "--crop-size", "32", "--device", "cpu"]
TIMEOUT = 60


def run(*argv) -> subprocess.CompletedProcess:
    """Run a command of the project (python ARGV...) from the repository root; return its result."""
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT)


def checksums(folder: Path) -> dict[str, str]:
    """Return {relative path: sha256} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(result: subprocess.CompletedProcess, named: Path | str, *words: str) -> None:
    """Assert exit code 2, `named` and every word in stderr, and no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert str(named) in result.stderr, result.stderr[-2000:]
    for word in words:
        assert word in result.stderr, result.stderr[-2000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("misuse") / "data", n_trainval=8, n_test=4, size=(64, 64))


def fake_run(folder: Path, last: bytes | None = None) -> Path:
    """Write a run folder as run_configs.py leaves it (config.json, a loadable best.pt, last.pt); return it."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfgs.build("synthetic").to_dict()))
    random_checkpoint(folder / "best.pt")
    if last is None:
        random_checkpoint(folder / "last.pt", seed=1)
    else:
        (folder / "last.pt").write_bytes(last)
    return folder


def test_out_folder_holding_a_run_is_refused(tmp_path):
    out = fake_run(tmp_path / "run")
    before = checksums(out)
    result = run("run_configs.py", "--config", "synthetic", *SMALL, "--out", out)
    refused(result, out, "already holds a run", f"--resume {out}", "--overwrite")
    assert checksums(out) == before


def test_corrupt_test_frame_is_found_before_training(tmp_path, data):
    root = tmp_path / "data"
    shutil.copytree(data, root)
    bad = sorted((root / "test" / "images").iterdir())[-1]
    bad.write_bytes(bad.read_bytes()[:100])        # truncated PNG
    out = tmp_path / "run"
    before = checksums(root)
    result = run("run_configs.py", "--config", "synthetic", "--no-synthetic", "--data-root", root, *SMALL,
                 "--out", out)
    refused(result, bad, "truncated")
    assert not out.exists() and checksums(root) == before


def test_nan_tiff_frame_is_named_by_the_summary(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, n_trainval=4, n_test=2, size=(32, 32))
    png = sorted((root / "test" / "images").iterdir())[0]
    frame = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    frame[3, 4] = np.nan
    tif = png.with_suffix(".tif")
    assert cv2.imwrite(str(tif), frame)
    png.unlink()
    before = checksums(root)
    result = run("-m", "utils.data", "--data-root", root)
    refused(result, tif, "non-finite values")
    assert checksums(root) == before


def test_truncated_last_pt_points_to_best_pt(tmp_path):
    good = random_checkpoint(tmp_path / "whole.pt").read_bytes()
    out = fake_run(tmp_path / "run", last=good[: len(good) // 2])
    before = checksums(out)
    result = run("run_configs.py", "--resume", out)
    refused(result, out / "last.pt", f"--init {out / 'best.pt'}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert checksums(out) == before


def test_nan_init_is_refused(tmp_path):
    init = tmp_path / "diverged.pt"
    torch.manual_seed(0)
    net = get_model("LRRNet")
    state = net.state_dict()
    state["out_conv.bias"] = torch.full_like(state["out_conv.bias"], float("nan"))
    torch.save({"model": state, "model_name": "LRRNet", "model_hparams": net.hparams()}, init)
    before = checksums(tmp_path)
    out = tmp_path / "run"
    result = run("run_configs.py", "--config", "synthetic", *SMALL, "--init", init, "--out", out)
    refused(result, init, "holds non-finite weights")
    assert not out.exists() and checksums(tmp_path) == before


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_lr_is_refused(tmp_path, value):
    out = tmp_path / "run"
    result = run("run_configs.py", "--config", "synthetic", *SMALL, "--lr", value, "--out", out)
    refused(result, "--lr", "finite")
    assert not out.exists()


def default_sigint() -> None:
    """Give the child Python's Ctrl-C handling even where this process was started with SIGINT ignored (a
    background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_what_last_pt_holds_and_resume_goes_on(tmp_path):
    out = tmp_path / "run"
    argv = ["run_configs.py", "--config", "synthetic", *SMALL, "--out", out, "--quiet"]
    argv[argv.index("--epochs") + 1] = "200"
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 5 * TIMEOUT   # generous: a loaded machine is slow to start
        while not (out / "last.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()   # --quiet: no progress bar, no info lines; only the one line
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and f"--resume {out}" in lines[0], err
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert f"holds epoch {done} of 200" in lines[0]
    result = subprocess.run([sys.executable, "run_configs.py", "--resume", str(out), "--epochs", str(done + 1),
                             "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=5 * TIMEOUT)   # config.json agrees with last.pt
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["epochs"] == done + 1


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler for the test, whatever pytest inherited: a shell starts a background job (`cmd &`)
    with SIGINT ignored, and Python then keeps it ignored, so no Ctrl-C would raise at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_to_self() -> None:
    """Send this process a Ctrl-C and give it time to be delivered, were it not held."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)


def test_ctrl_c_during_a_checkpoint_write_lands_after_it(tmp_path, ctrl_c_raises):
    """A Ctrl-C that arrives while last.pt is written waits for the write (torch.save's zip writer, interrupted,
    raised a second error that hid the one-line message), and the file is whole."""
    from utils.checkpoint import atomic_save

    class Interrupting:                       # pickled by torch.save: sends the Ctrl-C from inside the write
        def __reduce__(self):
            ctrl_c_to_self()
            return (dict, ())

    path = tmp_path / "last.pt"
    other = threading.Thread(target=time.sleep, args=(1.0,), daemon=True)   # a thread that could take the signal,
    other.start()                                                          # as torch's own do in a training run
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"weights": torch.ones(1000), "probe": Interrupting()}, path)
    assert torch.load(path, weights_only=False)["weights"].sum() == 1000 and not (tmp_path / "last.pt.tmp").exists()


def test_nested_deferrals_deliver_one_interrupt_after_the_outer_block(ctrl_c_raises):
    from utils.checkpoint import interrupts_deferred

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():           # the training loop's: both checkpoints and the saved epoch
            with interrupts_deferred():       # atomic_save's own
                ctrl_c_to_self()
                steps.append("written")
            steps.append("saved epoch recorded")  # the inner block's exit hands the signal to the outer one
    assert steps == ["written", "saved epoch recorded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
