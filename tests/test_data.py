"""utils.data: layouts, splits, frame/mask reading, bad inputs named with their fix, the summary CLI, real data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import utils
from tests.conftest import DATASETS, need
from utils import ROOT, data
from utils.data import DataError, IRSTDDataset, index_split, list_split, load_pair, read_frame, read_mask

SIRST = DATASETS / "SIRST-v1"
NUDT = DATASETS / "NUDT-SIRST"


def frame_and_mask(seed: int, height: int = 24, width: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Return a uint8 frame and a 0/255 mask with one 3x3 target."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 200, (height, width), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    r, c = rng.integers(2, height - 3), rng.integers(2, width - 3)
    mask[r - 1 : r + 2, c - 1 : c + 2] = 255
    return frame, mask


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def make_folder(root: Path, n_trainval: int = 10, n_test: int = 4) -> Path:
    for split, n in (("trainval", n_trainval), ("test", n_test)):
        for i in range(n):
            frame, mask = frame_and_mask(i + (100 if split == "test" else 0))
            write(root / split / "images" / f"{split}_{i:03d}.png", frame)
            write(root / split / "masks" / f"{split}_{i:03d}.png", mask)
    return root


def make_sirst(root: Path, n: int = 12) -> Path:
    for i in range(n):
        frame, mask = frame_and_mask(i)
        write(root / "images" / f"Misc_{i}.png", frame)
        write(root / "masks" / f"Misc_{i}_pixels0.png", mask)
        (root / "masks" / f"Misc_{i}.xml").write_text("<annotation/>")  # box annotations: skipped
    (root / "masks" / "Thumbs.db").write_bytes(b"\x00junk")
    names = [f"Misc_{i}" for i in range(n)]
    lists = {"train": names[:6], "val": names[6:9], "test": names[9:], "trainval": names[:9]}
    for folder in ("idx_427", "idx_320"):
        for split, listed in lists.items():
            if folder == "idx_320":
                listed = listed[:-1]
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{split}.txt").write_text(
                "\n".join(listed)
            )  # no newline after the last line, as distributed
    return root


def make_basic(root: Path, name: str = "Toy", n: int = 10) -> Path:
    for i in range(n):
        frame, mask = frame_and_mask(i)
        write(root / "images" / f"{i:06d}.png", frame)
        write(root / "masks" / f"{i:06d}.png", mask)
    (root / "img_idx").mkdir()
    (root / "img_idx" / f"train_{name}.txt").write_text("".join(f"{i:06d}\n" for i in range(7)))
    (root / "img_idx" / f"test_{name}.txt").write_text("".join(f"{i:06d}\n" for i in range(7, n)))
    return root


# ----------------------------------------------------------------------------- layouts and splits


def test_folder_layout_splits_and_carved_val(tmp_path):
    root = make_folder(tmp_path / "ds", n_trainval=20, n_test=5)
    assert data.detect_layout(root) == "folder"
    counts = {s: len(list_split(root, s)[0]) for s in data.SPLITS}
    assert counts == {"train": 18, "val": 2, "test": 5, "trainval": 20}
    train, val = list_split(root, "train")[0], list_split(root, "val")[0]
    assert {s.name for s in train} | {s.name for s in val} == {s.name for s in list_split(root, "trainval")[0]}
    assert not {s.name for s in train} & {s.name for s in val}
    assert all("trainval" in str(s.image) for s in val)  # never from test
    again = list_split(root, "val", val_seed=0)[0]
    assert [s.name for s in again] == [s.name for s in val]
    others = [tuple(s.name for s in list_split(root, "val", val_seed=seed)[0]) for seed in range(1, 6)]
    assert any(o != tuple(s.name for s in val) for o in others)
    assert len(list_split(root, "val", val_fraction=0.25)[0]) == 5
    saved = data.write_names([s.name for s in val], tmp_path / "run" / "val_split.txt")  # as a training run saves it
    assert saved.read_text().split() == [s.name for s in val]


def test_folder_layout_train_val_folders(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "trainval").rename(root / "train")
    frame, mask = frame_and_mask(50)
    write(root / "val" / "images" / "v0.png", frame)
    write(root / "val" / "masks" / "v0.png", mask)
    counts = {s: len(list_split(root, s)[0]) for s in data.SPLITS}
    assert counts == {"train": 10, "val": 1, "test": 4, "trainval": 11}


def test_sirst_devkit_layout(tmp_path):
    root = make_sirst(tmp_path / "sirst")
    assert data.detect_layout(root) == "sirst"
    counts = {s: len(list_split(root, s)[0]) for s in data.SPLITS}
    assert counts == {"train": 6, "val": 3, "test": 3, "trainval": 9}
    counts_320 = {s: len(list_split(root, s, index="idx_320")[0]) for s in data.SPLITS}
    assert counts_320 == {"train": 5, "val": 2, "test": 2, "trainval": 8}
    sample = list_split(root, "test")[0][0]
    assert sample.mask.name == f"{sample.name}_pixels0.png"
    assert IRSTDDataset(root, "val").val_official


def test_basicirstd_layout_and_named_layout(tmp_path):
    root = make_basic(tmp_path / "Toy")
    assert data.detect_layout(root) == "basicirstd"
    counts = {s: len(list_split(root, s, layout="basicirstd")[0]) for s in data.SPLITS}
    assert counts == {"train": 6, "val": 1, "test": 3, "trainval": 7}
    test_names = {s.name for s in list_split(root, "test")[0]}
    assert not test_names & {s.name for s in list_split(root, "val")[0]}


def test_index_split_lists_without_reading_files(tmp_path):
    root = make_sirst(tmp_path / "sirst")
    for split in data.SPLITS:
        assert index_split(root, split) == list_split(root, split)
    bad = root / "images" / "Misc_10.png"
    bad.write_bytes(b"not an image at all")
    (root / "masks" / "Misc_11_pixels0.png").write_bytes(b"")
    with pytest.raises(DataError, match=str(bad)):
        list_split(root, "test")
    samples, warnings = index_split(root, "test")  # unchecked: the caller names and skips the bad frame
    assert [s.name for s in samples] == ["Misc_9", "Misc_10", "Misc_11"] and warnings == []
    assert [s.name for s in index_split(root, "test", "sirst", 0.1, 0, "idx_320")[0]] == ["Misc_9", "Misc_10"]
    folder = make_folder(tmp_path / "ds", n_trainval=20)
    assert index_split(folder, "val", val_seed=3) == list_split(folder, "val", val_seed=3)
    (folder / "trainval" / "images" / "trainval_000.tif").write_bytes(b"junk")
    samples, warnings = index_split(folder, "trainval")
    assert len(samples) == 20 and len(warnings) == 1 and "trainval_000.png" in warnings[0]
    with pytest.raises(ValueError, match="trainval"):
        index_split(folder, "training")


def test_unknown_split_and_layout_name_the_choices(tmp_path):
    root = make_folder(tmp_path / "ds")
    with pytest.raises(ValueError, match="trainval"):
        list_split(root, "training")
    with pytest.raises(ValueError, match="basicirstd"):
        list_split(root, "train", layout="coco")


# ----------------------------------------------------------------------------- bad inputs: each error names the file


def test_missing_root_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        list_split(tmp_path / "nowhere", "train")


def test_release_name_points_to_datasets_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "DATASETS_DIR", tmp_path)
    with pytest.raises(DataError) as error:
        data.resolve_data_root("NUDT-SIRST")
    assert str(tmp_path / "NUDT-SIRST") in str(error.value) and "--data-root" in str(error.value)
    make_folder(tmp_path / "NUDT-SIRST")
    assert data.resolve_data_root("NUDT-SIRST") == tmp_path / "NUDT-SIRST"


def test_missing_masks_folder(tmp_path):
    root = make_folder(tmp_path / "ds")
    for path in (root / "test" / "masks").iterdir():
        path.unlink()
    (root / "test" / "masks").rmdir()
    with pytest.raises(DataError, match=str(root / "test" / "masks")):
        list_split(root, "test")


def test_no_layout_lists_what_was_found(tmp_path):
    (tmp_path / "stuff").mkdir()
    make_folder(tmp_path / "stuff" / "NUDT")
    with pytest.raises(DataError, match="did you mean") as error:
        list_split(tmp_path / "stuff", "train")
    assert "NUDT" in str(error.value)


def test_images_without_masks_are_all_listed(tmp_path):
    root = make_folder(tmp_path / "ds")
    for i in (1, 4, 7):
        (root / "trainval" / "masks" / f"trainval_{i:03d}.png").unlink()
    with pytest.raises(DataError) as error:
        list_split(root, "val")  # even a split that might not hold them: trainval is checked whole
    message = str(error.value)
    assert "3 image(s)" in message
    assert all(f"trainval_{i:03d}.png" in message for i in (1, 4, 7))


def test_split_list_naming_absent_files(tmp_path):
    root = make_sirst(tmp_path / "sirst")
    (root / "idx_427" / "test.txt").write_text("Misc_9\nMisc_404\nMisc_405\n")
    with pytest.raises(DataError) as error:
        list_split(root, "test")
    message = str(error.value)
    assert "Misc_404" in message and "Misc_405" in message and str(root / "idx_427" / "test.txt") in message


@pytest.mark.parametrize("damage", ["zero-byte", "garbage", "truncated", "text"])
def test_unreadable_files_are_named(tmp_path, damage):
    root = make_folder(tmp_path / "ds")
    bad = root / "test" / "images" / "test_002.png"
    good = bad.read_bytes()
    bad.write_bytes(
        {
            "zero-byte": b"",
            "garbage": b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,
            "truncated": good[: len(good) // 2],
            "text": b"not an image at all",
        }[damage]
    )
    with pytest.raises(DataError, match=str(bad)):
        list_split(root, "test")
    with pytest.raises(DataError, match=str(bad)):
        IRSTDDataset(root, "test")
    if damage != "garbage":  # header/tail checks alone catch these without decoding
        with pytest.raises(DataError, match=str(bad)):
            list_split(root, "test", decode=False)


def test_corrupt_mask_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    bad = root / "trainval" / "masks" / "trainval_003.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=str(bad)):
        list_split(root, "trainval")


def test_non_image_files_are_skipped(tmp_path):
    root = make_folder(tmp_path / "ds")
    for folder in ("images", "masks"):
        (root / "trainval" / folder / "Thumbs.db").write_bytes(b"\x00\x01")
        (root / "trainval" / folder / "boxes.xml").write_text("<a/>")
        (root / "trainval" / folder / "notes.txt").write_text("hello")
        (root / "trainval" / folder / "._trainval_000.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    samples, warnings = list_split(root, "trainval")
    assert len(samples) == 10 and warnings == []
    assert len(data.list_images(root / "trainval" / "images")) == 10


def test_mask_same_aspect_resized_with_warning(tmp_path):
    root = make_folder(tmp_path / "ds")
    frame = np.full((22, 32), 10, np.uint8)
    mask = np.zeros((44, 64), np.uint8)
    mask[20:24, 30:34] = 255  # a 4x4 target at twice the size
    write(root / "test" / "images" / "test_001.png", frame)
    bad = write(root / "test" / "masks" / "test_001.png", mask)
    samples, warnings = list_split(root, "test")
    assert len(warnings) == 1 and str(bad) in warnings[0] and "64x44" in warnings[0] and "32x22" in warnings[0]
    sample = next(s for s in samples if s.name == "test_001")
    _, fitted, notes = load_pair(sample)
    assert fitted.shape == (22, 32) and notes == warnings
    assert fitted[10:12, 15:17].all() and fitted.sum() == 4
    assert IRSTDDataset(root, "test").warnings == warnings


def test_mask_other_aspect_is_an_error(tmp_path):
    root = make_folder(tmp_path / "ds")
    bad = write(root / "test" / "masks" / "test_001.png", np.zeros((24, 24), np.uint8))
    with pytest.raises(DataError, match="different aspect ratio") as error:
        list_split(root, "test")
    assert str(bad) in str(error.value) and str(root / "test" / "images" / "test_001.png") in str(error.value)


# ----------------------------------------------------------------------------- frames and masks


def test_eight_bit_is_divided_by_255_exactly(tmp_path):
    array = np.arange(256, dtype=np.uint8).reshape(16, 16)
    frame = read_frame(write(tmp_path / "f.png", array))
    assert frame.dtype == np.float32 and np.array_equal(frame, array.astype(np.float32) / np.float32(255))
    assert frame[0, 0] == 0.0 and frame[-1, -1] == 1.0


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_range_and_percentile(tmp_path, ext):
    rng = np.random.default_rng(0)
    array = rng.integers(1000, 3000, (40, 50)).astype(np.uint16)  # raw 14-bit-like counts
    array[20, 25] = 16383  # a bright target
    path = write(tmp_path / f"f16{ext}", array)
    ranged = read_frame(path)
    np.testing.assert_allclose(ranged, array / 65535.0, rtol=1e-6)
    stretched = read_frame(path, sixteen_bit="percentile")
    low, high = np.percentile(array, [0.5, 99.5])
    np.testing.assert_allclose(stretched, np.clip((array - low) / (high - low), 0, 1), atol=1e-6)
    assert stretched.min() == 0.0 and stretched.max() == 1.0 and stretched[20, 25] == 1.0
    flat = read_frame(write(tmp_path / "flat.png", np.full((8, 8), 500, np.uint16)), sixteen_bit="percentile")
    assert np.array_equal(flat, np.zeros((8, 8), np.float32))  # no division by zero
    with pytest.raises(ValueError, match="percentile"):
        read_frame(path, sixteen_bit="auto")


def imread_grey(path: Path) -> np.ndarray:
    """Return cv2.imread(path, 0) / 255 as float32: the frames the released weights were trained on."""
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / np.float32(255)


def smooth_colour(height: int = 31, width: int = 45) -> np.ndarray:
    """Return a uint8 BGR frame whose three channels differ everywhere (smooth, so a JPEG keeps it colour)."""
    rows, cols = np.mgrid[0:height, 0:width]
    channels = [(rows * 7 + cols) % 256, (cols * 5 + 40) % 256, (rows * 3 + cols * 2 + 90) % 256]
    return np.dstack(channels).astype(np.uint8)


def test_three_channel_grey_frames(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (31, 45), dtype=np.uint8)
    path = write(tmp_path / "g3.png", np.dstack([grey] * 3))
    assert np.array_equal(read_frame(path), grey.astype(np.float32) / 255)  # 3-channel grey: the channel exactly
    assert np.array_equal(read_frame(path), imread_grey(path))
    grey16 = grey.astype(np.uint16) * 257
    assert np.array_equal(read_frame(write(tmp_path / "g16.png", np.dstack([grey16] * 3))), grey16 / np.float32(65535))


@pytest.mark.parametrize("name", ["c3.png", "c4.png", "c3.jpg", "c3.bmp", "c3.tif", "cölour ünïcode.png"])
def test_colour_eight_bit_frames_decode_as_imread_grayscale(tmp_path, name):
    colour = np.random.default_rng(2).integers(0, 256, (31, 45, 3), dtype=np.uint8)
    if name.endswith(".jpg"):
        colour = smooth_colour()
    if name.startswith("c4"):
        colour = np.dstack([colour, np.full((31, 45), 200, np.uint8)])  # BGRA: alpha ignored
    if "ü" in name:  # cv2.imwrite cannot write a non-ASCII path: write, then rename
        path = write(tmp_path / "plain.png", colour).rename(tmp_path / name)
    else:
        path = write(tmp_path / name, colour)
    stored = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored.ndim == 3 and not np.array_equal(stored[..., 0], stored[..., 1])  # really colour on disk
    frame = read_frame(path)
    if "ü" not in name:
        assert np.array_equal(frame, imread_grey(path))
    expected = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32) / np.float32(255)
    assert frame.dtype == np.float32 and np.array_equal(frame, expected)


def test_colour_sixteen_bit_frames_use_bt601(tmp_path):
    colour = np.random.default_rng(3).integers(0, 65536, (31, 45, 3), dtype=np.uint16)
    path = write(tmp_path / "c16.png", colour)
    expected = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32) / np.float32(65535)
    assert np.array_equal(read_frame(path), expected)  # IMREAD_GRAYSCALE would cut it to 8 bits


def test_frame_to_unit_scales_arrays_as_read_frame(tmp_path):
    grey = np.random.default_rng(4).integers(0, 256, (9, 13), dtype=np.uint8)
    assert np.array_equal(data.frame_to_unit(grey), read_frame(write(tmp_path / "g.png", grey)))
    grey16 = grey.astype(np.uint16) * 200
    assert np.array_equal(data.frame_to_unit(grey16, "x", "percentile"), read_frame(write(tmp_path / "g16.png", grey16),
                                                                                      sixteen_bit="percentile"))
    colour = np.random.default_rng(5).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    luma = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32) / np.float32(255)
    assert np.array_equal(data.frame_to_unit(colour), luma)  # no file bytes: BT.601
    with pytest.raises(DataError, match="my frame"):
        data.frame_to_unit(np.full((4, 4), 3.0, np.float32), "my frame")


def test_sirst_v1_colour_frame_matches_imread_grayscale():
    path = need(SIRST / "images" / "Misc_295.png")  # a colour frame where BT.601 cvtColor differs from imread
    frame = read_frame(path)
    assert np.array_equal(frame, imread_grey(path))
    sample = data.Sample("Misc_295", path, SIRST / "masks" / "Misc_295_pixels0.png")
    assert np.array_equal(load_pair(sample)[0], imread_grey(path))


@pytest.mark.parametrize("ext", [".bmp", ".tiff", ".jpg", ".png"])
def test_formats_and_odd_sizes(tmp_path, ext):
    array = np.tile(np.linspace(0, 255, 37).astype(np.uint8), (53, 1))  # 37 wide, 53 high, smooth (JPEG keeps it)
    frame = read_frame(write(tmp_path / f"odd{ext}", array))
    assert frame.shape == (53, 37) and frame.dtype == np.float32
    tolerance = 3 / 255 if ext == ".jpg" else 0
    assert np.abs(frame - array / 255.0).max() <= tolerance + 1e-7


def test_masks_zero_one_zero_255_colour_and_empty(tmp_path):
    mask = np.zeros((9, 11), np.uint8)
    mask[3:5, 4:7] = 1
    for name, stored in (
        ("01", mask),
        ("0255", mask * 255),
        ("rgb", np.dstack([mask * 255] * 3)),
        ("red", np.dstack([np.zeros_like(mask), np.zeros_like(mask), mask * 255])),
    ):
        read = read_mask(write(tmp_path / f"{name}.png", stored))
        assert read.dtype == np.uint8 and np.array_equal(read, mask), name
    empty = read_mask(write(tmp_path / "empty.png", np.zeros((9, 11), np.uint8)))
    assert empty.shape == (9, 11) and empty.sum() == 0


@pytest.mark.parametrize("bad, message", [
    (np.nan, "non-finite values"),
    (np.inf, "non-finite values"),
    (1.5, "values outside [0, 1]"),
    (-0.25, "values outside [0, 1]"),
])
def test_float_tiff_frames_with_bad_values_are_named(tmp_path, capsys, bad, message):
    root = make_folder(tmp_path / "ds")
    frame = np.full((24, 32), 0.5, np.float32)
    frame[5, 6] = bad
    (root / "test" / "images" / "test_002.png").unlink()
    tif = write(root / "test" / "images" / "test_002.tif", frame)
    with pytest.raises(DataError, match=re.escape(message)) as error:
        read_frame(tif)
    assert str(tif) in str(error.value)
    for check in (lambda: list_split(root, "test"), lambda: IRSTDDataset(root, "test", cache=False)):
        with pytest.raises(DataError, match=re.escape(message)):   # found when the split is checked
            check()
    assert data.main(["--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tif) in err and message in err and "warnings: none" not in err
    write(tif, np.clip(np.nan_to_num(frame, posinf=1.0), 0, 1))
    assert np.array_equal(read_frame(tif), np.clip(np.nan_to_num(frame, posinf=1.0), 0, 1))


def test_non_binary_and_whole_frame_masks_warn(tmp_path, capsys):
    root = make_folder(tmp_path / "ds")
    grey = root / "trainval" / "masks" / "trainval_001.png"
    mask = cv2.imread(str(grey), cv2.IMREAD_GRAYSCALE)
    mask[0, :3] = (60, 128, 200)                       # anti-aliased edge: 3 levels besides 0 and 255
    write(grey, mask)
    full = write(root / "test" / "masks" / "test_003.png", np.full((24, 32), 255, np.uint8))
    assert set(np.unique(read_mask(grey))) == {0, 1}   # still read: pixels above half the maximum are target
    _, train_notes = list_split(root, "trainval")
    _, test_notes = list_split(root, "test")
    assert len(train_notes) == 1 and str(grey) in train_notes[0] and "not binary" in train_notes[0]
    assert "3 other level(s)" in train_notes[0]
    assert len(test_notes) == 1 and str(full) in test_notes[0] and "whole 32x24 frame" in test_notes[0]
    assert IRSTDDataset(root, "test").warnings == test_notes
    assert data.main(["--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "warnings (2):" in out and str(grey) in out and str(full) in out


def test_empty_mask_frame_is_a_valid_sample(tmp_path):
    root = make_folder(tmp_path / "ds")
    write(root / "test" / "masks" / "test_000.png", np.zeros((24, 32), np.uint8))
    item = IRSTDDataset(root, "test")[0]
    assert item["name"] == "test_000" and item["mask"].sum() == 0


# ----------------------------------------------------------------------------- dataset, batching, summary


def test_dataset_items_cached_and_uncached_agree(tmp_path):
    root = make_folder(tmp_path / "ds")
    cached, direct = IRSTDDataset(root, "trainval"), IRSTDDataset(root, "trainval", cache=False)
    assert len(cached) == 10 and cached.layout == "folder" and cached.names == direct.names
    for i in (0, 5, 9):
        a, b = cached[i], direct[i]
        assert a["image"].shape == (1, 24, 32) and a["image"].dtype == torch.float32
        assert a["mask"].dtype == torch.float32 and ((a["mask"] == 0) | (a["mask"] == 1)).all() and a["mask"].sum() == 9
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) and a["name"] == b["name"]
        frame, mask = frame_and_mask(i)
        assert torch.equal(a["image"][0], torch.from_numpy(frame.astype(np.float32) / 255))
        assert torch.equal(a["mask"][0], torch.from_numpy((mask > 0).astype(np.float32)))


def test_size_batches_group_by_size(tmp_path):
    root = tmp_path / "ds"
    sizes = [(20, 30), (25, 25), (20, 30), (20, 30), (25, 25), (31, 17)]
    for split in ("trainval", "test"):
        for i, (h, w) in enumerate(sizes):
            write(root / split / "images" / f"{i}.png", np.full((h, w), i, np.uint8))
            write(root / split / "masks" / f"{i}.png", np.zeros((h, w), np.uint8))
    dataset = IRSTDDataset(root, "test")
    assert dataset.sizes == sizes
    batches = data.size_batches(dataset.sizes, 2)
    assert batches == [[0, 2], [3], [1, 4], [5]]  # first appearance of each size, indices ascending
    assert sorted(i for b in batches for i in b) == list(range(6)) and max(map(len, batches)) == 2
    assert all(len({sizes[i] for i in batch}) == 1 for batch in batches)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches)
    assert sum(batch["image"].shape[0] for batch in loader) == 6
    assert data.size_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size"):
        data.size_batches(sizes, 0)
    with pytest.raises(TypeError, match="dataset.sizes"):
        data.size_batches(dataset, 2)


def test_cli_summary_json_and_errors(tmp_path, capsys):
    root = make_folder(tmp_path / "ds")
    assert data.main(["--data-root", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "folder" and summary["splits"] == {"train": 9, "val": 1, "test": 4, "trainval": 10}
    assert summary["warnings"] == [] and summary["targets_per_frame"]["histogram"] == {"1": 14}
    assert summary["target_area_px"]["min"] == 9
    assert data.main(["--data-root", str(root)]) == 0
    assert "layout: folder" in capsys.readouterr().out
    (root / "test" / "masks" / "test_001.png").unlink()
    assert data.main(["--data-root", str(root), "--log-level", "warning"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "test_001.png" in err and "Traceback" not in err
    sirst = make_sirst(tmp_path / "sirst")
    assert data.main(["--data-root", str(sirst), "--index", "idx_320", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["index"] == "idx_320" and summary["splits"]["test"] == 2


def test_cli_module_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "utils.data", "--data-root", str(tmp_path / "absent"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and str(tmp_path / "absent") in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- real data (skipped when absent)


@pytest.fixture(scope="module")
def sirst_sets():
    root = need(SIRST)
    return IRSTDDataset(root, "trainval"), IRSTDDataset(root, "test")  # 341 + 86: every frame decoded once


def test_sirst_v1_all_frames_load(sirst_sets):
    trainval, test = sirst_sets
    assert len(trainval) + len(test) == 427 and trainval.layout == "sirst"
    assert not set(trainval.names) & set(test.names)
    for dataset in sirst_sets:
        for i in range(0, len(dataset), 25):
            item = dataset[i]
            image, mask = item["image"], item["mask"]
            assert image.shape == mask.shape and 0 <= image.min() and image.max() <= 1
            assert ((mask == 0) | (mask == 1)).all() and mask.sum() > 0
    assert min(h for h, w in trainval.sizes + test.sizes) >= 96


def test_sirst_v1_split_counts():
    root = need(SIRST)
    counts = {s: len(list_split(root, s, decode=False)[0]) for s in data.SPLITS}
    assert counts == {"train": 256, "val": 85, "test": 86, "trainval": 341}
    counts_320 = {s: len(list_split(root, s, index="idx_320", decode=False)[0]) for s in data.SPLITS}
    assert counts_320 == {"train": 160, "val": 64, "test": 96, "trainval": 224}


def test_sirst_v1_misc_111_reported_and_resized(sirst_sets):
    _, test = sirst_sets
    assert len(test.warnings) == 1 and "Misc_111_pixels0.png" in test.warnings[0] and "592x400" in test.warnings[0]
    item = test[test.names.index("Misc_111")]
    assert item["image"].shape == (1, 220, 325) and item["mask"].shape == (1, 220, 325) and item["mask"].sum() > 0
    assert sirst_sets[0].warnings == []


def test_nudt_sirst_splits_and_reproducible_val():
    root = need(NUDT)
    trainval, _ = list_split(root, "trainval", decode=False)
    test, _ = list_split(root, "test", decode=False)
    assert len(trainval) == 663 and len(test) == 664
    val = [s.name for s in list_split(root, "val", decode=False)[0]]
    train = [s.name for s in list_split(root, "train", decode=False)[0]]
    assert len(val) == 66 and len(train) == 597 and not set(val) & set(train)
    assert set(val) <= {s.name for s in trainval}
    assert val == [s.name for s in list_split(root, "val", decode=False)[0]]
    assert val != [s.name for s in list_split(root, "val", val_seed=1, decode=False)[0]]
    for sample in trainval[:2] + test[:2]:
        frame, mask, warnings = load_pair(sample)
        stored = cv2.imread(str(sample.image), cv2.IMREAD_UNCHANGED)
        assert frame.shape == (256, 256) and warnings == [] and mask.max() == 1
        assert np.array_equal(frame, stored[..., 0].astype(np.float32) / 255)  # 3-channel grey


def test_a_missing_release_name_in_sources_says_how_sources_takes_a_path(tmp_path, monkeypatch):
    """--sources takes paths, not --data-root: the error of a missing release name says so (run_configs, utils.merge
    --score and utils.verify read --sources through utils.train.setup.source_roots or the same hint)."""
    from utils.train.config import ConfigError, build
    from utils.train.setup import source_roots

    monkeypatch.setattr(utils, "DATASETS_DIR", tmp_path)
    with pytest.raises(ConfigError) as error:
        source_roots(build("general_ft"))
    message = str(error.value)
    assert "--sources entry 'SIRSTv1'" in message and "put its path in --sources (/path/to/SIRSTv1:WEIGHT)" in message
    assert "--data-root" not in message
