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
from models import load_checkpoint
from utils import ROOT
from utils.train import config as cfgs
from utils.train.losses import LRRLoss, soft_iou_loss

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


def test_every_named_config_builds():
    for name, (description, values) in cfgs.CONFIGS.items():
        cfg = cfgs.build(name)                   # every value type- and range-checked, unknown keys refused
        assert cfg.config_name == name and description and all(getattr(cfg, k) == v for k, v in values.items())


def test_precedence_defaults_named_command_line():
    cfg = cfgs.build("nudt", cfgs.parse_overrides(["--epochs", "50", "--lr=2e-4", "--batch-size", "4"]))
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.base_size, cfg.weight_decay) == (50, 2e-4, 4, 512, 0.0)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "many"], "'many' is not an integer"),
    (["--learning-rate", "1e-3"], "valid options: --base-size, --batch-size"),
    (["--dtype", "fp8"], "choose one of auto, fp32, bf16, fp16"),
    (["--amp", "off"], "--amp is now --dtype; choose one of auto, fp32, bf16, fp16"),
    (["--flip", "maybe"], "true or false"),
    (["--no-flip", "true"], "takes no value"),
    (["--epochs"], "expected one argument"),
    (["--val-every", "0"], "out of range: x >= 1"),
    (["--target-prior", "1"], "out of range: 0 <= x < 1"),
    (["--batch-size", "0"], "out of range"),
    (["--lr", "0"], "out of range: x > 0"),
    (["--lr", "nan"], "must be a finite number"),
    (["--lr", "inf"], "must be a finite number"),
    (["--grad-clip=-inf"], "must be a finite number"),
    (["--device", "cdua"], "not a device"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_overrides_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert run_main(["--config", "synthetic", "--out", out, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_help_lists_every_field_with_type_default_choices_and_range(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")   # one line per option
    with pytest.raises(SystemExit) as stop:
        run_main(["--help"])
    assert stop.value.code == 0
    blocks = capsys.readouterr().out.split("\n  -")   # one block per option: its flags, then its help

    def line_of(key):
        found = ["-" + " ".join(block.split()) for block in blocks if block.startswith(cfgs.flag(key)[1:] + " ")]
        assert len(found) == 1, (key, found)
        return found[0]

    assert len(cfgs.FIELDS) == 60
    for key, f in cfgs.FIELDS.items():
        kind = cfgs.FIELD_TYPES[key]
        default = str(f.default).lower() if kind is bool else repr(f.default) if kind is str else f"{f.default:g}"
        assert f"[{kind.__name__}; default {default}" in line_of(key), key
        assert len(f.metadata["help"]) > 10, key
    assert "choices poly, cosine, constant" in line_of("schedule")
    assert "--dtype {auto,fp32,bf16,fp16}" in line_of("dtype")
    assert "range x >= 1" in line_of("epochs")
    assert "range 0 <= x < 1" in line_of("val_fraction")
    assert "range x > 0" in line_of("lr")
    assert "--compile [true|false], --no-compile" in line_of("compile")


@pytest.mark.parametrize("argv, expected", [
    ([], False), (["--compile"], True), (["--no-compile"], False), (["--compile", "false"], False),
    (["--compile", "true"], True), (["--compile=yes"], True), (["--compile", "--no-compile"], False),
])
def test_boolean_options(argv, expected):
    args, rest = run_configs.build_parser().parse_known_args(["--config", "synthetic", *argv])
    assert run_configs.resolve(args, rest).compile is expected


def test_dtype_option_and_old_configs_with_amp(tmp_path):
    from utils.train.state import compute_dtype
    assert cfgs.build("synthetic", cfgs.parse_overrides(["--dtype", "bf16"])).dtype == "bf16"
    assert cfgs.build("sirstv1_cpu").dtype == "fp32"
    cpu = torch.device("cpu")
    assert [compute_dtype(name, cpu) for name in ("auto", "fp32", "bf16")] == [torch.float32, torch.float32,
                                                                              torch.bfloat16]
    # a config.json written before --dtype existed: amp off/auto/bf16/fp16
    for amp, dtype in (("off", "fp32"), ("auto", "auto"), ("bf16", "bf16"), ("fp16", "fp16")):
        old = cfgs.build("synthetic").to_dict()
        del old["dtype"]
        old["amp"] = amp
        (tmp_path / "config.json").write_text(json.dumps(old))
        assert cfgs.load(tmp_path / "config.json") == cfgs.build("synthetic", {"dtype": dtype})
    # the shipped checkpoints store such configs
    for path in sorted((ROOT / "checkpoints").glob("*.pt")):
        config = load_checkpoint(path)["config"]
        want = {"off": "fp32"}.get(config["amp"], config["amp"]) if "amp" in config else config["dtype"]
        assert cfgs.from_dict(config).dtype == want


def test_non_finite_values_in_a_config_file_are_refused(tmp_path):
    values = cfgs.build("synthetic").to_dict()
    values["lr"] = float("nan")
    (tmp_path / "config.json").write_text(json.dumps(values))   # json writes NaN
    with pytest.raises(cfgs.ConfigError, match="--lr nan must be a finite number"):
        cfgs.load(tmp_path / "config.json")


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


# the smallest real run: 1 step, 8 generated 32 x 32 frames (4 for test); seconds on a busy 2-core CPU
SMALL = ["--config", "synthetic", "--synthetic-frames", "8", "--synthetic-size", "32", "--epochs", "1",
         "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "32", "--device", "cpu"]


def small_data(root):
    from utils.data.synthetic import write_dataset
    return write_dataset(root, n_trainval=8, n_test=4, size=(32, 32))


@pytest.mark.slow
def test_out_folder_holding_a_run_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()                                              # an empty folder is fine
    (out / "notes.txt").write_text("mine")                   # so are files no run writes
    assert run_main([*SMALL, "--out", out]) == 0
    first = {name: (out / name).read_bytes() for name in ("config.json", "last.pt", "summary.json")}
    capsys.readouterr()
    assert run_main([*SMALL, "--lr", "1e-3", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already holds a run" in err and f"--resume {out}" in err and "--overwrite" in err
    assert {name: (out / name).read_bytes() for name in first} == first
    assert run_main(["--resume", out, "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert run_main([*SMALL, "--lr", "1e-3", "--out", out, "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    assert (out / "notes.txt").read_text() == "mine" and (out / "train.log").read_text().count("training ") == 1


def test_bad_test_frame_is_refused_before_anything_is_written(tmp_path, capsys):
    root = small_data(tmp_path / "data")
    bad = sorted((root / "test" / "masks").iterdir())[1]
    bad.write_bytes(b"not a png")
    out = tmp_path / "run"
    assert run_main([*SMALL, "--no-synthetic", "--data-root", root, "--out", out]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists()


def test_dataset_warnings_are_logged_once(tmp_path, capsys):
    import cv2
    root = small_data(tmp_path / "data")
    grey = sorted((root / "trainval" / "masks").iterdir())[0]
    mask = cv2.imread(str(grey), cv2.IMREAD_GRAYSCALE)
    mask[0, 0] = 100
    cv2.imwrite(str(grey), mask)
    full = sorted((root / "test" / "masks").iterdir())[0]
    cv2.imwrite(str(full), np.full((32, 32), 255, np.uint8))
    out = tmp_path / "run"
    assert run_main([*SMALL, "--no-synthetic", "--data-root", root, "--out", out]) == 0
    err, log = capsys.readouterr().err, (out / "train.log").read_text()
    for path, words in ((grey, "is not binary"), (full, "whole 32x32 frame")):
        assert err.count(f"mask {path} {words}") == 1 or err.count(f"mask {path} marks the {words}") == 1, err
        assert log.count(str(path)) == 1


def test_truncated_last_pt_is_named_with_the_way_on(tmp_path, capsys):
    from tests.conftest import random_checkpoint
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfgs.build("synthetic").to_dict()))
    whole = random_checkpoint(tmp_path / "whole.pt").read_bytes()
    (out / "last.pt").write_bytes(whole[: len(whole) // 3])
    assert run_main(["--resume", out]) == 2
    err = capsys.readouterr().err
    assert str(out / "last.pt") in err and "no loadable best.pt" in err and len(err.strip().splitlines()) == 1
    random_checkpoint(out / "best.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run_main(["--resume", out]) == 2
    err = capsys.readouterr().err
    assert str(out / "last.pt") in err and f"--init {out / 'best.pt'}" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    torch.save({"model": torch.load(out / "best.pt")["model"]}, out / "last.pt")   # weights only: no training state
    assert run_main(["--resume", out]) == 2
    assert "not a training checkpoint (no optimizer" in capsys.readouterr().err


def test_init_with_non_finite_weights_is_refused(tmp_path, capsys):
    from tests.conftest import random_checkpoint
    path, out = random_checkpoint(tmp_path / "diverged.pt"), tmp_path / "run"
    ckpt = torch.load(path)
    ckpt["model"]["out_conv.weight"][0, 0, 0, 0] = float("inf")
    torch.save(ckpt, path)
    assert run_main([*SMALL, "--init", path, "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"--init {path}: checkpoint {path} holds non-finite weights" in err and "first out_conv.weight" in err
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


@pytest.mark.slow
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


@pytest.mark.slow
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

    config = json.loads((broken / "config.json").read_text())   # as runs of earlier versions wrote it
    config["amp"] = {"fp32": "off"}.get(config.pop("dtype"), "auto")
    (broken / "config.json").write_text(json.dumps(config))
    assert run_main(["--resume", broken]) == 0
    a = load_checkpoint(whole / "last.pt")
    b = load_checkpoint(broken / "last.pt")
    assert a["epoch"] == b["epoch"] == epochs
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.slow
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
    from utils.train.setup import build_network
    torch.manual_seed(7)
    source = get_model("LRRNet").state_dict()
    torch.save(source, tmp_path / "release_format.pth")   # a raw state_dict, as the release publishes
    overrides = cfgs.parse_overrides([str(a) for a in TINY[2:]])
    cfg = cfgs.build("synthetic", dict(overrides, init=str(tmp_path / "release_format.pth"), target_prior=0.01))
    got = build_network(cfg, torch.device("cpu")).state_dict()
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


# ----------------------------------------------------------------------------- the train state


def test_train_state_round_trip(tmp_path):
    from models import get_model
    from utils.checkpoint import atomic_save
    from utils.train.state import TrainState
    cfg = cfgs.build("synthetic", {"ema_decay": 0.9, "epochs": 3})
    x = torch.rand(2, 1, 32, 32)

    def step(state):
        d, t = state.net(x)
        loss = torch.sigmoid(t).mean() + d.mean()
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        state.ema.update_parameters(state.net)

    torch.manual_seed(0)
    a = TrainState(cfg, get_model("LRRNet", dropout=0.0), steps_per_epoch=4)
    for _ in range(2):     # Adam's moments, the schedule and the EMA away from their start
        step(a)
    a.epoch, a.best, a.best_epoch, a.nonfinite_in_row = 2, 0.5, 1, 1
    a.history.append({"epoch": 1, "loss": 0.25})
    atomic_save(a.state_dict(), tmp_path / "state.pt")

    torch.manual_seed(1)
    b = TrainState(cfg, get_model("LRRNet", dropout=0.0), steps_per_epoch=4)
    b.load_state_dict(load_checkpoint(tmp_path / "state.pt"))   # through torch.save / weights_only load

    def same(x, y):
        if isinstance(x, torch.Tensor):
            return torch.equal(x, y)
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y

    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert same(sa[key], sb[key]), key
    assert (b.epoch, b.best, b.best_epoch, b.nonfinite_in_row, b.lr) == (2, 0.5, 1, 1, a.lr)
    step(a)
    step(b)                # and they go on alike
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key]), key


def test_non_finite_losses_skip_steps_then_stop_with_a_command_to_go_on(tmp_path, capsys, monkeypatch):
    from utils.train import loop as engine

    class NanLoss(engine.LRRLoss):
        def forward(self, d, t, image, mask, ignore=None):
            loss, parts = super().forward(d, t, image, mask, ignore)
            return loss * float("nan"), parts

    monkeypatch.setattr(engine, "LRRLoss", NanLoss)
    out = tmp_path / "run"
    # 3 steps an epoch, patience 4: epoch 1 skips all 3 and is saved, epoch 2 stops at its first step
    assert run_main([*TINY, "--epochs", 3, "--nan-patience", 4, "--out", out]) == 1
    err = capsys.readouterr().err
    assert "4 non-finite steps in a row at epoch 2" in err
    assert "python run_configs.py --config synthetic" in err and f"--init {out / 'last.pt'}" in err
    assert "--lr 0.0002" in err and "--grad-clip 1.0" in err   # 10x below the config's 2e-3, clipped
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 1 and last["history"][0]["skipped"] == 3 and last["nonfinite_in_row"] == 3
    assert last["scheduler"]["last_epoch"] == 3   # the schedule stepped once for each skipped iteration
