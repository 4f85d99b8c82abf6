"""Setting a training run up: processes, determinism, the network (--init, target prior), data and the run folder.

``setup`` checks the config, the run folder (a new run never writes over an old one unless
--overwrite), the --init file or the --resume last.pt, and every split the run will read
(train, val and test, decoded) before it writes anything, then creates the run folder
(config.json, val_split.txt, train.log). Recipes and datasets: docs/protocols.md.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler
from tqdm import tqdm

from models import CheckpointError, get_model, load_checkpoint, load_model
from utils import RUNS_DIR
from utils.cli import setup_logging, warn_once
from utils.data import DataError, IRSTDDataset, StillBoxDataset, VideoFrameDataset, resolve_data_root, write_names
from utils.data.layouts import is_still_box_root, is_video_root
from utils.data.mixture import MixedTrainSet
from utils.data.pack import PackedSplit, read_pack
from utils.data.synthetic import write_dataset
from utils.data.transforms import TrainTransform
from utils.files import atomic_write_text, write_json
from utils.infer.device import select_device
from utils.train.config import (
    RESUMABLE,
    SOURCES_PATH_HINT,
    ConfigError,
    TrainConfig,
    flag,
    parse_sources,
    resume_disagreement,
)
from utils.train.feeder import DeviceFeeder
from utils.train.state import compute_dtype

log = logging.getLogger(__name__)
RUN_FILES = ("config.json", "last.pt", "best.pt", "summary.json", "synthetic")   # a folder with one of these holds a run
RUN_ITEMS = RUN_FILES + ("train.log", "val_split.txt", "tb")                     # what --overwrite removes
PACKED_OPTIONS = ("dataset", "layout", "val_fraction", "val_seed", "sixteen_bit", "sources", "video_every",
                  "video_val_every")   # the options that decide which frames a run reads: a pack records them
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best_metric", "best_epoch", "history", "rng")


@dataclass(frozen=True)
class Run:
    """The fixed facts of a run: its config, folder, process, device, compute dtype and data."""

    cfg: TrainConfig
    dir: Path
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype
    root: Path                  # the data root
    train_set: IRSTDDataset | MixedTrainSet | PackedSplit
    val_set: IRSTDDataset       # the first source's val split under --sources
    test_set: IRSTDDataset | None   # checked (decoded) at setup, scored at the end; None: a pack without it
    steps: int                  # optimiser steps per epoch
    val_sources: tuple = ()     # --sources: ((name, val dataset), ...), each validated on its own
    progress: bool = True       # progress bars (run_configs.py --quiet: none)
    feeder: DeviceFeeder | None = None   # --loader device: the training frames on the device

    @property
    def main(self) -> bool:
        """Return True on the process that writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def bars(self) -> bool:
        """Return True where progress bars are drawn: rank 0, unless --quiet."""
        return self.main and self.progress


