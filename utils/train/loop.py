"""The training loop of run_configs.py: train a run epoch by epoch, validate, checkpoint, test.

Setup (data, network, run folder, resume checks): ``utils.train.setup``; validation: ``utils.train.validate``.

A run lives in one folder: config.json, train.log, TensorBoard events (tb/), val_split.txt,
last.pt and best.pt (written atomically after every epoch), and summary.json at the end.
Every epoch reseeds all RNGs from (seed, epoch, rank), so a run resumed from last.pt follows
the same path as one that was never interrupted. Under torchrun every rank runs this code
(DistributedDataParallel, gloo on the CPU, NCCL on GPUs); rank 0 alone writes files.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from models import get_model, load_checkpoint
from utils.checkpoint import (
    FORMAT_VERSION,
    atomic_save,
    code_revision,
    interrupts_deferred,
    rng_state,
    set_rng_state,
    unwrap,
)
from utils.data.mixture import MixedTrainSet
from utils.eval.metrics import THRESHOLD, plain
from utils.files import write_json
from utils.infer.device import autocast
from utils.infer.predict import default_batch_size
from utils.train.config import TrainConfig, command_line
from utils.train.log import EpochLog
from utils.train.losses import LOSS_PARTS, LRRLoss
from utils.train.mining import mine_hard_negatives
from utils.train.setup import (
    Run,
    barrier,
    close_run_log,
    epoch_seed,
    for_training,
    read_last,
    seed_everything,
    setup,
    train_loader,
)
from utils.train.state import TrainState
from utils.train.validate import evaluate, val_batch, validate

__all__ = ["Interrupted", "NonFiniteLoss", "train", "train_one_epoch"]
log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Raised after cfg.nan_patience non-finite losses or gradients in a row; the message says how to go on."""


class Interrupted(Exception):
    """Ctrl-C stopped the run; the message says what was kept and how to go on."""


# ----------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, run_dir: Path | None = None, resume: bool = False, log_level: str = "info",
          overwrite: bool = False, progress: bool = True) -> dict:
    """Train a run (new, or resumed from RUN/last.pt) to cfg.epochs; score best.pt and last.pt on test; return the summary.

    A new run refuses a folder that already holds one (utils.train.config.ConfigError) unless overwrite, which
    removes the old run's files once everything has been checked. Ctrl-C raises Interrupted, whose message says
    which epoch last.pt holds and how to resume. progress=False: no progress bars.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    epoch_log = run = None
    saved = 0   # epochs held by last.pt
    started = time.monotonic()      # --time-budget counts from here: setup and loading are part of the window
    try:
        run, net, last = setup(cfg, run_dir, resume, log_level, overwrite, progress)   # all checked before any write
        cfg = run.cfg
        state = TrainState(run.cfg, net, run.steps, run.dtype)
        if resume:
            resume_from(state, run, last)
            saved = state.epoch
        if isinstance(run.train_set, MixedTrainSet):
            run.train_set.hard_points = state.hard_points    # restored by resume: the same crops as before
        model = for_training(net, run)                       # DDP and torch.compile wrappers
        loss_fn = LRRLoss(cfg.loss, cfg.w_softiou, cfg.w_l1, cfg.w_mse, cfg.w_fa, cfg.fa_topk)
        epoch_log = EpochLog(run.dir, cfg.epochs, cfg.image_every, enabled=run.main)
        log.info("training %s on %s for %d epochs of %d steps (batch %d x %d), %s, device %s", cfg.config_name,
                 run.root, cfg.epochs, run.steps, cfg.batch_size, run.world, run.dtype, run.device)
        bar = tqdm(total=cfg.epochs, initial=state.epoch, desc="run", disable=not run.bars, dynamic_ncols=True)
        longest, stopped = 0.0, None      # the longest epoch so far (validation included), s; why the run stopped
        while state.epoch < cfg.epochs:
            epoch_start = time.monotonic()
            mined = mine_if_due(state, run)
            stats = train_one_epoch(model, state, loss_fn, run)
            stats.update(mined)
            state.epoch += 1
            stopped = out_of_time(cfg, started, max(longest, time.monotonic() - epoch_start), run.world)
            due = state.epoch % cfg.val_every == 0 or state.epoch == cfg.epochs or stopped is not None
            val = validate(state, run) if due else None
            improved = state.record(stats, val)
            with interrupts_deferred():         # a Ctrl-C during the writes lands after them, with saved up to date
                save_checkpoints(state, run, val, improved)
                saved = state.epoch
            epoch_log(state, run.val_set, run.device)
            bar.update(1)
            bar.set_postfix(best=f"{state.best:.3f}@{state.best_epoch}")
            longest = max(longest, time.monotonic() - epoch_start)
            if stopped is not None and state.epoch < cfg.epochs:
                log.info("%s: stopped after epoch %d of %d (best val %.4f at epoch %d); resume with --resume %s",
                         stopped, state.epoch, cfg.epochs, state.best, state.best_epoch, run.dir)
                break
            stopped = None
        bar.close()
        barrier(run.world)
        return score_on_test(state, run, stopped, (time.monotonic() - started) / 60)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_note(run, saved, cfg.epochs, run_dir if resume else None)) from None
    finally:
        if epoch_log is not None:
            epoch_log.close()
        close_run_log()
        torch.use_deterministic_algorithms(deterministic)
        if dist.is_initialized():
            dist.destroy_process_group()


def interrupted_note(run: Run | None, saved: int, epochs: int, resumed: Path | None = None) -> str:
    """Return what an interrupted run kept and how to go on, in one line (resumed: the folder of a --resume)."""
    if run is None and resumed is not None:
        return f"stopped before training went on: {resumed} is as it was; go on with: python run_configs.py --resume {resumed}"
    if run is None:
        return ("stopped while setting the run up, before any epoch: nothing to resume; start it again (with "
                "--overwrite if its --out already holds generated scenes)")
    if saved == 0:
        return (f"stopped in the first epoch: {run.dir} holds no checkpoint yet; start again (add --overwrite to "
                "reuse that --out)")
    rest = (f"the {saved} epochs are trained, summary.json is not written" if saved >= epochs
            else f"{run.dir / 'last.pt'} holds epoch {saved} of {epochs}")
    return f"{rest}; go on with: python run_configs.py --resume {run.dir}"


def out_of_time(cfg: TrainConfig, started: float, epoch_s: float, world: int = 1) -> str | None:
    """Return why the run must stop now under --time-budget (another epoch of epoch_s seconds would not fit),
    or None; every rank takes rank 0's answer."""
    if not cfg.time_budget:
        return None
    stop = torch.tensor([float(time.monotonic() - started + epoch_s > cfg.time_budget * 60)])
    if world > 1:
        dist.broadcast(stop, src=0)
    return f"time budget of {cfg.time_budget:g} min" if stop.item() else None


