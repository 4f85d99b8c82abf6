"""utils.data.synthetic: deterministic scenes, exact masks, targets of the promised size and contrast, a readable dataset."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from utils.data import IRSTDDataset, list_split, synthetic
from utils.data.synthetic import make_scene, write_dataset


def components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Return (number of 8-connected targets, their areas in px, their label image)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return count - 1, stats[1:, cv2.CC_STAT_AREA], labels


def test_same_seed_same_scene_other_seed_other_scene():
    frame, mask = make_scene(11)
    again, mask_again = make_scene(11)
    assert np.array_equal(frame, again) and np.array_equal(mask, mask_again)
    other, _ = make_scene(12)
    assert not np.array_equal(frame, other)


def test_types_shapes_and_binary_mask():
    frame, mask = make_scene(0, height=96, width=160)
    assert frame.shape == mask.shape == (96, 160)
    assert frame.dtype == np.uint8 and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert frame.std() > 1  # not a flat frame


@pytest.mark.parametrize("n_targets", [0, 1, 3, 5])
def test_requested_number_of_targets(n_targets):
    for seed in range(5):
        _, mask = make_scene(seed, n_targets=n_targets)
        assert components(mask)[0] == n_targets


def test_random_target_count_and_sizes():
    counts, areas = [], []
    for seed in range(40):
        _, mask = make_scene(seed)
        n, area, _ = components(mask)
        counts.append(n)
        areas += area.tolist()
    assert set(counts) == {1, 2, 3, 4, 5}
    # half-maximum diameter 3-9 px, ellipse axes x0.8-1.25: area between ~pi*(1.5*0.8)^2 and pi*(4.5*1.25)^2 px
    assert min(areas) >= 2 and max(areas) <= 110
    assert 10 <= np.median(areas) <= 50


def test_targets_stand_out_from_local_clutter():
    """Each target is brighter than its surroundings by several local standard deviations (SCR 3-8),
    and its mask edge is a level line: mask pixels are brighter than the 1-px ring just outside."""
    ratios, edges = [], []
    for seed in range(30):
        frame, mask = make_scene(seed)
        n, _, labels = components(mask)
        image = frame.astype(np.float32)
        for k in range(1, n + 1):
            target = labels == k
            ring = cv2.dilate(target.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
            ring &= ~(cv2.dilate(target.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
            contrast = (image[target].max() - image[ring].mean()) / (image[ring].std() + 1e-6)
            ratios.append(contrast)
            border = (cv2.dilate(target.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~target
            edges.append(image[target].mean() > image[border].mean())
    ratios = np.array(ratios)
    assert np.mean(ratios > 1.5) > 0.9 and np.median(ratios) > 3
    assert np.mean(edges) > 0.95


def test_write_dataset_is_read_by_the_dataset_class(tmp_path):
    root = write_dataset(tmp_path / "syn", n_trainval=12, n_test=4, size=(64, 96), seed=3)
    assert (root / "synthetic.json").is_file()
    train = IRSTDDataset(root, "trainval")
    assert train.layout == "folder" and len(train) == 12 and train.warnings == []
    assert len(list_split(root, "test")[0]) == 4
    item = train[0]
    assert item["image"].shape == (1, 64, 96)
    frame, mask = make_scene(synthetic._scene_seed(3, 0, 0), 64, 96)
    assert np.array_equal(item["mask"][0].numpy(), mask.astype(np.float32))
    assert np.array_equal(item["image"][0].numpy(), frame.astype(np.float32) / 255)
    again = write_dataset(tmp_path / "again", n_trainval=12, n_test=4, size=(64, 96), seed=3)
    for path in sorted((root / "test" / "images").iterdir()):
        assert path.read_bytes() == (again / "test" / "images" / path.name).read_bytes()
    names_test = {p.name for p in (root / "test" / "images").iterdir()}
    assert not names_test & {p.name for p in (root / "trainval" / "images").iterdir()}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_targets"):
        make_scene(0, n_targets=9)
    with pytest.raises(ValueError, match="too small"):
        make_scene(0, height=16, width=16)
