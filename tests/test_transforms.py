"""utils.data.transforms: every transform keeps the mask exactly binary and aligned with the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.data.transforms import EvalTransform, TrainTransform


def scene(height: int, width: int, seed: int = 0, n_targets: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (frame 1xHxW, mask 1xHxW): frame = 0.5 mask + smooth background in [0, 0.3]: frame > 0.4 is the mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.float32)
    for _ in range(n_targets):  # asymmetric L-shaped targets: any misalignment or wrong flip shows
        r, c = rng.integers(0, height - 3), rng.integers(0, width - 3)
        mask[r : r + 3, c] = 1
        mask[r + 2, c : c + 2] = 1
    background = cv2.resize(
        rng.uniform(0, 0.3, (4, 4)).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
    )
    frame = np.clip(background, 0, 0.3) + 0.5 * mask
    return torch.from_numpy(frame)[None], torch.from_numpy(mask)[None]


def assert_binary_and_aligned(image: torch.Tensor, mask: torch.Tensor) -> None:
    assert image.shape == mask.shape
    assert ((mask == 0) | (mask == 1)).all()
    assert torch.equal((image > 0.4).float(), mask)


CONFIGS = [
    dict(crop_size=32, target_prob=0.5, flip=True, rot90=True),
    dict(crop_size=32, target_prob=1.0, flip=False, rot90=False),
    dict(crop_size=64, target_prob=0.5, flip=True, rot90=True),  # frames smaller than the crop: padded
    dict(crop_size=None, flip=True, rot90=False),
    dict(crop_size=None, flip=False, rot90=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("size", [(48, 48), (37, 53), (50, 29)])
def test_train_transform_keeps_mask_binary_and_aligned(config, size):
    transform = TrainTransform(**config)
    torch.manual_seed(0)
    for seed in range(20):
        image, mask = scene(*size, seed=seed)
        out_image, out_mask = transform(image, mask)
        assert_binary_and_aligned(out_image, out_mask)
        if config["crop_size"]:
            assert out_image.shape == (1, config["crop_size"], config["crop_size"])
        else:
            assert sorted(out_image.shape[-2:]) == sorted(size)
        assert out_mask.sum() <= mask.sum()


def test_padding_keeps_every_pixel_and_fills_zero():
    image, mask = scene(20, 27, seed=3)
    torch.manual_seed(0)
    out_image, out_mask = TrainTransform(crop_size=32, flip=False, rot90=False)(image, mask)
    assert torch.equal(out_image[:, :20, :27], image) and torch.equal(out_mask[:, :20, :27], mask)
    assert out_image[:, 20:].eq(0).all() and out_image[:, :, 27:].eq(0).all() and out_mask[:, 20:].eq(0).all()


def test_base_size_resize_mode_keeps_mask_binary_and_aligned():
    mask = torch.zeros(1, 40, 60)
    mask[0, 5:11, 8:14] = 1  # 6x6 and 4x5 px targets
    mask[0, 25:29, 40:45] = 1
    image = 0.1 + 0.5 * mask
    transform = TrainTransform(crop_size=None, flip=False, rot90=False, base_size=80)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (1, 80, 80) and out_mask.shape == (1, 80, 80)
    assert ((out_mask == 0) | (out_mask == 1)).all()
    expected = cv2.resize(mask[0].numpy(), (80, 80), interpolation=cv2.INTER_NEAREST_EXACT)
    assert np.array_equal(out_mask[0].numpy(), expected)  # nearest at pixel centres, as PIL's NEAREST
    bright = out_image[0] > 0.35  # half-way between background and target: the bilinear frame's edge
    assert (bright != (out_mask[0] > 0)).sum() <= 0.05 * out_mask.sum()  # only ties on the edge (value exactly 0.35)
    resized = TrainTransform(crop_size=32, base_size=64)(image, mask)
    assert resized[0].shape == (1, 32, 32) and ((resized[1] == 0) | (resized[1] == 1)).all()


def test_target_prob_one_always_contains_a_target():
    mask = torch.zeros(1, 200, 300)
    mask[0, 150, 40] = 1  # one pixel target in a large frame
    image = 0.1 + 0.5 * mask
    torch.manual_seed(0)
    always = TrainTransform(crop_size=32, target_prob=1.0)
    assert all(always(image, mask)[1].sum() == 1 for _ in range(50))
    never = TrainTransform(crop_size=32, target_prob=0.0)
    assert sum(int(never(image, mask)[1].sum()) for _ in range(50)) < 10  # a uniform crop holds it ~1.6 % of the time


def test_empty_mask_with_target_prob_falls_back_to_uniform_crop():
    image, mask = torch.rand(1, 50, 50) * 0.3, torch.zeros(1, 50, 50)
    out_image, out_mask = TrainTransform(crop_size=16, target_prob=1.0)(image, mask)
    assert out_image.shape == (1, 16, 16) and out_mask.sum() == 0


def test_flips_and_rot90_reach_all_eight_symmetries():
    image = torch.arange(9.0).reshape(1, 3, 3)
    mask = (image == 1).float()
    seen = set()
    torch.manual_seed(0)
    transform = TrainTransform(crop_size=None)
    for _ in range(200):
        out_image, out_mask = transform(image, mask)
        assert torch.equal(out_mask, (out_image == 1).float())
        seen.add(tuple(out_image.flatten().tolist()))
    assert len(seen) == 8
    flips_only = TrainTransform(crop_size=None, rot90=False)
    assert len({tuple(flips_only(image, mask)[0].flatten().tolist()) for _ in range(100)}) == 4


def test_seeding_reproduces_the_draws():
    image, mask = scene(64, 64, seed=2)
    transform = TrainTransform(crop_size=24)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([transform(image, mask) for _ in range(10)])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*runs))


def test_uint8_and_bool_masks_keep_their_dtype():
    image, mask = scene(40, 40, seed=4)
    for dtype in (torch.uint8, torch.bool, torch.float32):
        out_image, out_mask = TrainTransform(crop_size=48, base_size=44)(image, mask.to(dtype))
        assert out_mask.dtype == dtype and out_mask.shape == (1, 48, 48)


def test_eval_transform_identity_or_resize():
    image, mask = scene(37, 53, seed=5)
    same = EvalTransform()(image, mask)
    assert same[0] is image and same[1] is mask
    out_image, out_mask = EvalTransform(base_size=64)(image, mask)
    assert out_image.shape == (1, 64, 64) and ((out_mask == 0) | (out_mask == 1)).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform(crop_size=0)
    with pytest.raises(ValueError, match="target_prob"):
        TrainTransform(target_prob=1.5)
    with pytest.raises(ValueError, match="shape"):
        TrainTransform()(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))


def test_dataloader_with_workers_reproduces(tmp_path):
    from utils.data import IRSTDDataset
    from utils.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "syn", n_trainval=6, n_test=1, size=(64, 80), seed=0)
    dataset = IRSTDDataset(root, "trainval", transform=TrainTransform(crop_size=48))
    batches = []
    for _ in range(2):
        torch.manual_seed(7)
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2)
        batches.append([(b["image"], b["mask"], b["name"]) for b in loader])
    for (ia, ma, na), (ib, mb, nb) in zip(*batches):
        assert ia.shape == (3, 1, 48, 48) and na == nb and torch.equal(ia, ib) and torch.equal(ma, mb)
