"""Training: configs and overrides, the loss preset, convergence, SIGKILL + resume, DDP on gloo."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import run_configs
from utils import config as cfgs
from utils.checkpoint import load_checkpoint
from utils.losses import LRRLoss, soft_iou_loss
from tests.conftest import ROOT

# a tiny synthetic run: seconds per epoch on a 2-core CPU
TINY = ["--config", "synthetic", "--synthetic-frames", "24", "--synthetic-size", "64", "--crop-size", "48",
        "--batch-size", "4", "--steps-per-epoch", "3", "--val-every", "1", "--deterministic", "true"]


def run_main(argv):
    return run_configs.main([str(a) for a in argv])


# ----------------------------------------------------------------------------- config


def test_list_names_every_config(capsys):
    assert run_main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in cfgs.CONFIGS:
        assert name in out


def test_precedence_defaults_named_command_line():
    cfg = cfgs.build("nudt", cfgs.parse_overrides(["--epochs", "50", "--lr=2e-4", "--batch-size", "4"]))
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.base_size, cfg.weight_decay) == (50, 2e-4, 4, 512, 0.0)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "many"], "expected a value of type int"),
    (["--learning-rate", "1e-3"], "valid keys"),
    (["--amp", "fp8"], "choose one of auto, off, bf16, fp16"),
    (["--flip", "maybe"], "true or false"),
    (["--epochs"], "needs a value"),
    (["--val-every", "0"], "out of range"),
    (["--target-prior", "1"], "out of range"),
    (["--batch-size", "0"], "out of range"),
    (["--device", "cdua"], "not a device"),
])
def test_bad_overrides_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert run_main(["--config", "synthetic", "--out", out, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_config_and_resume_together_are_refused(tmp_path, capsys):
    assert run_main(["--config", "synthetic", "--resume", tmp_path]) == 2
    assert "not both" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_no_run_is_refused(tmp_path, capsys):
    assert run_main(["--resume", tmp_path]) == 2
    assert "no config.json and last.pt" in capsys.readouterr().err


def test_missing_data_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["--config", "sirstv1_cpu", "--data-root", tmp_path / "nowhere", "--out", out]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------- loss


def test_release_preset_equals_the_release_formula_on_a_hand_made_batch():
    t = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[-2.0, -2.0], [1.0, 0.0]]]], requires_grad=True)
    d = torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]], [[[0.5, 0.6], [0.7, 0.8]]]], requires_grad=True)
    image = torch.tensor([[[[0.0, 0.2], [0.4, 0.4]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    p = 1 / (1 + np.exp(-t.detach().numpy()))
    m = mask.numpy()
    ious = [((p[i] * m[i]).sum() + 1) / (p[i].sum() + m[i].sum() - (p[i] * m[i]).sum() + 1) for i in range(2)]
    soft_iou = 1 - np.mean(ious)
    fraction = (t.detach().numpy() > 0).mean()                  # 3 of 8 logits are positive
    mse = ((d.detach().numpy() - image.numpy()) ** 2).mean()
    expected = soft_iou + (0.8 * soft_iou + 0.2 * fraction) + 0.1 * mse
    total, parts = LRRLoss("release")(d, t, image, mask)
    assert fraction == 3 / 8
    assert total.item() == pytest.approx(expected, rel=1e-6)
    # what trains is 1.8 SoftIoU + 0.1 MSE: the fraction has no gradient
    total.backward()
    g_t, g_d = t.grad.clone(), d.grad.clone()
    t.grad = d.grad = None
    (1.8 * soft_iou_loss(t, mask) + 0.1 * torch.nn.functional.mse_loss(d, image)).backward()
    torch.testing.assert_close(g_t, t.grad)
    torch.testing.assert_close(g_d, d.grad)


def test_weighted_l1_term_has_a_gradient():
    t = torch.zeros(1, 1, 4, 4, requires_grad=True)
    total, parts = LRRLoss("weighted", w_softiou=0.0, w_l1=1.0, w_mse=0.0)(t.detach(), t, t.detach(), t.detach())
    total.backward()
    assert parts["l1"].item() == pytest.approx(0.5)
    assert torch.allclose(t.grad, torch.full_like(t, 0.25 / 16))   # d mean(sigmoid) / dt at 0


# ----------------------------------------------------------------------------- runs


def test_synthetic_config_reaches_val_iou_above_half(tmp_path):
    assert run_main(["--config", "synthetic", "--out", tmp_path / "run"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best"]["val"]["iou"] > 0.5, summary["best"]
    for name in ("config.json", "train.log", "val_split.txt", "best.pt", "last.pt"):
        assert (tmp_path / "run" / name).is_file()
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "best_metric", "config", "code_revision"):
        assert key in ckpt
    assert set(ckpt["model"]) == set(load_checkpoint(tmp_path / "run" / "last.pt")["model"])


def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path):
    epochs = 4
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_main([*TINY, "--epochs", epochs, "--out", whole]) == 0

    cmd = [sys.executable, "run_configs.py", *TINY, "--epochs", str(epochs), "--out", str(broken)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:       # wait for epoch 1 to be saved
        if (broken / "last.pt").exists() and load_checkpoint(broken / "last.pt")["epoch"] >= 1:
            break
        time.sleep(0.2)
    time.sleep(0.5)                                             # into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(broken / "last.pt")["epoch"]
    assert 1 <= killed_at < epochs, "the run must be killed mid-way for this test to mean anything"

    assert run_main(["--resume", broken]) == 0
    a = load_checkpoint(whole / "last.pt")
    b = load_checkpoint(broken / "last.pt")
    assert a["epoch"] == b["epoch"] == epochs
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_torchrun_two_processes_on_gloo_keep_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "run_configs.py", *TINY, "--steps-per-epoch", "0",   # one pass: DistributedSampler shares the frames
           "--epochs", "2", "--device", "cpu", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["ddp_max_weight_diff"] == 0.0
    assert summary["best"]["test"]["n_images"] == summary["n_test"]


# ----------------------------------------------------------------------------- --init (fine-tuning)


def test_init_starts_from_the_given_weights(tmp_path):
    from models import get_model
    from utils.engine import Run
    torch.manual_seed(7)
    source = get_model("LRRNet").state_dict()
    torch.save(source, tmp_path / "release_format.pth")   # a raw state_dict, as the release publishes
    overrides = cfgs.parse_overrides([str(a) for a in TINY[2:]])
    cfg = cfgs.build("synthetic", dict(overrides, init=str(tmp_path / "release_format.pth"), target_prior=0.01))
    run = Run(cfg, tmp_path / "run")
    got = run.net.state_dict()
    assert set(got) == set(source)
    for key, value in source.items():   # every tensor, the target head's bias included (no prior applied over it)
        assert torch.equal(got[key].cpu(), value), key


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a checkpoint", "could not be read"),
    ({"out_conv.weight": torch.zeros(3)}, "does not fit LRRNet"),
])
def test_bad_init_is_refused_before_anything_is_written(tmp_path, capsys, content, message):
    path, out = tmp_path / "init.pt", tmp_path / "run"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    assert run_main([*TINY, "--init", path, "--out", out]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err
    assert not out.exists()
