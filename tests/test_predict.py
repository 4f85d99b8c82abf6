"""utils.infer.predict and utils.infer.writers: detection, tiles, overlays, batching, and predict_frame on numpy frames."""
import numpy as np
import pytest
import torch

from models import get_model, load_model
from tests.conftest import random_checkpoint
from utils.data.synthetic import make_scene
from utils.infer.device import Predictor
from utils.infer.predict import (
    FramePrediction,
    PredictOptions,
    detect_targets,
    plan_batches,
    predict_frame,
    predict_tiled,
    ramp,
    tile_starts,
)
from utils.infer.writers import BOTH_BGR, DET_BGR, GT_BGR, OVERLAY_GAP_PX, overlay_image


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """Return a random-weight network loaded from a checkpoint, as a user would."""
    return load_model(random_checkpoint(tmp_path_factory.mktemp("predict") / "random.pt"))[0]


def test_detect_targets_known_components():
    prob = np.zeros((12, 16), np.float32)
    prob[2:4, 10:13] = [[0.6, 0.9, 0.7], [0.8, 0.6, 0.6]]  # 2 x 3 block, first in raster order
    prob[5, 1], prob[6, 2], prob[7, 3] = 0.9, 0.7, 0.8  # a diagonal: one 8-connected target
    prob[9:12, 14:16] = 0.55  # touches the border
    prob[0, 0] = 0.5  # exactly 0.5 is not a detection (p > 0.5)
    rows = detect_targets(prob)
    assert [r["target"] for r in rows] == [1, 2, 3]
    block, diagonal, corner = rows
    assert (block["x"], block["y"]) == pytest.approx((11.0, 2.5))
    assert (block["bbox_x"], block["bbox_y"], block["bbox_w"], block["bbox_h"], block["area_px"]) == (10, 2, 3, 2, 6)
    assert block["peak_prob"] == pytest.approx(0.9) and block["mean_prob"] == pytest.approx(4.2 / 6)
    assert (diagonal["x"], diagonal["y"]) == pytest.approx((2.0, 6.0))
    assert (diagonal["bbox_x"], diagonal["bbox_y"], diagonal["bbox_w"], diagonal["bbox_h"]) == (1, 5, 3, 3)
    assert diagonal["area_px"] == 3 and diagonal["mean_prob"] == pytest.approx(0.8)
    assert (corner["x"], corner["y"], corner["area_px"]) == pytest.approx((14.5, 10.0, 6))
    assert detect_targets(np.zeros((5, 5), np.float32)) == []


def test_overlay_colours():
    frame = np.full((20, 20), 0.5, np.float32)
    mask = np.zeros((20, 20), np.uint8)
    mask[3:6, 3:6] = 1  # missed target: green only
    prob = np.zeros((20, 20), np.float32)
    prob[12:15, 12:15] = 0.9  # false alarm: red only
    picture = overlay_image(frame, mask, prob, np.zeros_like(frame))
    assert tuple(picture[3, 3]) == GT_BGR and tuple(picture[4, 4]) == (128, 128, 128)
    assert tuple(picture[12, 12]) == DET_BGR
    both = overlay_image(frame, mask, mask.astype(np.float32), np.ones_like(frame))
    assert tuple(both[3, 3]) == BOTH_BGR
    assert (both[:, 20 + OVERLAY_GAP_PX:] == 255).all()  # D = 1 everywhere -> white


# ----------------------------------------------------------------------------- tiles


def pointwise(x):
    """A stand-in network whose outputs at a pixel depend on that pixel only: tiling must not change them."""
    return 2 * x - 0.3, 8 * (x - 0.5)


@pytest.mark.parametrize("hw, tile, overlap", [((64, 64), 32, 16), ((45, 70), 16, 8), ((37, 29), 24, 0),
                                               ((20, 20), 32, 8)])
def test_tile_blending_is_exact_for_a_pointwise_network(hw, tile, overlap):
    x = torch.rand(1, 1, *hw, generator=torch.Generator().manual_seed(1))
    d, t = predict_tiled(pointwise, x, tile, overlap, batch_size=3)
    ref_d, ref_t = pointwise(x[0, 0])
    torch.testing.assert_close(d, ref_d, atol=1e-6, rtol=0)
    torch.testing.assert_close(t, ref_t, atol=1e-6, rtol=0)


