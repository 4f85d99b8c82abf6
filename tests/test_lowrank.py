"""utils.lowrank: effective rank and energy fractions of known spectra, and the command end to end on synthetic frames."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import random_checkpoint
from utils import lowrank
from utils.data.synthetic import write_dataset


def spectrum(matrix) -> np.ndarray:
    return lowrank.singular_values(torch.as_tensor(matrix, dtype=torch.float64)).numpy()


# ----------------------------------------------------------------------------- effective rank


@pytest.mark.parametrize("n", [1, 4, 17])
def test_effective_rank_of_identity_is_n(n):
    assert lowrank.effective_rank(spectrum(np.eye(n))) == pytest.approx(n, rel=1e-12)


def test_effective_rank_of_rank_one_is_one():
    rng = np.random.default_rng(0)
    matrix = np.outer(rng.standard_normal(30), rng.standard_normal(40))  # rank 1, 30 x 40
    assert lowrank.effective_rank(spectrum(matrix)) == pytest.approx(1.0, abs=1e-9)


def test_effective_rank_of_two_equal_singular_values_is_two():
    assert lowrank.effective_rank(np.array([3.0, 3.0, 0.0, 0.0])) == pytest.approx(2.0, rel=1e-12)
    matrix = np.diag([5.0, 5.0, 0.0])
    assert lowrank.effective_rank(spectrum(matrix)) == pytest.approx(2.0, rel=1e-9)


def test_effective_rank_by_hand_and_scale_invariant():
    s = np.array([2.0, 1.0, 1.0])  # p = 1/2, 1/4, 1/4: entropy 1.5 ln 2 -> erank 2 ** 1.5
    assert lowrank.effective_rank(s) == pytest.approx(2 ** 1.5, rel=1e-12)
    assert lowrank.effective_rank(7 * s) == pytest.approx(2 ** 1.5, rel=1e-12)


def test_effective_rank_of_zero_spectrum_is_nan_and_batches_work():
    out = lowrank.effective_rank(np.array([[0.0, 0.0], [1.0, 1.0]]))
    assert math.isnan(out[0]) and out[1] == pytest.approx(2.0)


# ----------------------------------------------------------------------------- energy fractions


def test_energy_fractions_of_a_hand_made_spectrum():
    s = np.array([4.0, 2.0, 1.0, 1.0] + [0.5] * 8)  # energies 16, 4, 1, 1, 8 x 0.25: total 24
    assert lowrank.energy_fraction(s, 1) == pytest.approx(16 / 24)
    assert lowrank.energy_fraction(s, 5) == pytest.approx(22.25 / 24)
    assert lowrank.energy_fraction(s, 10) == pytest.approx(23.5 / 24)
    assert lowrank.energy_fraction(s[:3], 5) == pytest.approx(1.0)  # fewer than k values: all the energy
    assert lowrank.energy_fraction(s[::-1], 1) == pytest.approx(16 / 24)  # order does not matter


def test_spectrum_metrics_of_channels_are_channel_means_and_skip_zero_channels():
    channels = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # eranks 2, 1; the zero one left out
    out = lowrank.spectrum_metrics(channels)
    assert out["effective_rank"] == pytest.approx(1.5)
    assert out["energy_top1"] == pytest.approx((0.5 + 1.0) / 2)


def test_centring_removes_the_mean_level():
    matrix = torch.full((1, 8, 8), 0.3, dtype=torch.float64)  # a constant: rank 1, nothing left once centred
    raw, centred = lowrank.matrix_spectra(matrix)
    assert lowrank.effective_rank(raw[0]) == pytest.approx(1.0)
    assert np.allclose(centred, 0)
    assert math.isnan(lowrank.spectrum_metrics(centred)["effective_rank"])


def test_pick_frames_spreads_evenly():
    assert lowrank.pick_frames(10, None) == list(range(10))
    assert lowrank.pick_frames(10, 3) == [0, 4, 9] or lowrank.pick_frames(10, 3) == [0, 5, 9]
    assert lowrank.pick_frames(3, 8) == [0, 1, 2]


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Return (dataset root with 3 synthetic 48 x 64 test frames, random-weight checkpoint path)."""
    tmp = tmp_path_factory.mktemp("lowrank")
    root = write_dataset(tmp / "data", n_trainval=2, n_test=3, size=(48, 64), seed=0)
    return root, random_checkpoint(tmp / "random.pt")


@pytest.mark.slow
def test_command_writes_csv_json_and_png(setup, tmp_path, capsys):
    root, ckpt = setup
    out = tmp_path / "out"
    code = lowrank.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--split", "test", "--out", str(out),
                         "--device", "cpu", "--quiet"])
    assert code == 0
    with open(out / "lowrank.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(lowrank.KINDS)
    assert {r["kind"] for r in rows} == set(lowrank.KINDS)
    assert len({r["frame"] for r in rows}) == 3
    for r in rows:
        assert (int(r["height"]), int(r["width"]), int(r["n_singular"])) == (48, 64, 48)
        assert int(r["channels"]) == (16 if r["kind"] in ("shallow", "background") else 1)
        assert 1.0 <= float(r["effective_rank"]) <= 48.0
        assert 0.0 < float(r["energy_top1"]) <= float(r["energy_top5"]) <= float(r["energy_top10"]) <= 1.0
    report = json.loads((out / "lowrank.json").read_text())
    assert {"kinds", "fraction_D_below_frame", "fraction_background_below_shallow", "verdict",
            "D_lower_rank_than_frame", "n_frames", "definitions"} <= set(report)
    assert report["n_frames"] == 3 and set(report["kinds"]) == set(lowrank.KINDS)
    assert {"mean", "median"} == set(report["kinds"]["frame"]["effective_rank"])
    assert 0.0 <= report["fraction_D_below_frame"] <= 1.0
    assert (out / "spectra.png").stat().st_size > 1000
    assert (out / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
    printed = capsys.readouterr().out
    assert "lower-rank than the frame" in printed and "| background |" in printed


def test_frames_option_limits_the_frames(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "out"
    assert lowrank.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out), "--frames", "2",
                         "--device", "cpu", "--quiet"]) == 0
    assert json.loads((out / "lowrank.json").read_text())["n_frames"] == 2


def test_missing_checkpoint_is_one_line_and_exit_2(setup, tmp_path, capsys):
    root, _ = setup
    code = lowrank.main(["--checkpoint", str(tmp_path / "absent.pt"), "--data-root", str(root), "--out",
                         str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "absent.pt" in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_data_root_is_one_line_and_exit_2(setup, tmp_path, capsys):
    _, ckpt = setup
    code = lowrank.main(["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "nowhere"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "nowhere" in err[0]
