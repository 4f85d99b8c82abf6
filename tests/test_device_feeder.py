"""The device feeder (--loader device): crops are windows of their frames under one of the 8 symmetries, placed by
the CPU path's rules, symmetries drawn uniformly, pasted targets by paste_targets' rules, epochs drawn as the
DataLoader path draws them, and the same seed giving the same batches."""
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

import run_configs
from utils.data.synthetic import EDGE_MARGIN_PX, FAINT_DIAMETER_PX, FAINT_PEAK, MIN_SEPARATION_PX
from utils.data.transforms import TrainTransform
from utils.train import config as cfgs
from utils.train.feeder import DeviceFeeder, paste_targets, random_symmetries, window_sums
from utils.train.setup import setup


class Frames:
    """A train set of given (frame uint8, mask uint8) pairs, items as IRSTDDataset's."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        frame, mask = self.pairs[i]
        return {"image": torch.from_numpy(frame.astype(np.float32) / 255)[None],
                "mask": torch.from_numpy(mask.astype(np.float32))[None]}


def feeder(pairs, size, **kw):
    options = dict(target_prob=0.5, flip=True, rot90=True, copy_paste=0.0, base_size=0) | kw
    return DeviceFeeder(Frames(pairs), size, device=torch.device("cpu"), **options)


def symmetries(a: np.ndarray) -> list[np.ndarray]:
    """Return the 8 images of a square array under the symmetries of the square."""
    return [np.rot90(b, k) for b in (a, a.T) for k in range(4)]


def find_window(crop: np.ndarray, frame: np.ndarray) -> list[tuple[int, int, int]]:
    """Return every (symmetry, top, left) whose window of frame (padded bottom/right with 0) equals crop."""
    size = crop.shape[0]
    padded = np.zeros((max(size, frame.shape[0]), max(size, frame.shape[1])), frame.dtype)
    padded[: frame.shape[0], : frame.shape[1]] = frame
    found = []
    for s, image in enumerate(symmetries(crop)):
        for top in range(padded.shape[0] - size + 1):
            for left in range(padded.shape[1] - size + 1):
                if np.array_equal(padded[top : top + size, left : left + size], image):
                    found.append((s, top, left))
    return found


def test_crops_are_windows_of_their_frame_under_a_symmetry_with_the_mask_alongside():
    rng = np.random.default_rng(0)
    pairs = []
    for h, w in ((30, 40), (24, 24), (17, 29)):     # the last one smaller than the crop: padded with 0
        frame = rng.integers(1, 256, (h, w), dtype=np.uint8)
        mask = (rng.random((h, w)) < 0.1).astype(np.uint8)
        pairs.append((frame, mask))
    f = feeder(pairs, 20)
    frames = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = f.batch(frames, torch.Generator().manual_seed(3))
    assert batch["image"].shape == (6, 1, 20, 20) and "ignore" not in batch
    for k, i in enumerate(frames.tolist()):
        crop = np.rint(batch["image"][k, 0].numpy() * 255).astype(np.uint8)
        windows = find_window(crop, pairs[i][0])
        assert len(windows) == 1, (k, windows)          # random frames: one window and symmetry only
        s, top, left = windows[0]
        mask = batch["mask"][k, 0].numpy().astype(np.uint8)
        padded = np.zeros((max(20, pairs[i][1].shape[0]), max(20, pairs[i][1].shape[1])), np.uint8)
        padded[: pairs[i][1].shape[0], : pairs[i][1].shape[1]] = pairs[i][1]
        assert np.array_equal(symmetries(mask)[s], padded[top : top + 20, left : left + 20])


def test_target_placement_follows_target_prob():
    frame = np.full((64, 64), 50, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[5, 40] = 1                                   # one target pixel
    n = 2000
    frames = torch.zeros(n, dtype=torch.long)
    always = feeder([(frame, mask)], 16, target_prob=1.0).batch(frames, torch.Generator().manual_seed(0))
    assert (always["mask"].sum((1, 2, 3)) == 1).all()
    never = feeder([(frame, mask)], 16, target_prob=0.0).batch(frames, torch.Generator().manual_seed(0))
    # a uniform window (49 x 49 corners) holds (5, 40) for 6 of the tops and 16 of the lefts
    p = 6 / 49 * 16 / 49
    hits = float((never["mask"].sum((1, 2, 3)) == 1).float().mean())
    assert abs(hits - p) < 4 * np.sqrt(p * (1 - p) / n), (hits, p)
    # the CPU path's TrainTransform, the same rule: the same frequency
    torch.manual_seed(0)
    transform, m = TrainTransform(crop_size=16, target_prob=0.0), 1000
    image, target = torch.from_numpy(frame / 255.0).float()[None], torch.from_numpy(mask).float()[None]
    cpu_hits = np.mean([float(transform(image, target)[1].sum()) == 1 for _ in range(m)])
    assert abs(cpu_hits - p) < 4 * np.sqrt(p * (1 - p) / m), (cpu_hits, p)


def test_symmetries_are_drawn_uniformly_from_the_8_or_the_4_flips_as_on_the_cpu_path():
    n = 8000
    x = torch.arange(4.0).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    for flip, rot90, expected in ((True, True, 8), (True, False, 4), (False, True, 8)):
        out = random_symmetries(x, flip, rot90, torch.Generator().manual_seed(1))
        arrangements, counts = torch.unique(out.reshape(n, 4), dim=0, return_counts=True)
        assert len(counts) == expected
        chi2 = float((((counts - n / expected) ** 2) / (n / expected)).sum())
        assert chi2 < 25, chi2           # far above the 99.9 % point of chi2 with 7 degrees of freedom (24.3)
        transform = TrainTransform(crop_size=None, flip=flip, rot90=rot90)
        torch.manual_seed(0)
        cpu = {tuple(transform(x[0], x[0])[0].flatten().tolist()) for _ in range(200)}
        assert cpu == {tuple(a.tolist()) for a in arrangements}     # the same set of arrangements


def test_pasted_targets_keep_paste_targets_rules():
    rng = np.random.default_rng(0)
    b, size = 32, 96
    image = torch.from_numpy(np.rint(rng.normal(100, 5, (b, 1, size, size))).clip(0, 255) / 255).float()
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, 70:73, 70:73] = 1                       # a real target near one corner
    ignore = torch.zeros_like(mask)
    out, pasted = paste_targets(image, mask, ignore, 1.0, torch.Generator().manual_seed(0))
    new = (pasted - mask).numpy()[:, 0] > 0
    counts = []
    for k in range(b):
        labels, n = ndimage.label(new[k], structure=np.ones((3, 3)))
        counts.append(n)
        centres = ndimage.center_of_mass(new[k], labels, range(1, n + 1))
        for row, col in centres:
            assert EDGE_MARGIN_PX - 2 <= row <= size - EDGE_MARGIN_PX + 2
            assert max(abs(row - 71), abs(col - 71)) > MIN_SEPARATION_PX - 2   # away from the real target
        grey = out[k, 0].numpy() * 255
        assert np.allclose(grey, np.rint(grey), atol=1e-3)                     # still 8-bit grey levels
        assert (grey[new[k]] > image[k, 0].numpy()[new[k]] * 255).all()         # brighter where pasted
    assert max(counts) <= 3 and np.mean(np.array(counts) >= 1) > 0.95, counts
    same, _ = paste_targets(image, mask, ignore, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same, image)


def test_faint_pasted_targets_follow_the_cpu_paths_rule():
    rng = np.random.default_rng(0)
    b, size = 32, 96
    image = torch.from_numpy(np.rint(rng.normal(120, 30, (b, 1, size, size))).clip(0, 215) / 255).float()
    mask, ignore = torch.zeros(b, 1, size, size), torch.zeros(b, 1, size, size)
    for faint in (0.0, 1.0):
        out, pasted = paste_targets(image, mask, ignore, 1.0, torch.Generator().manual_seed(0), faint)
        rise = ((out - image) * 255).numpy()[:, 0]
        for k in range(b):
            labels, n = ndimage.label(pasted.numpy()[k, 0] > 0)
            for j in range(1, n + 1):
                top = float(rise[k][labels == j].max())
                area = int((labels == j).sum())
                if faint:
                    assert 1.5 <= top <= FAINT_PEAK[1] + 0.5 and area <= np.pi * (FAINT_DIAMETER_PX[1] * 1.25 / 2) ** 2 + 4
                else:
                    assert top > 50                    # SCR 3-8 of a 30-grey-level clutter


def test_epochs_draw_as_the_dataloader_path_and_repeat_with_the_seed():
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 256, (24, 24), dtype=np.uint8), np.zeros((24, 24), np.uint8)) for _ in range(10)]
    f = feeder(pairs, 16)
    gen = torch.Generator().manual_seed(0)
    once = f.draw(5, 2, 0, 0, 1, False, gen).flatten().tolist()
    assert sorted(once) == list(range(10))                                  # one pass: every frame once
    shares = [f.draw(2, 2, 7, r, 2, False, torch.Generator().manual_seed(r)).flatten().tolist() for r in (0, 1)]
    assert not set(shares[0]) & set(shares[1])                              # ranks share out one pass
    a = list(f.epoch(3, 2, seed=5))
    b = list(f.epoch(3, 2, seed=5))
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"]) for x, y in zip(a, b))


def test_window_sums_equal_the_square_windows_cut_to_the_frame():
    x = torch.from_numpy(np.random.default_rng(0).random((2, 23, 19))).float()
    rows, cols = torch.tensor([[0, 11], [22, 5]]), torch.tensor([[0, 9], [3, 18]])
    total, count = window_sums(x, rows, cols, 3)
    for b in range(2):
        for k in range(2):
            r, c = int(rows[b, k]), int(cols[b, k])
            window = x[b, max(0, r - 3) : r + 4, max(0, c - 3) : c + 4]
            assert count[b, k] == window.numel() and torch.isclose(total[b, k].float(), window.sum(), atol=1e-5)


def test_loader_device_needs_square_crops(tmp_path):
    cfg = cfgs.build("synthetic", {"loader": "device", "crop_size": 0, "device": "cpu", "out": str(tmp_path / "run")})
    with pytest.raises(cfgs.ConfigError, match="--loader device cuts square crops"):
        setup(cfg, None, False, "error")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_synthetic_config_on_the_device_path_reaches_val_iou_above_half(tmp_path):
    assert run_configs.main(["--config", "synthetic", "--loader", "device", "--device", "cpu",
                             "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"]["val"]["iou"] > 0.5, summary["best"]       # as the DataLoader path (tests/test_train.py)