def setup(cfg: TrainConfig, run_dir: Path | None, resume: bool, log_level: str,
          overwrite: bool = False, progress: bool = True) -> tuple[Run, nn.Module, dict | None]:
    """Return the run's facts, its network and (resume) the last.pt to continue from.

    Writes nothing until the run folder, --init or last.pt, and all three splits have been
    checked; with overwrite, the run files of --out are removed only then (synthetic data: before
    it is generated).
    """
    rank, world, device = setup_distributed(cfg.device)
    run_dir = agreed_run_dir(cfg, run_dir, world)
    cfg = replace(cfg, out=str(run_dir))
    dtype = compute_dtype(cfg.dtype, device)
    if not resume:
        check_out_dir(run_dir, overwrite)
    last = read_last(run_dir, world, dtype, cfg.dtype) if resume else None
    if resume:
        check_resume(cfg, last, run_dir)
    set_determinism(cfg.deterministic, device)
    seed_everything(cfg.seed)
    notes: list[str] = []   # logged once train.log is open
    net = build_network(cfg, device, init=not resume, notes=notes)
    if overwrite and cfg.synthetic and rank == 0:
        clear_run_dir(run_dir)          # the old run's generated scenes must not be reused
    if cfg.loader == "device" and not (cfg.crop_size or cfg.base_size):
        raise ConfigError("--loader device cuts square crops: set --crop-size (or --base-size for whole resized "
                          "frames), or use --loader dataloader")
    with data_warnings_held():
        if cfg.pack:
            root = Path(cfg.pack)
            train_set, val_set, test_set, val_sources = packed_sets(cfg)
        elif cfg.sources:
            roots = source_roots(cfg)       # resolved once, here: the first source is the run's data root
            root = roots[0][2]
            train_set, val_set, test_set, val_sources = build_mixed(cfg, roots)
        else:
            root = data_root(cfg, run_dir, rank, world)
            (train_set, val_set, test_set), val_sources = build_datasets(cfg, root), ()
    steps = cfg.steps_per_epoch or len(train_set) // (cfg.batch_size * world)
    if steps < 1:
        raise ConfigError(f"batch size {cfg.batch_size} x {world} process(es) exceeds the {len(train_set)} "
                          "training frames; lower --batch-size")
    if overwrite and not cfg.synthetic and rank == 0:
        clear_run_dir(run_dir)
    barrier(world)
    feeder = None
    if cfg.loader == "device":
        feeder = DeviceFeeder(train_set, cfg.crop_size, cfg.target_prob, cfg.flip, cfg.rot90, cfg.copy_paste,
                              cfg.base_size, device, paste_faint=cfg.paste_faint, progress=progress_bar if rank == 0 and progress else None)
    run = Run(cfg, run_dir, rank, world, device, dtype, root, train_set, val_set, test_set, steps, val_sources,
              progress, feeder)
    open_run_dir(run, log_level, notes)
    return run, net, last


