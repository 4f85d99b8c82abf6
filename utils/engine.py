"""The training engine: data, model, optimiser, AMP, EMA, validation, checkpoints and DDP for run_configs.py.

A run lives in one directory: config.json, train.log, TensorBoard events, val_split.txt,
last.pt and best.pt (written atomically after every epoch), and summary.json at the end.
Every epoch reseeds all RNGs from (seed, epoch, rank), so a run resumed from last.pt
follows the same path as one that was never interrupted.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from models import get_model
from utils import config as config_mod
from utils.checkpoint import (FORMAT_VERSION, atomic_save, code_revision, load_checkpoint, load_model, rng_state,
                              set_rng_state, unwrap)
from utils.config import TrainConfig
from utils.data import IRSTDDataset, resolve_data_root, write_names
from utils.files import write_json
from utils.losses import LRRLoss
from utils.metrics import Evaluator
from utils.runtime import autocast, select_device
from utils.transforms import TrainTransform

log = logging.getLogger("lrrnet")
ROOT = Path(__file__).resolve().parents[1]
GRID_FRAMES, GRID_SIZE = 4, 192   # TensorBoard grid: 4 val frames, each cropped/padded to 192 px


class NonFiniteLoss(RuntimeError):
    """Raised after cfg.nan_patience non-finite losses in a row."""


# ----------------------------------------------------------------------------- distributed


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Return (rank, world size, device); joins the torchrun process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = select_device(device_name)
    if world == 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    return dist.get_rank(), world, device


def barrier(world: int) -> None:
    """Wait for every rank (no-op for one process)."""
    if world > 1:
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """Return the seed of one epoch on one rank (every epoch starts from a state that depends on nothing else)."""
    return cfg.seed * 1_000_003 + epoch * 1009 + rank


# ----------------------------------------------------------------------------- building blocks


def data_root(cfg: TrainConfig, run_dir: Path, rank: int, world: int) -> Path:
    """Return the data root: generated synthetic scenes in the run directory, or the configured dataset."""
    if not cfg.synthetic:
        return resolve_data_root(cfg.data_root or cfg.dataset)
    from utils.synthetic import write_dataset
    root = run_dir / "synthetic"
    done = root / ".complete"            # written last: a run killed while generating starts over
    if rank == 0 and not done.is_file():
        size = (cfg.synthetic_size, cfg.synthetic_size)
        write_dataset(root, n_trainval=cfg.synthetic_frames, n_test=cfg.synthetic_frames // 2, size=size, seed=cfg.seed)
        done.write_text("ok\n")
    barrier(world)
    return root


def build_datasets(cfg: TrainConfig, root: Path) -> tuple[IRSTDDataset, IRSTDDataset]:
    """Return (train, val) datasets; val is the layout's own split or a seeded subset of the training frames."""
    layout = None if cfg.layout == "auto" else cfg.layout
    common = dict(layout=layout, val_fraction=cfg.val_fraction, val_seed=cfg.val_seed, sixteen_bit=cfg.sixteen_bit)
    transform = TrainTransform(crop_size=cfg.crop_size or None, target_prob=cfg.target_prob, flip=cfg.flip,
                               rot90=cfg.rot90, base_size=cfg.base_size or None)
    train = IRSTDDataset(root, "train", transform=transform, **common)
    val = IRSTDDataset(root, "val", **common)
    if not cfg.crop_size and not cfg.base_size and cfg.batch_size > 1 and len(set(train.sizes)) > 1:
        raise config_mod.ConfigError(
            f"the training frames of {root} have {len(set(train.sizes))} sizes, so whole-frame batches of "
            f"{cfg.batch_size} cannot be stacked; set --crop-size, --base-size or --batch-size 1")
    return train, val


