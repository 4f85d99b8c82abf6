"""The CUDA paths: the authors' fixture on the GPU, bf16, compile, CUDA graphs, a training step, inference.py.

Marked ``cuda`` and skipped without a CUDA device; ``make gpu-check`` runs them on a GPU machine.
"""
import copy

import numpy as np
import pytest
import torch

import inference
from models import get_model, load_model
from tests.conftest import FIXTURES, need, random_checkpoint
from utils import ROOT
from utils.data.synthetic import make_scene, write_dataset
from utils.infer.device import Predictor
from utils.train.losses import LRRLoss

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make gpu-check)")]
FIXTURE_TOLERANCE = 2e-3  # as on the CPU (tests/test_models.py)


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32 in these comparisons: no TF32 in cuDNN convolutions or matrix products."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def release():
    weights = torch.load(need(FIXTURES / "lrrnet_official_format_random_weights.pth"), map_location="cpu",
                         weights_only=True)
    return weights, np.load(need(FIXTURES / "lrrnet_official_format_io.npz"))


def test_release_fixture_reproduced_on_the_gpu(release):
    weights, io = release
    net = get_model("LRRNet")
    net.load_state_dict(weights)
    predictor = Predictor(net, torch.device("cuda"), "fp32")
    for case in ("sirst_misc1_256", "random_2x128x192"):
        d, t = predictor(torch.from_numpy(io[f"x_{case}"]))
        np.testing.assert_allclose(d.cpu().numpy(), io[f"background_{case}"], atol=FIXTURE_TOLERANCE, rtol=0)
        np.testing.assert_allclose(t.cpu().numpy(), io[f"target_logits_{case}"], atol=FIXTURE_TOLERANCE, rtol=0)


def scene_batch(n: int = 2, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    frames, masks = zip(*(make_scene(seed, size, size) for seed in range(n)))
    x = torch.from_numpy(np.stack(frames)).float()[:, None] / 255
    return x, torch.from_numpy(np.stack(masks)).float()[:, None]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_keeps_the_probabilities(dtype):
    # trained weights (random ones amplify rounding); on the CPU, bf16 against fp32 gives mean |dp| 7e-5 and flips
    # 5 of 110 target pixels at p = 0.5 on these scenes
    net, _ = load_model(need(ROOT / "checkpoints" / "lrrnet_sirst_v1.pt"))
    x, _ = scene_batch()
    _, t32 = Predictor(copy.deepcopy(net), torch.device("cuda"), "fp32")(x)
    _, t16 = Predictor(copy.deepcopy(net), torch.device("cuda"), dtype)(x)  # bf16 casts the weights it is given
    p32, p16 = torch.sigmoid(t32), torch.sigmoid(t16)
    assert (p16 - p32).abs().mean().item() < 1e-3
    assert ((p16 > 0.5) != (p32 > 0.5)).sum().item() <= 0.1 * (p32 > 0.5).sum().item() + 2


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"], ids=["compile", "cuda_graphs"])
def test_compiled_and_graph_paths_match_eager(release, mode):
    weights, _ = release
    net = get_model("LRRNet")
    net.load_state_dict(weights)
    eager = Predictor(net, torch.device("cuda"), "fp32")
    x, _ = scene_batch()
    _, t_eager = eager(x)
    compiled = Predictor(get_model("LRRNet"), torch.device("cuda"), "fp32")
    compiled.net.load_state_dict(weights)
    compiled.run = torch.compile(compiled.net, mode=mode)
    for _ in range(3):  # CUDA graphs are recorded on a later call; every call must give the same maps
        _, t = compiled(x)
        assert (t - t_eager).abs().max().item() < 1e-3


def test_training_steps_with_autocast_and_channels_last_lower_the_loss():
    torch.manual_seed(0)
    device = torch.device("cuda")
    net = get_model("LRRNet").to(device).train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = LRRLoss()
    x, y = scene_batch(4, 64)
    x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            d, t = net(x)
        loss = loss_fn(d.float(), t.float(), x, y)
        loss = loss[0] if isinstance(loss, tuple) else loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])  # CPU: 1.86 -> 1.69


def test_inference_on_the_gpu_writes_the_cpu_maps(tmp_path):
    root = write_dataset(tmp_path / "data", n_trainval=2, n_test=3, size=(64, 64), seed=2)
    ckpt = random_checkpoint(tmp_path / "random.pt")
    maps = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert inference.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--device", device,
                               "--out", str(out), "--quiet"]) == 0
        maps[device] = {p.name: p.read_bytes() for p in sorted((out / "img").iterdir())}
    assert maps["cpu"].keys() == maps["cuda"].keys()
    import cv2
    for name in maps["cpu"]:
        a, b = (cv2.imdecode(np.frombuffer(maps[d][name], np.uint8), cv2.IMREAD_UNCHANGED).astype(int)
                for d in ("cpu", "cuda"))
        assert np.abs(a - b).max() <= 1  # round(255 p): one grey level at most