def train_one_epoch(model: nn.Module, state: TrainState, loss_fn: LRRLoss, run: Run) -> dict:
    """Train one epoch; return its mean losses, the last lr, frames/s and the number of skipped steps."""
    cfg = run.cfg
    seed_everything(epoch_seed(cfg, state.epoch, run.rank))
    model.train()
    loader = train_loader(cfg, run.train_set, state.epoch, run.rank, run.world, run.device, run.feeder)
    sums = torch.zeros(1 + len(LOSS_PARTS), dtype=torch.float64, device=run.device)  # loss and parts, on the device
    n_frames, n_steps, start = 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", disable=not run.bars, leave=False,
               dynamic_ncols=True, total=run.steps)
    for batch in bar:
        image = batch["image"].to(run.device, non_blocking=True)
        mask = batch["mask"].to(run.device, non_blocking=True)
        ignore = batch["ignore"].to(run.device, non_blocking=True) if "ignore" in batch else None
        if cfg.noise_prob > 0:
            image = add_training_noise(image, cfg.noise_prob, cfg.noise_sigma)
        with autocast(run.device, run.dtype):
            d, t = model(image)
        loss, parts = loss_fn(d, t, image, mask, ignore)
        skipped = optimisation_step(loss, state, cfg.grad_clip, run.world)
        state.scheduler.step()                # the schedule follows iterations, taken or skipped
        if skipped:
            count_skipped(state, run, skipped)
            continue
        state.nonfinite_in_row = 0
        sums += torch.stack([loss.detach(), *(parts[k] for k in LOSS_PARTS)]).double()
        n_frames += image.shape[0] * run.world
        n_steps += 1
        if n_steps % 5 == 1:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{state.lr:.2e}",
                            fps=f"{n_frames / (time.perf_counter() - start):.1f}")
    means = dict(zip(("loss", *LOSS_PARTS), (sums / max(1, n_steps)).tolist()))
    return {**means, "lr": state.lr, "fps": n_frames / (time.perf_counter() - start), "skipped": run.steps - n_steps}