def train_loader(cfg: TrainConfig, train: IRSTDDataset, epoch: int, rank: int, world: int,
                 device: torch.device) -> DataLoader:
    """Return this epoch's training loader (sampling seeded by seed and epoch; each rank its own share)."""
    generator = torch.Generator().manual_seed(epoch_seed(cfg, epoch, rank))
    if cfg.steps_per_epoch:
        sampler = RandomSampler(train, replacement=True, num_samples=cfg.steps_per_epoch * cfg.batch_size,
                                generator=generator)
    elif world > 1:
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(train, generator=generator)
    return DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=True,
                      pin_memory=device.type == "cuda", generator=generator,
                      persistent_workers=False)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int):
    """Return a per-iteration LambdaLR: linear warm-up, then poly (the release), cosine or constant."""
    def factor(it: int) -> float:
        if it < cfg.warmup_iters:
            return (it + 1) / cfg.warmup_iters
        progress = min(1.0, (it - cfg.warmup_iters) / max(1, total_iters - cfg.warmup_iters))
        if cfg.schedule == "poly":
            return (1 - progress) ** cfg.poly_power
        if cfg.schedule == "cosine":
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """Return the autocast dtype: float32 (off), bfloat16 or float16; "auto" is bf16/fp16 on CUDA, off on the CPU."""
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type == "cpu"):
        return torch.float32
    if cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(net: nn.Module, dataset: IRSTDDataset, device: torch.device, rank: int = 0, world: int = 1,
             dtype: torch.dtype = torch.float32, progress: bool = False) -> Evaluator:
    """Return an Evaluator filled with every frame of the dataset at its native size (summed over ranks)."""
    net.eval()
    evaluator = Evaluator()
    indices = range(rank, len(dataset), world)
    for i in tqdm(indices, desc=f"eval {dataset.split}", leave=False, disable=not progress or rank != 0):
        item = dataset[i]
        with autocast(device, dtype):
            _, t = net(item["image"][None].to(device))
        prob = torch.sigmoid(t.float())[0, 0].cpu().numpy()
        evaluator.update(prob, item["mask"][0].numpy())
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, evaluator)
        evaluator = gathered[0]
        for other in gathered[1:]:
            evaluator.merge(other)
    return evaluator


def image_grid(net: nn.Module, dataset: IRSTDDataset, device: torch.device) -> torch.Tensor:
    """Return a 3 x H x W grid, one row per val frame: frame | mask | sigmoid(T) | D."""
    from torchvision.utils import make_grid
    tiles = []
    with torch.no_grad():
        for i in range(min(GRID_FRAMES, len(dataset))):
            item = dataset[i]
            d, t = net(item["image"][None].to(device))
            row = [item["image"], item["mask"], torch.sigmoid(t.float())[0].cpu(), d.float()[0].clamp(0, 1).cpu()]
            for tile in row:
                canvas = torch.zeros(1, GRID_SIZE, GRID_SIZE)
                h, w = min(GRID_SIZE, tile.shape[-2]), min(GRID_SIZE, tile.shape[-1])
                canvas[:, :h, :w] = tile[:, :h, :w]
                tiles.append(canvas)
    return make_grid(tiles, nrow=4, padding=2, pad_value=1.0)


# ----------------------------------------------------------------------------- the run