def check_out_dir(path: Path, overwrite: bool) -> None:
    """Raise ConfigError when path is a file, or holds a run and overwrite is not set (an empty folder is fine)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder: give another --out")
    held = sorted(p.name for p in path.iterdir() if p.name in RUN_ITEMS)
    if not held or overwrite:
        return
    go_on = (f"continue it with --resume {path}, " if (path / "config.json").is_file() and (path / "last.pt").is_file()
             else "")
    raise ConfigError(f"--out {path} already holds a run ({', '.join(held)}): {go_on}give another --out, "
                      "or add --overwrite to replace it")


def clear_run_dir(path: Path) -> None:
    """Remove the files a run writes (RUN_ITEMS and their .tmp leftovers) from path; other files stay."""
    if not path.is_dir():
        return
    for item in path.iterdir():
        if item.name.removesuffix(".tmp") not in RUN_ITEMS:
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
    log.info("--overwrite: removed the earlier run in %s", path)


def read_last(run_dir: Path, world: int, dtype: torch.dtype, dtype_name: str) -> dict:
    """Return RUN/last.pt for --resume; CheckpointError (pointing to best.pt when that loads) or ConfigError if unfit."""
    path = run_dir / "last.pt"
    try:
        ckpt = load_checkpoint(path)
        missing = [key for key in RESUME_KEYS if key not in ckpt]
        if missing:
            raise CheckpointError(f"checkpoint {path} is not a training checkpoint (no {', '.join(missing)})")
    except CheckpointError as err:
        best = run_dir / "best.pt"
        try:
            load_checkpoint(best)
            hint = f"start a new run from {best} with --init {best} and another --out"
        except CheckpointError:
            hint = "no loadable best.pt beside it either; start a new run"
        raise CheckpointError(f"--resume {run_dir}: {err}; cannot resume: {hint}") from None
    saved_world = ckpt.get("world_size", 1)
    if saved_world != world:
        raise ConfigError(f"{path} was trained by {saved_world} process(es), this launch has {world}: "
                          "resume with the same --nproc_per_node")
    if ckpt.get("amp_dtype", str(dtype)) != str(dtype):
        raise ConfigError(f"{path} was trained with {ckpt['amp_dtype']}, this device resolves --dtype "
                          f"{dtype_name} to {dtype}: resume on the same kind of device")
    return ckpt


def check_resume(cfg: TrainConfig, last: dict, run_dir: Path) -> None:
    """Raise ConfigError when the run's config.json (with the --resume options) disagrees with the config stored in
    its last.pt (the run's truth) on a field that cannot change, or asks for fewer epochs than are done."""
    if isinstance(last.get("config"), dict):
        differs = resume_disagreement(cfg, last["config"])
        if differs:
            raise ConfigError(f"--resume {run_dir}: {run_dir / 'config.json'} disagrees with the run's last.pt "
                              f"({differs}); the checkpoint's config is the run's: restore that value in config.json "
                              f"(only {', '.join(flag(k) for k in RESUMABLE)} may change on --resume), or start a "
                              f"new run with --init {run_dir / 'last.pt'}")
    done = int(last["epoch"])
    if cfg.epochs < done:
        raise ConfigError(f"--resume {run_dir}: --epochs {cfg.epochs} is below the {done} epochs already done; give "
                          f"--epochs above {done} to train on (config.json is left as it is)")


def open_run_dir(run: Run, log_level: str, notes: list[str] = ()) -> None:
    """Create the run folder with config.json and val_split.txt, start train.log, log `notes` and the data's
    warnings once."""
    if run.main:
        run.dir.mkdir(parents=True, exist_ok=True)
        write_json(run.dir / "config.json", run.cfg.to_dict())
        write_names(run.val_set.names, run.dir / "val_split.txt")
    setup_logging(log_level, log_file=run.dir / "train.log" if run.main else None, timestamps=True,
                  quiet_rank=not run.main)
    if run.main:
        warn_once(log, list(notes) + run.train_set.warnings + run.val_set.warnings
                  + (run.test_set.warnings if run.test_set is not None else []))
    log.info("data %s (%s): train %d, val %d, test %s frames", run.root, run.train_set.layout, len(run.train_set),
             len(run.val_set), len(run.test_set) if run.test_set is not None else "no (not in the pack)")


def close_run_log() -> None:
    """Close the handler that writes train.log (a test or notebook may train again in this process)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).name == "train.log":
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def data_warnings_held():
    """Hold back the warnings utils.data logs while it reads (the engine logs them once, after train.log opens)."""
    logger = logging.getLogger("utils.data")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_network(cfg: TrainConfig, device: torch.device, init: bool = True,
                  notes: list[str] | None = None) -> nn.Module:
    """Return the network on device: the weights of cfg.init (when init), else a fresh one with the target prior.

    What the run leaves behind of the --init file (its verifier) is appended to `notes` when given.
    """
    net = get_model(cfg.model, dropout=cfg.dropout, channels_last=cfg.channels_last)
    if init and cfg.init:   # read, fitted and checked finite (load_model) before anything is written
        try:
            loaded, meta = load_model(Path(cfg.init))
            weights = loaded.state_dict()
            net.load_state_dict(weights, strict=True)
        except CheckpointError as err:
            raise ConfigError(f"--init {cfg.init}: {err}") from None
        except RuntimeError as err:
            raise ConfigError(f"--init {cfg.init}: its network differs from {cfg.model} as configured "
                              f"({str(err).splitlines()[0]})") from None
        log.info("initialised from %s", cfg.init)
        if isinstance(meta.get("verifier"), dict) and notes is not None:
            notes.append(f"--init {cfg.init} carries a verifier (a second stage, docs/verifier.md), which fine-tuning "
                         "does not keep: the run's checkpoints are LRRNet alone; train a new verifier for them with "
                         "python -m utils.verify")
    elif init and cfg.target_prior > 0:   # targets are ~1e-4 of the pixels: start near "no target"
        with torch.no_grad():
            net.out_conv.bias.fill_(math.log(cfg.target_prior / (1 - cfg.target_prior)))
    return net.to(device)


def for_training(net: nn.Module, run: Run) -> nn.Module:
    """Return net wrapped for training: DistributedDataParallel under torchrun, torch.compile when asked."""
    model = net
    if run.world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[run.device.index] if run.device.type == "cuda"
                                                    else None)
    return torch.compile(model) if run.cfg.compile else model


def data_root(cfg: TrainConfig, run_dir: Path, rank: int, world: int) -> Path:
    """Return the data root of a one-dataset run: generated synthetic scenes in the run folder, or the configured
    dataset (a --sources run's roots: ``source_roots``)."""
    if not cfg.synthetic:
        return resolve_data_root(cfg.data_root or cfg.dataset)
    root = run_dir / "synthetic"
    done = root / ".complete"            # written last: a run killed while generating starts over
    if rank == 0 and not done.is_file():
        size = (cfg.synthetic_size, cfg.synthetic_size)
        write_dataset(root, n_trainval=cfg.synthetic_frames, n_test=cfg.synthetic_frames // 2, size=size, seed=cfg.seed)
        atomic_write_text(done, "ok\n")
    barrier(world)
    return root


def build_datasets(cfg: TrainConfig, root: Path) -> tuple[IRSTDDataset, IRSTDDataset, IRSTDDataset]:
    """Return (train, val, test) datasets, every file decoded and checked; val is the layout's own split or a
    seeded subset of the training frames; test (scored at the end) is not kept in memory."""
    common = split_options(cfg)
    train = IRSTDDataset(root, "train", transform=train_transform(cfg), **common)
    val, test = val_and_test(root, common)
    if not cfg.crop_size and not cfg.base_size and cfg.batch_size > 1 and len(set(train.sizes)) > 1:
        raise ConfigError(f"the training frames of {root} have {len(set(train.sizes))} sizes, so whole-frame batches "
                          f"of {cfg.batch_size} cannot be stacked; set --crop-size, --base-size or --batch-size 1")
    return train, val, test


def val_and_test(root: Path, common: dict) -> tuple[IRSTDDataset, IRSTDDataset]:
    """Return a frame dataset's val and test splits; test is decoded now (a bad test frame fails before any work)
    but not kept in memory."""
    return IRSTDDataset(root, "val", **common), IRSTDDataset(root, "test", cache=False, **common)


def split_options(cfg: TrainConfig) -> dict:
    """Return the keyword arguments every IRSTDDataset of a run shares: layout, val carving, 16-bit mode."""
    return dict(layout=None if cfg.layout == "auto" else cfg.layout, val_fraction=cfg.val_fraction,
                val_seed=cfg.val_seed, sixteen_bit=cfg.sixteen_bit)


def progress_bar(items, desc: str):
    """Return items wrapped in a tqdm bar named desc (for loading that takes seconds)."""
    return tqdm(items, desc=desc, leave=False, dynamic_ncols=True)


def train_transform(cfg: TrainConfig) -> TrainTransform | None:
    """Return the training augmentation of a run: resize, crops, flips, rotations as configured (None under
    --loader device: the feeder augments on the device)."""
    if cfg.loader == "device":
        return None
    return TrainTransform(crop_size=cfg.crop_size or None, target_prob=cfg.target_prob, flip=cfg.flip,
                          rot90=cfg.rot90, base_size=cfg.base_size or None)


def pack_options(cfg: TrainConfig) -> dict:
    """Return the options of cfg that decide which frames a run reads (what a pack records and is checked by)."""
    return {key: getattr(cfg, key) for key in PACKED_OPTIONS}


def packed_sets(cfg: TrainConfig) -> tuple:
    """Return (train, val, test, ((name, val), ...)) of a run read from cfg.pack, as ``build_datasets`` or
    ``build_mixed`` would build them from the folders; ConfigError when the pack was made with other data options."""
    pack = read_pack(cfg.pack)
    packed, wanted = pack.meta["options"], pack_options(cfg)
    differ = [key for key in PACKED_OPTIONS if packed.get(key) != wanted[key]]
    if differ:
        was = ", ".join(f"--{k.replace('_', '-')} {packed.get(k)!r} (this run: {wanted[k]!r})" for k in differ)
        raise ConfigError(f"--pack {cfg.pack} was packed with {was}: pack again with the run's config "
                          "(python -m utils.train.pack), or give the run the pack's values")
    transform = train_transform(cfg)
    test = pack.split(0, "test") if pack.has(0, "test") else None     # packed with --no-test: scored apart
    if not cfg.sources:
        return pack.split(0, "train", transform), pack.split(0, "val"), test, ()
    entries = parse_sources(cfg.sources)
    vals = tuple((name, pack.split(k, "val")) for k, (name, _) in enumerate(entries))
    parts = [(name, pack.split(k, "train")) for k, (name, weight) in enumerate(entries) if weight > 0]
    mixed = MixedTrainSet(parts, [w for _, w in entries if w > 0], transform, copy_paste=cfg.copy_paste,
                          hard_frac=cfg.hard_negative_frac, paste_faint=cfg.paste_faint)
    return mixed, vals[0][1], test, vals


def source_roots(cfg: TrainConfig) -> list[tuple[str, float, Path, str]]:
    """Return (name, weight, root, kind) for each --sources entry, kind "masks", "video" (box-labelled videos) or
    "boxes" (still frames with box labels); the first must have pixel masks."""
    out = []
    for k, (name, weight) in enumerate(parse_sources(cfg.sources)):
        try:
            root = resolve_data_root(name, SOURCES_PATH_HINT)
        except DataError as err:
            raise ConfigError(f"--sources entry {name!r}: {err}") from None
        kind = root_kind(root)
        if kind != "masks" and k == 0:
            raise ConfigError(f"--sources {cfg.sources!r}: the first source ({name}) is scored on its test split, "
                              "and a box-labelled source has none; put a dataset with pixel masks first")
        out.append((name, weight, root, kind))
    return out


def root_kind(root: Path) -> str:
    """Return what a data root holds: "video" (box-labelled videos), "boxes" (still frames with box labels) or
    "masks" (frames with pixel masks)."""
    return "video" if is_video_root(root) else "boxes" if is_still_box_root(root) else "masks"


def source_dataset(cfg: TrainConfig, root: Path, kind: str, split: str, common: dict
                   ) -> IRSTDDataset | VideoFrameDataset | StillBoxDataset:
    """Return one split of a --sources entry of ``kind`` (``source_roots``): frames with masks (val carved by
    --val-fraction), every --video-every-th (train) or --video-val-every-th (val) labelled video frame, or still
    frames with box labels (their layout's own val)."""
    if kind == "video":
        return VideoFrameDataset(root, split, every=cfg.video_every if split == "train" else cfg.video_val_every)
    if kind == "boxes":
        return StillBoxDataset(root, split, sixteen_bit=cfg.sixteen_bit)
    return IRSTDDataset(root, split, **common)


def eval_sets(cfg: TrainConfig, roots: list | None = None) -> tuple[IRSTDDataset, IRSTDDataset, tuple]:
    """Return (val, test, ((name, val), ...)) of a config as its run builds them, without the training frames.

    For a --sources config: every source's val (what selection scores) and the first source's test; otherwise the
    dataset's val and test, with no per-source entries. What ``python -m utils.merge --score`` scores. ``roots``:
    ``source_roots(cfg)`` when the caller has them.
    """
    common = split_options(cfg)
    if cfg.sources:
        roots = roots or source_roots(cfg)
        vals = tuple((name, source_dataset(cfg, root, kind, "val", common)) for name, _, root, kind in roots)
        return vals[0][1], IRSTDDataset(roots[0][2], "test", cache=False, **common), vals
    if cfg.synthetic:
        raise ConfigError(f"config {cfg.config_name!r} generates its frames inside each run; score on a config of "
                          "real data")
    return (*val_and_test(resolve_data_root(cfg.data_root or cfg.dataset), common), ())


def build_mixed(cfg: TrainConfig, roots: list) -> tuple[MixedTrainSet, IRSTDDataset, IRSTDDataset, tuple]:
    """Return (train, first source's val, first source's test, ((name, val), ...)) of a --sources run whose
    ``source_roots`` are ``roots``.

    Frame datasets carve their val split as a single-source run does (--val-fraction, --val-seed);
    video sources take every --video-every-th labelled frame of train.txt for training and every
    --video-val-every-th of val.txt for validation; still frames with box labels train on their train split and
    validate on their own val. The first source must have pixel masks and a
    test split: it is the one scored on test (the others are scored with inference.py).
    """
    common = split_options(cfg)
    val, test, vals = eval_sets(cfg, roots)
    parts, weights = [], []
    for name, weight, root, kind in roots:
        if weight == 0:     # validated and selected on only
            continue
        parts.append((name, source_dataset(cfg, root, kind, "train", common)))
        weights.append(weight)
    if not cfg.crop_size and not cfg.base_size and cfg.batch_size > 1:
        raise ConfigError(f"--sources mixes frames of several sizes, so whole-frame batches of {cfg.batch_size} "
                          "cannot be stacked; set --crop-size, --base-size or --batch-size 1")
    mixed = MixedTrainSet(parts, weights, train_transform(cfg), copy_paste=cfg.copy_paste,
                          hard_frac=cfg.hard_negative_frac, paste_faint=cfg.paste_faint)
    log.info("sources: %s", ", ".join(f"{n} x{w:g} ({len(d)} train frames)" for (n, d), w in zip(parts, weights)))
    return mixed, val, test, vals


def train_loader(cfg: TrainConfig, train: IRSTDDataset | MixedTrainSet, epoch: int, rank: int, world: int,
                 device: torch.device, feeder: DeviceFeeder | None = None):
    """Return this epoch's training batches (sampling seeded by seed and epoch; each rank its own share): a
    DataLoader, or the device feeder's epoch when there is one."""
    if feeder is not None:
        steps = cfg.steps_per_epoch or len(train) // (cfg.batch_size * world)
        return feeder.epoch(steps, cfg.batch_size, epoch_seed(cfg, epoch, rank), epoch_seed(cfg, epoch, 0), rank,
                            world, replacement=bool(cfg.steps_per_epoch))
    generator = torch.Generator().manual_seed(epoch_seed(cfg, epoch, rank))
    if isinstance(train, MixedTrainSet):   # sources by weight, mined frames by hard_negative_frac
        steps = cfg.steps_per_epoch or len(train) // (cfg.batch_size * world)
        sampler = WeightedRandomSampler(torch.as_tensor(train.sample_weights(), dtype=torch.float64),
                                        steps * cfg.batch_size, replacement=True, generator=generator)
    elif cfg.steps_per_epoch:
        sampler = RandomSampler(train, replacement=True, num_samples=cfg.steps_per_epoch * cfg.batch_size,
                                generator=generator)
    elif world > 1:
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(train, generator=generator)
    return DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers, drop_last=True,
                      pin_memory=device.type == "cuda", generator=generator, persistent_workers=False)


def default_run_dir(cfg: TrainConfig) -> Path:
    """Return runs/<YYYYmmdd-HHMMSS>_<config name> under the project root."""
    return RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}_{cfg.config_name}"


# ----------------------------------------------------------------------------- processes, seeds, determinism


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


def agreed_run_dir(cfg: TrainConfig, run_dir: Path | None, world: int) -> Path:
    """Return the run folder: run_dir, else --out, else a new timestamped one; every rank takes rank 0's."""
    path = Path(run_dir) if run_dir else (Path(cfg.out) if cfg.out else default_run_dir(cfg))
    if world > 1:
        shared = [str(path)]
        dist.broadcast_object_list(shared, src=0)
        path = Path(shared[0])
    return path


def barrier(world: int) -> None:
    """Wait for every rank (no-op for one process)."""
    if world > 1:
        dist.barrier()


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Use deterministic algorithms only (bit-identical resume), or let cuDNN pick the fastest on CUDA."""
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """Return the seed of one epoch on one rank (every epoch starts from a state that depends on nothing else)."""
    return cfg.seed * 1_000_003 + epoch * 1009 + rank
