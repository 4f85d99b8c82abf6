"""Pack what a named config reads into one file, for a machine that has no datasets (a GPU window, docs/gpu.md).

    python -m utils.train.pack --config nudt_window --datasets /path/to/datasets   # -> packs/nudt_window.npz
    python -m utils.train.pack --config general_window --video-every 90 --pack packs/general90.npz

The file is the config's --pack (packs/NAME.npz when it has none). The config's options (and
any --key value given) decide the frames, as a run reads them: the
training, val and test splits of one dataset, or under --sources every source's training and
val splits and the first one's test split (videos: every --video-every-th and
--video-val-every-th labelled frame). Train from it with ``run_configs.py --config NAME --pack
FILE`` (the run's data options must equal the pack's). The file is refused when it exists,
unless --overwrite; nothing is written when a frame is bad.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

import utils
from utils import ROOT
from utils.cli import EXIT_OK, BoolFlag, fail
from utils.data import DataError, IRSTDDataset, VideoFrameDataset, resolve_data_root
from utils.data.pack import write_pack
from utils.train import config as cfgs
from utils.train.setup import data_warnings_held, pack_options, source_roots, split_options

PACKS_DIR = ROOT / "packs"      # git-ignored


def pack_splits(cfg: cfgs.TrainConfig, test: bool = True) -> tuple[dict, list[dict]]:
    """Return ({(source, split): dataset} a run of cfg reads (test: with the first source's test split),
    [{"name", "weight", "video", "root"} per source])."""
    common = split_options(cfg)
    if cfg.synthetic:
        raise cfgs.ConfigError(f"config {cfg.config_name!r} generates its frames inside each run: nothing to pack")
    roots = source_roots(cfg) if cfg.sources else [(cfg.dataset, 1.0, resolve_data_root(cfg.data_root or cfg.dataset),
                                                     "masks")]
    splits, sources = {}, []
    for k, (name, weight, root, kind) in enumerate(roots):
        if kind == "boxes":
            raise cfgs.ConfigError(f"source {name} ({root}) is still frames with box labels, which a pack does not "
                                   "hold yet: train that config from the folders (without --pack)")
        video = kind == "video"
        wanted = (["train"] if weight > 0 else []) + ["val"] + (["test"] if k == 0 and test else [])
        for split in wanted:
            if video:
                every = cfg.video_every if split == "train" else cfg.video_val_every
                splits[(k, split)] = VideoFrameDataset(root, split, every=every, progress=True)
            else:
                splits[(k, split)] = IRSTDDataset(root, split, **common)
        sources.append({"name": name, "weight": weight, "video": video, "root": str(root)})
    return splits, sources


def main(argv: list[str] | None = None) -> int:
    """Parse, check, pack; return the exit code (2 for a bad command line or data, nothing written)."""
    parser = cfgs.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    parser.add_argument("--config", required=True, choices=list(cfgs.CONFIGS), metavar="NAME",
                        help="the named config whose data to pack (run_configs.py --list)")
    parser.add_argument("--datasets", type=Path, metavar="DIR",
                        help="the folder release names resolve in (default ./datasets)")
    parser.add_argument("--overwrite", action=BoolFlag, default=False, help="replace an existing pack file")
    parser.add_argument("--test", action=BoolFlag, default=True,
                        help="pack the test split too (--no-test: a smaller pack; the run then scores no test, and "
                             "python -m utils.train.window --score-test scores its best.pt where the data is)")
    cfgs.add_arguments(parser)
    try:
        args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else [str(a) for a in argv])
        cfgs.refuse_leftovers(rest)
        cfg = cfgs.build(args.config, cfgs.overrides(args))
        out = Path(cfg.pack) if cfg.pack else PACKS_DIR / f"{args.config}.npz"
        if out.suffix != ".npz":
            raise cfgs.ConfigError(f"--pack {out}: a pack is an .npz file; give a name ending in .npz")
        if out.exists() and not args.overwrite:
            raise cfgs.ConfigError(f"--pack {out} exists: give another --pack, or add --overwrite to replace it")
        if args.datasets is not None:
            if not args.datasets.is_dir():
                raise cfgs.ConfigError(f"--datasets {args.datasets} is no folder: give the folder holding the datasets")
            utils.DATASETS_DIR = args.datasets   # where release names resolve, for this command's process
        with data_warnings_held():
            splits, sources = pack_splits(cfg, args.test)
        meta = {"config": cfg.config_name, "options": pack_options(cfg), "sources": sources}
        write_pack(out, meta, splits, progress=lambda items, desc: tqdm(items, desc=desc, leave=False))
    except (cfgs.ConfigError, DataError) as err:
        return fail(str(err))
    counts = ", ".join(f"{sources[k]['name']} {split} {len(d)}" for (k, split), d in splits.items())
    print(f"packed {counts} frames into {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
