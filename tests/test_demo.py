"""make demo's clip: the shipped checkpoint on datasets/samples scores as stored; the clip, labels and strip are sound."""
import csv
import os
import re

import cv2
import numpy as np
import pytest

from utils import ROOT
from utils.demo import CLIP, CLIP_LABELS, EXPECTED, checkpoint_key, compare, load_expected, run_clip, sha256
from utils.strip import choose_frames, draw_strip
from utils.strip import main as strip_main

pytestmark = pytest.mark.slow   # whole commands, trained networks or the real clip: make test-fast skips them

EVERY = 2  # every 2nd frame: 64 frames, about 30 s on a 2-core CPU (make demo runs all 128)


def clip_checkpoint():
    """Return the demo's checkpoint: $CLIP_CKPT, else the Makefile's CLIP_CKPT (one line to switch)."""
    if os.environ.get("CLIP_CKPT"):
        return ROOT / os.environ["CLIP_CKPT"]
    match = re.search(r"^CLIP_CKPT \?= *(\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert match, "the Makefile sets no CLIP_CKPT"
    return ROOT / match.group(1)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """Run the demo's inference + box scoring on every 2nd frame of the clip (CPU, fp32); return (out, scores)."""
    checkpoint = clip_checkpoint()
    if not checkpoint.is_file():
        pytest.skip(f"the demo's checkpoint {checkpoint} is missing (restore it, or set CLIP_CKPT)")
    out = tmp_path_factory.mktemp("demo_clip")
    return out, run_clip(checkpoint, out, every=EVERY)


def test_clip_scores_as_stored(clip_run):
    checkpoint = clip_checkpoint()
    entry = load_expected().get(checkpoint_key(checkpoint))
    fix = f"record them: make demo-expected CLIP_CKPT={os.path.relpath(checkpoint, ROOT)}"
    assert entry is not None, f"{EXPECTED.name} has no scores for {checkpoint.name}: {fix}"
    assert entry["sha256"] == sha256(checkpoint), f"{checkpoint.name} changed since its scores were stored: {fix}"
    got = clip_run[1]
    assert compare(got, entry["every"][str(EVERY)]) == [], fix
    assert (got["n_frames"], got["n_targets"], got["n_absent_frames"]) == (64, 41, 23)


def test_strip_of_the_run(clip_run, tmp_path):
    out = tmp_path / "strip.png"
    assert strip_main(["--video", str(CLIP), "--pred", str(clip_run[0]), "--boxes", str(CLIP_LABELS),
                       "--out", str(out)]) == 0
    picture = cv2.imread(str(out))
    assert picture.shape == (256 + 2 * 22, 5 * 320 + 4 * 4, 3)
    strip, shown = draw_strip(CLIP, clip_run[0], CLIP_LABELS)
    assert np.array_equal(strip, picture)  # deterministic
    labels = {int(r["frame"]): r["x"] for r in csv.DictReader(open(CLIP_LABELS, encoding="utf-8"))}
    assert any(labels[f] == "" for f in shown) and any(labels[f] for f in shown)  # a target-absent frame, a target
    assert all(f % EVERY == 0 for f in shown)  # only processed frames


def test_choose_frames_covers_every_stretch():
    kinds = [(f, 10 <= f < 20) for f in range(40)]  # absent 0-9, present 10-19, absent 20-39
    assert choose_frames(kinds, 3) == [5, 15, 30]
    assert choose_frames(kinds, 5) == [5, 15, 23, 30, 36]  # the longest stretch gets the extra frames
    assert choose_frames(kinds, 100) == list(range(40))
    assert choose_frames([], 5) == []


def test_clip_folder_is_a_video_dataset():
    from utils.data import detect_layout, index_videos, resolve_data_root

    root = resolve_data_root("samples")  # a bare name of a folder in datasets/
    assert root == ROOT / "datasets" / "samples" and detect_layout(root) == "video"
    (item,) = index_videos(root, "train")
    assert item.path == CLIP and item.target_class == "BIRD"
    assert len(item.labels) == 128 and sum(box is None for box in item.labels.values()) == 45
    assert CLIP.stat().st_size <= 1_000_000