class Run:
    """One training run; ``fit()`` trains to cfg.epochs and scores best.pt and last.pt on test."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.rank, self.world, self.device = setup_distributed(cfg.device)
        self.main = self.rank == 0
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(cfg.seed)
        net = get_model(cfg.model, dropout=cfg.dropout, channels_last=cfg.channels_last)
        init = bool(cfg.init) and not resume   # a resumed run takes its weights from last.pt
        if init:   # read and fitted before anything is written: a bad file fails here
            try:
                net.load_state_dict(load_model(Path(cfg.init))[0].state_dict(), strict=True)
            except (FileNotFoundError, ValueError, RuntimeError) as err:
                raise config_mod.ConfigError(f"--init {cfg.init}: {err}") from None
        self.root = data_root(cfg, self.run_dir, self.rank, self.world)
        self.train_set, self.val_set = build_datasets(cfg, self.root)   # bad data fails here, nothing written
        self.steps = cfg.steps_per_epoch or len(self.train_set) // (cfg.batch_size * self.world)
        if self.steps < 1:
            raise config_mod.ConfigError(f"batch size {cfg.batch_size} x {self.world} process(es) exceeds the "
                                         f"{len(self.train_set)} training frames; lower --batch-size")
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())
        self._setup_logging()
        if self.main:
            write_names(self.val_set.names, self.run_dir / "val_split.txt")
            for note in self.train_set.warnings + self.val_set.warnings:
                log.warning(note)
        log.info("data %s (%s): train %d, val %d frames", self.root, self.train_set.layout,
                 len(self.train_set), len(self.val_set))

        net = net.to(self.device)
        if init:
            log.info("initialised from %s", cfg.init)
        elif cfg.target_prior > 0 and not resume:   # targets are ~1e-4 of the pixels: start near "no target"
            with torch.no_grad():
                net.out_conv.bias.fill_(math.log(cfg.target_prior / (1 - cfg.target_prior)))
        self.net = net
        self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
        self.model = net
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = self.steps
        self.scheduler = make_scheduler(self.optimizer, cfg, cfg.epochs * steps)
        self.dtype = amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.loss_fn = LRRLoss(cfg.loss, cfg.w_softiou, cfg.w_l1, cfg.w_mse)
        self.epoch, self.best, self.best_epoch, self.history, self.bad_in_row = 0, -1.0, -1, [], 0
        self.writer = None
        if resume:
            self._load(self.run_dir / "last.pt")
        if self.main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def _setup_logging(self) -> None:
        log.setLevel(logging.INFO if self.main else logging.WARNING)
        for handler in log.handlers:
            handler.close()
        log.handlers.clear()
        log.propagate = False
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        stream = logging.StreamHandler()
        stream.setFormatter(fmt)
        log.addHandler(stream)
        if self.main:
            handler = logging.FileHandler(self.run_dir / "train.log")
            handler.setFormatter(fmt)
            log.addHandler(handler)

    # -- checkpoints

    def _state(self, weights: dict, selected: str) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "model": weights, "selected_weights": selected,
            "model_name": self.cfg.model, "model_hparams": unwrap(self.net).hparams(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_n_averaged": int(self.ema.n_averaged) if self.ema else 0, "amp_dtype": str(self.dtype),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(),
            "epoch": self.epoch, "best_metric": self.best, "best_epoch": self.best_epoch,
            "history": self.history, "config": self.cfg.to_dict(), "code_revision": code_revision(),
            "val_names": self.val_set.names, "data_root": str(self.root),
            "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": str(torch.__version__),
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else
            f"cpu x{os.cpu_count()}", "world_size": self.world,
        }

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        saved_world = ckpt.get("world_size", 1)
        if saved_world != self.world:
            raise config_mod.ConfigError(f"{path} was trained by {saved_world} process(es), this launch has "
                                         f"{self.world}: resume with the same --nproc_per_node")
        if ckpt.get("amp_dtype", str(self.dtype)) != str(self.dtype):
            raise config_mod.ConfigError(f"{path} was trained with {ckpt['amp_dtype']}, this device resolves "
                                         f"--amp {self.cfg.amp} to {self.dtype}: resume on the same kind of device")
        self.net.load_state_dict(ckpt["model"])   # last.pt always holds the raw weights
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.n_averaged.fill_(ckpt["ema_n_averaged"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.epoch, self.best, self.best_epoch = ckpt["epoch"], ckpt["best_metric"], ckpt["best_epoch"]
        self.history = list(ckpt["history"])
        log.info("resumed %s at epoch %d (best val IoU %.4f at epoch %d)", path, self.epoch, self.best,
                 self.best_epoch)

    def _save(self, val: dict | None, improved: bool) -> None:
        """Write last.pt (raw weights) every epoch and best.pt (the selected weights) when val IoU improved."""
        if not self.main:
            return
        raw = unwrap(self.net).state_dict()
        if improved:   # best.pt first: a kill between the two writes never leaves last.pt ahead of best.pt
            weights = raw if val["selected"] == "raw" else self.ema.module.state_dict()
            best = self._state(weights, val["selected"])
            best["val"] = val
            atomic_save(best, self.run_dir / "best.pt")
        atomic_save(self._state(raw, "raw"), self.run_dir / "last.pt")

    # -- training

    def _skip(self, what: str) -> None:
        """Count a skipped step; stop the run after cfg.nan_patience of them in a row (across epochs)."""
        self.bad_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        log.warning("epoch %d: %s, step skipped (%d in a row)", self.epoch + 1, what, self.bad_in_row)
        if self.bad_in_row >= self.cfg.nan_patience:
            raise NonFiniteLoss(
                f"{self.bad_in_row} non-finite steps in a row at epoch {self.epoch + 1}: the run is diverging. "
                f"Resume from {self.run_dir / 'last.pt'} with a lower --lr, --grad-clip 1 or --amp off.")

    def _all_ranks_ok(self, value: torch.Tensor) -> bool:
        """Return True when value is finite on every rank (one device-to-host sync)."""
        ok = torch.isfinite(value).float()
        if self.world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return ok.item() == 1

    def _train_epoch(self) -> dict:
        cfg, epoch = self.cfg, self.epoch
        seed_everything(epoch_seed(cfg, epoch, self.rank))
        self.model.train()
        loader = train_loader(cfg, self.train_set, epoch, self.rank, self.world, self.device)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)   # loss, softiou, l1, mse (kept on device)
        n_frames, n_steps = 0, 0
        start = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.main, leave=False,
                   dynamic_ncols=True)
        for batch in bar:
            image = batch["image"].to(self.device, non_blocking=True)
            mask = batch["mask"].to(self.device, non_blocking=True)
            with autocast(self.device, self.dtype):
                d, t = self.model(image)
            loss, parts = self.loss_fn(d, t, image, mask)
            if not self._all_ranks_ok(loss):
                self._skip("non-finite loss")
                self.scheduler.step()    # the schedule follows iterations, taken or skipped
                continue
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip or float("inf"))
            if not self.scaler.is_enabled() and not self._all_ranks_ok(norm):
                self._skip("non-finite gradients")   # (the fp16 GradScaler skips such steps itself)
                self.scheduler.step()
                continue
            self.bad_in_row = 0
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            sums += torch.stack([loss.detach(), parts["softiou"], parts["l1"], parts["mse"]]).double()
            n_frames += image.shape[0] * self.world
            n_steps += 1
            if n_steps % 5 == 1:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                fps=f"{n_frames / (time.perf_counter() - start):.1f}")
        means = (sums / max(1, n_steps)).tolist()
        out = dict(zip(("loss", "softiou", "l1", "mse"), means))
        out.update(lr=self.optimizer.param_groups[0]["lr"], fps=n_frames / (time.perf_counter() - start),
                   skipped=self.steps - n_steps)
        return out

    def _validate(self) -> dict:
        candidates = {"raw": self.net}
        if self.ema is not None:
            candidates["ema"] = self.ema.module
        results = {}
        for name, net in candidates.items():
            results[name] = plain(evaluate(net, self.val_set, self.device, self.rank, self.world, self.dtype).compute())
        selected = max(results, key=lambda k: results[k]["iou"])
        return {"selected": selected, "selected_iou": results[selected]["iou"], **results}

    def fit(self) -> dict:
        """Train from the current epoch to cfg.epochs; then score best.pt and last.pt once on test."""
        cfg = self.cfg
        log.info("training %s on %s for %d epochs of %d steps (batch %d x %d), amp %s, device %s",
                 cfg.config_name, self.root, cfg.epochs, self.steps, cfg.batch_size, self.world, self.dtype,
                 self.device)
        bar = tqdm(total=cfg.epochs, initial=self.epoch, desc="run", disable=not self.main, dynamic_ncols=True)
        while self.epoch < cfg.epochs:
            stats = self._train_epoch()
            self.epoch += 1
            val = None
            if self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs:
                val = self._validate()
            record = {"epoch": self.epoch, **stats}
            improved = val is not None and val["selected_iou"] > self.best
            if val is not None:
                record["val"] = val
            if improved:
                self.best, self.best_epoch = val["selected_iou"], self.epoch
            self.history.append(record)
            self._save(val, improved)
            self._log_epoch(record)
            bar.update(1)
            bar.set_postfix(best=f"{self.best:.3f}@{self.best_epoch}")
        bar.close()
        barrier(self.world)
        return self.finish()

    def _log_epoch(self, record: dict) -> None:
        if not self.main:
            return
        msg = (f"epoch {record['epoch']}/{self.cfg.epochs} loss {record['loss']:.4f} (softiou {record['softiou']:.4f} "
               f"mse {record['mse']:.5f}) lr {record['lr']:.2e} {record['fps']:.1f} frames/s")
        w = self.writer
        step = record["epoch"]
        for k in ("loss", "softiou", "l1", "mse", "lr", "fps"):
            w.add_scalar(f"train/{k}", record[k], step)
        if "val" in record:
            val = record["val"]
            for name in ("raw", "ema"):
                if name in val:
                    m = val[name]
                    msg += (f" | val[{name}] IoU {m['iou']:.4f} nIoU {m['niou']:.4f} Pd {m['pd']:.4f} "
                            f"Fa {m['fa'] * 1e6:.1f}e-6")
                    for k in ("iou", "niou", "pd", "fa", "f1", "auc"):
                        w.add_scalar(f"val_{name}/{k}", m[k], step)
            msg += f" | best {self.best:.4f} @ {self.best_epoch}"
            n_val = len([r for r in self.history if "val" in r])
            if (n_val - 1) % self.cfg.image_every == 0:
                net = self.ema.module if self.ema is not None and val["selected"] == "ema" else self.net
                w.add_image("val/frame|mask|sigmoid(T)|D", image_grid(net, self.val_set, self.device), step)
        w.flush()
        log.info(msg)

    def _rank_weight_difference(self) -> float:
        """Return the largest absolute difference between any rank's weights and rank 0's (0.0 when in sync)."""
        mine = _flat_weights(self.net).to(self.device)   # NCCL gathers device tensors only
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine)
        return max((g - gathered[0]).abs().max().item() for g in gathered)

    def finish(self) -> dict:
        """Score best.pt and last.pt once on the test split; write and return summary.json."""
        cfg = self.cfg
        layout = None if cfg.layout == "auto" else cfg.layout
        test = IRSTDDataset(self.root, "test", layout=layout, val_fraction=cfg.val_fraction, val_seed=cfg.val_seed,
                            sixteen_bit=cfg.sixteen_bit)
        summary = {"config": cfg.config_name, "run_dir": str(self.run_dir), "epochs": self.epoch,
                   "data_root": str(self.root), "n_test": len(test), "code_revision": code_revision(),
                   "world_size": self.world}
        if self.world > 1:
            summary["ddp_max_weight_diff"] = self._rank_weight_difference()
        for tag in ("best", "last"):
            path = self.run_dir / f"{tag}.pt"
            exists = [path.exists()]
            if self.world > 1:       # rank 0 decides: other ranks may not share its file system
                dist.broadcast_object_list(exists, src=0)
            if not exists[0]:
                continue
            ckpt = load_checkpoint(path)
            net = get_model(cfg.model, channels_last=cfg.channels_last).to(self.device)
            net.load_state_dict(ckpt["model"])
            scores = evaluate(net, test, self.device, self.rank, self.world, progress=True)
            last_val = next((r["val"] for r in reversed(ckpt["history"]) if "val" in r), None)
            summary[tag] = {"epoch": ckpt["epoch"], "weights": ckpt["selected_weights"],
                            "val": last_val[ckpt["selected_weights"]] if last_val else None,
                            "test": plain(scores.compute())}
        if self.main:
            write_json(self.run_dir / "summary.json", summary)
            for tag in ("best", "last"):
                if tag in summary:
                    s, t = summary[tag], summary[tag]["test"]
                    log.info("%s (epoch %d, %s weights): test IoU %.4f nIoU %.4f Pd %.4f Fa %.2fe-6 F1 %.4f",
                             tag, s["epoch"], s["weights"], t["iou"], t["niou"], t["pd"], t["fa"] * 1e6, t["f1"])
            if self.writer:
                self.writer.close()
        return summary


def _flat_weights(net: nn.Module) -> torch.Tensor:
    """Return all parameters of a network as one float64 vector on their device."""
    return torch.cat([p.detach().double().flatten() for p in unwrap(net).parameters()])


def plain(metrics: dict) -> dict:
    """Return metrics with numpy scalars turned into Python numbers (JSON and weights_only friendly)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items()}


def default_run_dir(cfg: TrainConfig) -> Path:
    """Return runs/<YYYYmmdd-HHMMSS>_<config name> under the project root."""
    return ROOT / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}_{cfg.config_name}"


def train(cfg: TrainConfig, run_dir: Path | None = None, resume: bool = False) -> dict:
    """Train a run (new or resumed) and return its summary."""
    run_dir = Path(run_dir) if run_dir else (Path(cfg.out) if cfg.out else default_run_dir(cfg))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:   # every rank takes rank 0's directory
        setup_distributed(cfg.device)
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
    cfg = replace(cfg, out=str(run_dir))
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        run = Run(cfg, run_dir, resume=resume)
        try:
            return run.fit()
        finally:
            if run.writer is not None:
                run.writer.close()
            for handler in log.handlers:
                handler.close()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if dist.is_initialized():
            dist.destroy_process_group()
