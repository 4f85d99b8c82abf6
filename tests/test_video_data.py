"""The video layout (utils.data.video): detection, labels, streaming decode, summary, dataset, box pseudo-masks."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import DATASETS, need
from utils import data
from utils.data import DataError
from utils.data.labels import read_box_labels
from utils.data.video import box_slices, count_frames, index_videos, iter_video_frames, pseudo_mask
from utils.data.video_summary import summarize_video

N_FRAMES, W, H = 12, 64, 48


def square_at(i: int) -> tuple[int, int]:
    """Return (top row, left column) px of the 8 x 8 bright square in frame i of the fake videos."""
    return 10 + i, 4 + 3 * i


def write_video(path: Path) -> None:
    """Write a 64 x 48 mp4v video of 12 frames: grey 40 with an 8 x 8 square of 200 moving 3 px right, 1 px down a frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        frame = np.full((H, W, 3), 40, np.uint8)
        top, left = square_at(i)
        frame[top : top + 8, left : left + 8] = 200
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """Return a 2-video root: IR_DRONE_001 (train; frame 5 absent, one label beyond the last frame), IR_BIRD_002 (val)."""
    root = tmp_path_factory.mktemp("video")
    (root / "videos").mkdir()
    rows = ["video,frame,x,y,w,h"]
    for stem in ("IR_DRONE_001", "IR_BIRD_002"):
        write_video(root / "videos" / f"{stem}.mp4")
        for i in range(N_FRAMES):
            top, left = square_at(i)
            absent = stem == "IR_DRONE_001" and i == 5
            rows.append(f"{stem},{i}," + (",,," if absent else f"{left - 3},{top - 3},14,14"))
    rows.append("IR_DRONE_001,12,40,25,14,14")  # beyond the last decodable frame
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "train.txt").write_text("IR_DRONE_001\n")
    (root / "val.txt").write_text("IR_BIRD_002\n")
    return root


# ----------------------------------------------------------------------------- layout, labels, index


def test_layout_detected_and_index(fake_root):
    assert "video" in data.LAYOUTS
    assert data.detect_layout(fake_root) == "video"
    (train,) = index_videos(fake_root, "train")
    assert (train.stem, train.target_class, train.path.name) == ("IR_DRONE_001", "DRONE", "IR_DRONE_001.mp4")
    assert len(train.labels) == 13 and train.labels[5] is None
    assert train.labels[0] == (1.0, 7.0, 14.0, 14.0)
    assert [v.stem for v in index_videos(fake_root, "trainval")] == ["IR_DRONE_001", "IR_BIRD_002"]
    with pytest.raises(DataError, match="no test split"):
        index_videos(fake_root, "test")
    with pytest.raises(DataError, match="video layout"):  # the image-layout dataset refuses it, saying what to use
        data.IRSTDDataset(fake_root, "train")


def test_labels_errors_name_the_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("video,frame,x,y,w,h\nV,0,1,2,3,4\nV,x,1,2,3,4\nV,2,1,,3,4\nV,0,5,5,5,5\nV,3,1,2,0,4\n")
    with pytest.raises(DataError) as error:
        read_box_labels(path)
    message = str(error.value)
    assert str(path) in message and "4 bad row(s)" in message
    for text in ("line 3: frame 'x'", "line 4: box '1,,3,4' is not four numbers", "line 5: V:0 is labelled again (first on line 2", "line 6: box width"):
        assert text in message
    path.write_text("video,frame,x,y,w\nV,0,1,2,3\n")
    with pytest.raises(DataError, match="line 1: header"):
        read_box_labels(path)


# ----------------------------------------------------------------------------- decoding