def add_training_noise(image: torch.Tensor, prob: float, sigma_max: float) -> torch.Tensor:
    """Return the batch with white Gaussian noise on each frame with probability prob, sigma ~ U(0, sigma_max) / 255."""
    shape = (image.shape[0],) + (1,) * (image.ndim - 1)
    on = torch.rand(shape, device=image.device) < prob
    sigma = torch.rand(shape, device=image.device) * (sigma_max / 255.0)
    return torch.where(on, (image + sigma * torch.randn_like(image)).clamp(0.0, 1.0), image)


def mine_if_due(state: TrainState, run: Run) -> dict:
    """Every cfg.hard_negatives epochs (from the first such epoch on), re-mine the model's false alarms on the
    training frames and centre crops on them; return {"hard_frames", "hard_points"} for the epoch's record."""
    cfg, train = run.cfg, run.train_set
    if not (cfg.hard_negatives and isinstance(train, MixedTrainSet)):
        return {}
    if state.epoch > 0 and state.epoch % cfg.hard_negatives == 0:
        state.hard_points = mine_hard_negatives(state.net, train, run.device, run.dtype, THRESHOLD,
                                                cfg.hard_negative_frames, epoch_seed(cfg, state.epoch, 0),
                                                default_batch_size(run.device), progress=run.bars)
        train.hard_points = state.hard_points
        log.info("epoch %d: %d false alarms on %d training frames mined", state.epoch + 1,
                 sum(len(v) for v in state.hard_points.values()), len(state.hard_points))
    return {"hard_frames": len(state.hard_points), "hard_points": sum(len(v) for v in state.hard_points.values())}


def optimisation_step(loss: torch.Tensor, state: TrainState, grad_clip: float = 0.0, world: int = 1) -> str | None:
    """Backpropagate, clip to grad_clip (0: no clipping) and step, update the EMA; return None, or why it skipped."""
    state.optimizer.zero_grad(set_to_none=True)
    if not all_ranks_finite(loss, world):
        return "non-finite loss"
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    norm = nn.utils.clip_grad_norm_(state.net.parameters(), grad_clip or float("inf"))
    if not state.scaler.is_enabled() and not all_ranks_finite(norm, world):
        return "non-finite gradients"         # (the fp16 GradScaler skips such steps itself)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update_parameters(state.net)
    return None


def count_skipped(state: TrainState, run: Run, why: str) -> None:
    """Count a skipped step; raise NonFiniteLoss after cfg.nan_patience of them in a row (across epochs)."""
    state.nonfinite_in_row += 1
    log.warning("epoch %d: %s, step skipped (%d in a row)", state.epoch + 1, why, state.nonfinite_in_row)
    if state.nonfinite_in_row < run.cfg.nan_patience:
        return
    cfg, last = run.cfg, run.dir / "last.pt"
    again = command_line(replace(cfg, lr=cfg.lr / 10, grad_clip=cfg.grad_clip or 1.0,
                                 dtype="fp32" if run.dtype != torch.float32 else cfg.dtype))
    start = f"--init {last} " if last.is_file() else ""
    raise NonFiniteLoss(
        f"{state.nonfinite_in_row} non-finite steps in a row at epoch {state.epoch + 1}: the run is diverging. "
        f"Start a new run from its last saved weights with a 10x lower learning rate and gradient clipping: "
        f"python run_configs.py {' '.join(again)} {start}--out {run.dir}_retry")


# ----------------------------------------------------------------------------- validation and test


