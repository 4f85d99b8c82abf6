"""The network: the authors' weights load and reproduce their outputs; any size; gradients; counts."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from models import get_model
from models.summary import count_macs, count_parameters
from tests.conftest import FIXTURES, need
from utils import ROOT
from utils.infer.device import Predictor

CASES = ("sirst_misc1_256", "random_2x128x192")
TOLERANCE = 2e-3  # the authors' fixture: float32 outputs of order 1-4, within 2e-3 absolute (docs/network.md)


@pytest.fixture(scope="module")
def release_weights():
    return torch.load(need(FIXTURES / "lrrnet_official_format_random_weights.pth"), map_location="cpu",
                      weights_only=True)


@pytest.fixture(scope="module")
def release_io():
    return np.load(need(FIXTURES / "lrrnet_official_format_io.npz"))


@pytest.mark.parametrize("options", [{}, {"attention": "explicit", "channels_last": False}], ids=["fast", "reference"])
@pytest.mark.parametrize("case", CASES)
def test_release_fixture_reproduced(release_weights, release_io, options, case):
    net = get_model("LRRNet", **options).eval()
    net.load_state_dict(release_weights, strict=True)
    with torch.no_grad():
        d, t = net(torch.from_numpy(release_io[f"x_{case}"]))
    np.testing.assert_allclose(d.numpy(), release_io[f"background_{case}"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(t.numpy(), release_io[f"target_logits_{case}"], atol=TOLERANCE, rtol=0)


def test_parameter_names_are_the_releases():
    keys = [line.split("\t")[0] for line in need(FIXTURES / "lrrnet_official_format_keys.txt").read_text().splitlines()]
    assert sorted(get_model("LRRNet").state_dict()) == sorted(keys)


def test_parameter_count_exact():
    assert count_parameters(get_model("LRRNet")) == 3_454_994


def test_multiply_adds_match_the_paper_figures():
    macs = count_macs(get_model("LRRNet"), 512, 512)
    assert macs["attention"] == 2 * 4096 ** 2 * 128      # 4,096 positions at 1/8, 128 channels
    assert abs(macs["conv"] / 1e9 - 45.5) < 0.1


@pytest.mark.parametrize("shape", [(1, 1, 221, 325), (3, 1, 1, 1), (2, 1, 37, 8)])
def test_any_size_gives_outputs_of_the_input_size(shape):
    torch.manual_seed(0)
    net = get_model("LRRNet").eval()
    with torch.no_grad():
        d, t = net(torch.rand(shape))
    assert d.shape == t.shape == shape
    assert torch.isfinite(d).all() and torch.isfinite(t).all()


def test_padding_leaves_multiples_of_8_untouched():
    torch.manual_seed(0)
    net = get_model("LRRNet").eval()
    x = torch.rand(1, 1, 64, 40)
    assert net._pad(x) is x
    assert net._pad(torch.rand(1, 1, 65, 41)).shape[-2:] == (72, 48)


def test_sdpa_equals_explicit_attention():
    torch.manual_seed(0)
    fast = get_model("LRRNet").eval()
    ref = get_model("LRRNet", attention="explicit", channels_last=False).eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        for a, b in zip(fast(x), ref(x)):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = get_model("LRRNet").train()
    d, t = net(torch.rand(2, 1, 32, 48))
    (d.square().mean() + t.sigmoid().mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert missing == []


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"got shape \(1, 3, 8, 8\)"):
        get_model("LRRNet")(torch.rand(1, 3, 8, 8))


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="LRRNet"):
        get_model("UNet")


def test_predictor_returns_float32_maps_of_the_input_size():
    torch.manual_seed(0)
    net = get_model("LRRNet").eval()
    x = torch.rand(1, 1, 60, 70)
    with torch.no_grad():
        _, t_net = net(x)
    _, t32 = Predictor(net, torch.device("cpu"), "fp32")(x)
    torch.testing.assert_close(t32, t_net)
    _, t16 = Predictor(get_model("LRRNet"), torch.device("cpu"), "bf16")(x)
    assert t16.dtype == torch.float32 and t16.shape == x.shape and torch.isfinite(t16).all()


@pytest.mark.slow
def test_full_hd_frame_peak_memory_under_3_gb():
    """A 1080 x 1918 frame in eval, fp32, CPU: peak resident memory of the whole process (measured)."""
    code = (
        "import resource, torch; from models import get_model; torch.set_grad_enabled(False);"
        "net = get_model('LRRNet').eval(); d, t = net(torch.rand(1, 1, 1080, 1918));"
        "import json; print(json.dumps({'shape': list(t.shape),"
        " 'peak_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 1, 1080, 1918]
    assert result["peak_gb"] < 3.0, result


def test_unknown_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="width_mults"):
        get_model("LRRNet", widths=(16, 32))


def test_more_levels_pad_to_their_own_multiple():
    net = get_model("LRRNet", width_mults=(1, 2, 4, 8, 8)).eval()
    with torch.no_grad():
        d, t = net(torch.rand(1, 1, 24, 40))
    assert t.shape == (1, 1, 24, 40)