def test_streaming_every_k(fake_root):
    path = fake_root / "videos" / "IR_DRONE_001.mp4"
    assert count_frames(path) == N_FRAMES
    got = list(iter_video_frames(path, every=5, start=1))
    assert [i for i, _ in got] == [1, 6, 11]
    for i, grey in got:
        assert grey.shape == (H, W) and grey.dtype == np.uint8
        top, left = square_at(i)
        inside = grey[top : top + 8, left : left + 8].astype(int)
        outside = np.ones((H, W), bool)
        outside[max(top - 2, 0) : top + 10, max(left - 2, 0) : left + 10] = False
        assert abs(inside.mean() - 200) < 4 and abs(grey[outside].astype(int).mean() - 40) < 3  # mp4v + YUV: 38 for 40


def test_bad_videos_named(tmp_path):
    with pytest.raises(DataError, match="missing.mp4 does not exist"):
        iter_video_frames(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="junk.mp4"):
        count_frames(junk)


# ----------------------------------------------------------------------------- summary


def test_summary_names_mismatch(fake_root, capsys):
    s = summarize_video(fake_root, progress=False)
    assert s["mismatches"] == [["IR_DRONE_001", 13, 12]]
    assert s["labels_beyond_last_frame"] == 1 and s["frames"] == 24 and s["labelled"] == 25 and s["absent"] == 1
    assert s["splits"]["train"]["classes"] == {"DRONE": 1} and s["splits"]["val"]["classes"] == {"BIRD": 1}
    assert s["box_w_px"] == {"median": 14.0, "p5": 14.0, "p95": 14.0}
    assert data.main(["--data-root", str(fake_root)]) == 0
    assert "IR_DRONE_001: 13 labels, 12 frames" in capsys.readouterr().out
    assert data.main(["--data-root", str(fake_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == [["IR_DRONE_001", 13, 12]]


# ----------------------------------------------------------------------------- dataset


def test_dataset_items(fake_root):
    ds = data.VideoFrameDataset(fake_root, "train", every=5)
    assert ds.names == ["IR_DRONE_001_00000", "IR_DRONE_001_00005", "IR_DRONE_001_00010"] and ds.sizes == [(H, W)] * 3
    item = ds[0]
    for key in ("image", "mask", "ignore"):
        assert tuple(item[key].shape) == (1, H, W)
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    mask, ignore = item["mask"][0].numpy(), item["ignore"][0].numpy()
    square = np.zeros((H, W), bool)
    square[10:18, 4:12] = True
    assert np.array_equal(mask.astype(bool), square)  # the 8 x 8 square of frame 0, exactly
    assert ignore.sum() == 14 * 14 - 64 and not (mask * ignore).any()  # the rest of the box
    assert item["box"].tolist() == [1.0, 7.0, 14.0, 14.0]
    absent = ds[1]  # frame 5: target absent -> all background, nothing ignored
    assert absent["mask"].sum() == 0 and absent["ignore"].sum() == 0 and all(math.isnan(v) for v in absent["box"].tolist())
    flipped = data.VideoFrameDataset(fake_root, "train", every=5, transform=lambda im, t: (im.flip(-1), t.flip(-1)))[0]
    assert np.array_equal(flipped["mask"][0].numpy(), mask[:, ::-1]) and np.array_equal(flipped["ignore"][0].numpy(), ignore[:, ::-1])


# ----------------------------------------------------------------------------- pseudo-masks on hand-made frames


def noise_frame(level: float, sigma: float, size: int = 48, seed: int = 0) -> np.ndarray:
    """Return a size x size float frame of Gaussian noise (grey levels) around level."""
    return np.random.default_rng(seed).normal(level, sigma, (size, size))


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Return a size x size bool disc of pixels whose centre is within radius px of centre (row, col)."""
    rows, cols = np.mgrid[:size, :size] + 0.5
    return np.hypot(rows - centre[0], cols - centre[1]) <= radius


def within_a_pixel(mask: np.ndarray, truth: np.ndarray) -> bool:
    """Return True when mask holds truth eroded by one pixel and lies inside truth dilated by one pixel."""
    square = np.ones((3, 3), bool)
    return bool((ndimage.binary_erosion(truth, square) <= mask).all() and (mask <= ndimage.binary_dilation(truth, square)).all())


@pytest.mark.parametrize("contrast", [60, -60])  # a hot and a cold target
def test_pseudo_mask_blob_in_loose_box(contrast):
    blob = disc(48, (24, 24), 3.5)
    grey = np.clip(noise_frame(100, 2) + contrast * blob, 0, 255).astype(np.uint8)
    mask, ignore = pseudo_mask(grey, (14.0, 14.0, 20.0, 20.0))  # box 4x the blob's width
    assert within_a_pixel(mask.astype(bool), blob) and abs(int(mask.sum()) - int(blob.sum())) <= 4
    assert mask.sum() + ignore.sum() == 400 and not (mask & ignore).any()
    assert ignore[:14].sum() == 0 and ignore[:, 34:].sum() == 0  # outside the box: background, counted


def test_pseudo_mask_empty_box_all_ignored():
    grey = np.clip(noise_frame(100, 2), 0, 255).astype(np.uint8)  # floor 8 = 4 sigma: no pixel passes
    mask, ignore = pseudo_mask(grey, (10.5, 12.5, 17.0, 15.0))
    assert mask.sum() == 0 and ignore.sum() == 17 * 15
    rows, cols = box_slices((10.5, 12.5, 17.0, 15.0), grey.shape)
    assert (rows, cols) == (slice(12, 27), slice(10, 27)) and ignore[rows, cols].all()
    assert pseudo_mask(grey, None)[0].sum() == 0 and pseudo_mask(grey, None)[1].sum() == 0  # target absent


def test_pseudo_mask_large_ring_filled():
    ring = disc(64, (32, 32), 14) & ~disc(64, (32, 32), 8)  # an annulus: hot outline, background-level inside
    grey = np.clip(noise_frame(60, 3, size=64) + 90 * ring, 0, 255).astype(np.uint8)
    mask, _ = pseudo_mask(grey, (12.0, 12.0, 40.0, 40.0))
    assert within_a_pixel(mask.astype(bool), disc(64, (32, 32), 14))  # the hole is filled


def test_pseudo_mask_broken_outline_closed():
    outline = disc(64, (32, 32), 14) & ~disc(64, (32, 32), 10)
    outline[:, 31:33] = False  # cut in two by a 2-px gap: the closing (radius round(40 / 16) = 2 px) joins the halves
    grey = np.clip(noise_frame(60, 3, size=64) + 90 * outline, 0, 255).astype(np.uint8)
    mask, _ = pseudo_mask(grey, (12.0, 12.0, 40.0, 40.0))
    assert within_a_pixel(mask.astype(bool), disc(64, (32, 32), 14))


# ----------------------------------------------------------------------------- pseudo-masks on real frames


REAL = DATASETS / "IR-Drone-Video"


@pytest.mark.parametrize(
    "stem, frame, low, high",
    [
        ("IR_AIRPLANE_022", 207, 15, 35),  # 17 x 12 box over a faint cloud band: the engine blob, 23 px
        ("IR_DRONE_112", 128, 24, 45),  # 16 x 15 box, a compact hot drone: 33 px
        ("IR_HELICOPTER_002", 96, 750, 1100),  # 72 x 61 box, the whole silhouette (hull + tail, holes filled): 909 px
    ],
)
def test_pseudo_mask_real_frames(stem, frame, low, high):
    root = need(REAL)
    (item,) = [v for v in index_videos(root, "trainval") if v.stem == stem]
    grey = next(iter_video_frames(item.path, start=frame))[1]
    box = item.labels[frame]
    mask, ignore = pseudo_mask(grey, box)
    rows, cols = box_slices(box, grey.shape)
    assert low <= mask.sum() <= high
    assert mask[rows, cols].sum() == mask.sum() and (mask + ignore)[rows, cols].all()