def test_tile_layout_covers_the_frame():
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    assert tile_starts(70, 32, 8) == [0, 24, 38]  # the last tile flush with the end
    assert tile_starts(20, 32, 8) == [0]
    w = ramp(32, 8, rise=True, fall=False)
    assert w[0] == pytest.approx(0.5 / 8) and (w[8:] == 1).all() and (np.diff(w[:9]) > 0).all()


def test_tiled_network_close_to_whole_frame(net):
    """Tiles normalise (GroupNorm) and attend over themselves only, so tiled maps are close, not equal.

    Measured with this random-weight network on this 64 x 64 scene, tile 32, overlap 16:
    max |p_tiled - p_whole| 0.31, 99th percentile 0.21, mean 0.056. A random network puts p near
    0.5 everywhere; a trained one (synthetic scenes, IoU 0.59, 256 x 256 frames, tile 128,
    overlap 64, 8 scenes) gave mean 5.5e-4, 99th percentile 2e-4, 99.9th 0.08, max 1.0 at a few
    target-rim pixels; its tiled maps scored IoU 0.75 against 0.64 whole (it was trained on 64 px crops).
    """
    predictor = Predictor(net, torch.device("cpu"))
    frame, _ = make_scene(0, 64, 64)
    x = torch.from_numpy(frame.astype(np.float32) / 255)[None, None]
    _, t = predictor(x)
    whole = torch.sigmoid(t[0, 0])
    _, t_tiled = predict_tiled(predictor, x, 32, 16, batch_size=4)
    diff = (torch.sigmoid(t_tiled) - whole).abs()
    assert diff.max() < 0.45 and diff.quantile(0.99) < 0.3 and diff.mean() < 0.08
    _, t_one = predict_tiled(predictor, x, 64, 16, batch_size=4)  # one tile = the whole frame
    torch.testing.assert_close(t_one, t[0, 0], atol=1e-6, rtol=0)




# ----------------------------------------------------------------------------- the Python API


def test_predict_frame_on_numpy_frames_of_every_bit_depth(net):
    frame8, _ = make_scene(3, 40, 52)  # uint8, not a multiple of 8
    predictor = Predictor(net, torch.device("cpu"))
    d, t = predictor(torch.from_numpy(frame8.astype(np.float32) / 255)[None, None])
    result = predict_frame(predictor, frame8)
    assert isinstance(result, FramePrediction) and result.prob.shape == result.recon.shape == (40, 52)
    np.testing.assert_allclose(result.prob, torch.sigmoid(t)[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(result.recon, d[0, 0].numpy(), atol=1e-6)
    assert result.detections == detect_targets(result.prob)
    # the same frame as 16 bits (x 257 = the same fraction of the range) and as floats gives the same maps
    frame16 = frame8.astype(np.uint16) * 257
    np.testing.assert_allclose(predict_frame(predictor, frame16).prob, result.prob, atol=1e-6)
    np.testing.assert_allclose(predict_frame(predictor, frame8 / 255.0).prob, result.prob, atol=1e-6)
    # a bare network is wrapped on the fly
    np.testing.assert_allclose(predict_frame(net, frame8, device="cpu").prob, result.prob, atol=1e-6)


def test_predict_frame_refuses_floats_outside_the_unit_range(net):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict_frame(net, np.full((16, 16), 3.0, np.float32), device="cpu")


def test_plan_batches_groups_sizes_and_tiles_alone():
    sizes = {0: (64, 64), 1: (32, 48), 2: (64, 64), 3: (64, 64), 5: (2000, 1000), 6: (32, 48)}
    plan = plan_batches(sizes, PredictOptions(batch_size=2))
    assert plan == [[0, 2], [1, 6], [3], [5]]
    assert plan_batches(sizes, PredictOptions(batch_size=8, tile_above=float("inf"))) == [[0, 2, 3], [1, 6], [5]]


def test_predict_options_refuse_bad_tiles():
    with pytest.raises(ValueError, match="overlap 32"):
        PredictOptions(tile=32, overlap=32)
    with pytest.raises(ValueError, match="multiple of 8"):
        PredictOptions(tile=30, overlap=4)


def test_bf16_on_a_cpu_without_native_support_warns(net, monkeypatch, caplog):
    import utils.infer.device

    monkeypatch.setattr(utils.infer.device, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        Predictor(get_model("LRRNet"), torch.device("cpu"), "bf16")
    assert "no native bfloat16" in caplog.text and "--dtype fp32" in caplog.text
    caplog.clear()
    monkeypatch.setattr(utils.infer.device, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level("WARNING"):
        Predictor(get_model("LRRNet"), torch.device("cpu"), "bf16")
    assert caplog.text == ""