def score_on_test(state: TrainState, run: Run, stopped: str | None = None, minutes: float | None = None) -> dict:
    """Score best.pt and last.pt once on the test split; write summary.json (rank 0) and return it.

    ``stopped``: why the run ended before cfg.epochs (--time-budget), recorded as "stopped_early";
    ``minutes``: the wall-clock time until now (setup and training). A pack without the test split
    leaves "test" None (``python -m utils.train.window --score-test`` scores it later).
    """
    cfg, test = run.cfg, run.test_set     # checked at setup, its warnings logged there
    summary = {"config": cfg.config_name, "run_dir": str(run.dir), "epochs": state.epoch, "data_root": str(run.root),
               "n_test": len(test) if test is not None else 0, "code_revision": code_revision(),
               "world_size": run.world}
    if stopped is not None:
        summary["stopped_early"] = stopped
    if minutes is not None:
        summary["train_minutes"] = round(minutes, 2)
    if run.world > 1:
        summary["ddp_max_weight_diff"] = rank_weight_difference(state.net, run.device, run.world)
    for tag in ("best", "last"):
        path = run.dir / f"{tag}.pt"
        exists = [path.exists()]
        if run.world > 1:       # rank 0 decides: other ranks may not share its file system
            dist.broadcast_object_list(exists, src=0)
        if not exists[0]:
            continue
        ckpt = load_checkpoint(path)
        net = get_model(cfg.model, channels_last=cfg.channels_last).to(run.device)
        net.load_state_dict(ckpt["model"])
        scores = None if test is None else evaluate(net, test, run.device, run.rank, run.world, progress=run.progress,
                                                    batch_size=val_batch(run))
        last_val = next((r["val"] for r in reversed(ckpt["history"]) if "val" in r), None)
        summary[tag] = {"epoch": ckpt["epoch"], "weights": ckpt["selected_weights"],
                        "val": last_val[ckpt["selected_weights"]] if last_val else None,
                        "test": plain(scores.compute()) if scores is not None else None}
    if run.main:
        write_json(run.dir / "summary.json", summary)
        for tag in ("best", "last"):
            if tag in summary and summary[tag]["test"] is not None:
                s, t = summary[tag], summary[tag]["test"]
                log.info("%s (epoch %d, %s weights): test IoU %.4f nIoU %.4f Pd %.4f Fa %.2fe-6 F1 %.4f",
                         tag, s["epoch"], s["weights"], t["iou"], t["niou"], t["pd"], t["fa"] * 1e6, t["f1"])
    return summary


# ----------------------------------------------------------------------------- checkpoints


def checkpoint(state: TrainState, run: Run, selected: str = "raw") -> dict:
    """Return a checkpoint: the training state with the raw or EMA weights under "model", plus run metadata."""
    ckpt = state.state_dict()
    if selected == "ema":
        ckpt["model"] = state.ema.module.state_dict()
    ckpt.update({
        "format_version": FORMAT_VERSION, "selected_weights": selected,
        "model_name": run.cfg.model, "model_hparams": unwrap(state.net).hparams(),
        "amp_dtype": str(run.dtype), "rng": rng_state(), "config": run.cfg.to_dict(), "code_revision": code_revision(),
        "val_names": run.val_set.names, "data_root": str(run.root),
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": str(torch.__version__),
        "device": torch.cuda.get_device_name(run.device) if run.device.type == "cuda" else f"cpu x{os.cpu_count()}",
        "world_size": run.world,
    })
    return ckpt


def save_checkpoints(state: TrainState, run: Run, val: dict | None, improved: bool) -> None:
    """Write best.pt (the selected weights) when val IoU improved, then last.pt (raw weights); rank 0 only."""
    if not run.main:
        return
    if improved:   # best.pt first: a kill between the two writes never leaves last.pt ahead of best.pt
        best = checkpoint(state, run, val["selected"])
        best["val"] = val
        atomic_save(best, run.dir / "best.pt")
    atomic_save(checkpoint(state, run), run.dir / "last.pt")


def resume_from(state: TrainState, run: Run, ckpt: dict | None = None) -> None:
    """Load RUN/last.pt (ckpt: as setup read and checked it) into state and restore the RNGs."""
    path = run.dir / "last.pt"
    if ckpt is None:
        ckpt = read_last(run.dir, run.world, run.dtype, run.cfg.dtype)
    state.load_state_dict(ckpt)
    set_rng_state(ckpt["rng"])
    log.info("resumed %s at epoch %d (best val IoU %.4f at epoch %d)", path, state.epoch, state.best, state.best_epoch)


# ----------------------------------------------------------------------------- across ranks


def all_ranks_finite(value: torch.Tensor, world: int) -> bool:
    """Return True when value is finite on every rank (one device-to-host sync)."""
    ok = torch.isfinite(value).float()
    if world > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return ok.item() == 1


def rank_weight_difference(net: nn.Module, device: torch.device, world: int) -> float:
    """Return the largest absolute difference between any rank's weights and rank 0's (0.0 when in sync)."""
    mine = torch.cat([p.detach().double().flatten() for p in unwrap(net).parameters()]).to(device)
    gathered = [torch.empty_like(mine) for _ in range(world)]   # NCCL gathers device tensors only
    dist.all_gather(gathered, mine)
    return max((g - gathered[0]).abs().max().item() for g in gathered)
