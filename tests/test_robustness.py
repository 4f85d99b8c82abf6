"""utils.robustness: the noise model, determinism by seed, and sigma 0 equal to the clean scoring."""
import json

import numpy as np
import pytest

import cal_from_mask
import inference
from tests.conftest import random_checkpoint
from utils.data.synthetic import write_dataset
from utils.robustness import add_noise, main, unit_noise


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Return (dataset root, random-weight checkpoint): 4 synthetic 64 x 64 test frames."""
    tmp = tmp_path_factory.mktemp("robustness")
    root = write_dataset(tmp / "data", n_trainval=4, n_test=4, size=(64, 64), seed=0)
    return root, random_checkpoint(tmp / "random.pt")


def test_noise_is_fixed_by_seed_and_name():
    a = unit_noise("Misc_1", (8, 9), seed=0)
    assert a.dtype == np.float32 and a.shape == (8, 9)
    np.testing.assert_array_equal(a, unit_noise("Misc_1", (8, 9), seed=0))
    assert not np.array_equal(a, unit_noise("Misc_1", (8, 9), seed=1))
    assert not np.array_equal(a, unit_noise("Misc_2", (8, 9), seed=0))


def test_add_noise_scale_clip_and_quantisation():
    frame = np.full((200, 200), 128 / 255, np.float32)
    z = unit_noise("flat", frame.shape, seed=0)
    assert add_noise(frame, 0, z) is frame  # sigma 0: the clean frame, untouched
    noisy = add_noise(frame, 10, z)
    assert np.std(noisy * 255) == pytest.approx(10, rel=0.03)  # sigma in grey levels
    np.testing.assert_array_equal(noisy * 255, np.rint(noisy * 255))  # re-quantised to 8 bits
    floats = add_noise(frame, 10, z, quantise=False)
    np.testing.assert_allclose(floats, frame + 10 / 255 * z, atol=1e-6)
    dark = add_noise(np.zeros((50, 50), np.float32), 30, unit_noise("dark", (50, 50), 0))
    assert dark.min() == 0.0 and dark.max() <= 1.0 and (dark == 0).mean() > 0.4  # clipped at 0
    with pytest.raises(ValueError):
        add_noise(frame, -1, z)


def run(data, out, *extra):
    root, ckpt = data
    code = main(["--checkpoint", str(ckpt), "--data-root", str(root), "--split", "test", "--out", str(out),
                 "--sigmas", "10", "30", "--quiet", "--batch-size", "1", *extra])
    assert code == 0
    return json.loads((out / "robustness.json").read_text())


@pytest.mark.slow
def test_deterministic_and_sigma_zero_equals_clean_scoring(data, tmp_path, capsys):
    first = run(data, tmp_path / "a")
    assert "| sigma (/255) |" in capsys.readouterr().out
    assert [level["sigma"] for level in first["levels"]] == [0.0, 10.0, 30.0]
    again = run(data, tmp_path / "b")
    for x, y in zip(first["levels"], again["levels"]):
        for key in ("iou", "niou", "pd", "fa", "n_targets"):
            assert x[key] == pytest.approx(y[key], abs=1e-9)
    scores = [(level["iou"], level["fa"], level["auc"]) for level in first["levels"]]
    assert len(set(scores)) == 3  # each noise level changes the maps

    root, ckpt = data
    pred = tmp_path / "pred"
    assert inference.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(pred), "--quiet",
                           "--batch-size", "1", "--dtype", "fp32"]) == 0  # same batches: a random network's maps hover near 0.5
    assert cal_from_mask.main(["--pred", str(pred), "--data-root", str(root), "--workers", "0"]) == 0
    clean = json.loads((pred / "metrics.json").read_text())
    for key in ("iou", "niou", "precision", "recall", "pd", "fa", "auc", "n_images", "n_targets"):
        assert first["levels"][0][key] == pytest.approx(clean[key], abs=1e-9), key
