"""Train LRRNet from a named config.

    python run_configs.py --list
    python run_configs.py --config synthetic                     # about a minute on a CPU, no data needed
    python run_configs.py --config sirstv1_cpu --data-root datasets/SIRST-v1
    python run_configs.py --config nudt --epochs 50 --lr 2e-4 --batch-size 4 --device cuda --out runs/nudt50
    python run_configs.py --resume runs/20261125-2200_sirstv1_cpu [--epochs 150]
    python run_configs.py --config synthetic --out runs/demo --overwrite   # replace the run already in runs/demo
    torchrun --nproc_per_node 2 run_configs.py --config synthetic --device cpu   # DDP (gloo on the CPU)

Every config field below is an option: --key value, booleans --flag / --no-flag / --flag true|false.
Precedence: field defaults < named config < command line. Unknown options and bad values are
refused (exit code 2) before anything is written, as are a --out folder that already holds a run
(continue it with --resume, or replace it with --overwrite), an unreadable --init or last.pt, and
a bad frame or mask in any split the run reads (train, val and test, all decoded up front).
The run folder gets config.json, train.log, TensorBoard events (tb/), val_split.txt, last.pt,
best.pt (best val IoU) and summary.json.
Exit codes: 0 done, 1 the run diverged (the message says how to go on), 2 bad command line, data or file.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from models import CheckpointError
from utils.cli import EXIT_OK, EXIT_PARTIAL, BoolFlag, add_log_level, fail
from utils.data import DataError
from utils.infer.device import select_device
from utils.train import config as cfgs
from utils.train.loop import NonFiniteLoss, train

RESUMABLE = ("epochs", "device", "workers", "val_every", "image_every", "compile", "nan_patience", "time_budget",
             "pack")  # may change on --resume


def build_parser() -> cfgs.ArgumentParser:
    """Return the parser: --config / --resume / --list / --log-level, then one option per TrainConfig field."""
    parser = cfgs.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False,
                                 usage="%(prog)s (--config NAME | --resume RUN_DIR | --list) [--key value ...]")
    parser.add_argument("--config", choices=list(cfgs.CONFIGS), metavar="NAME",
                        help=f"named config: {', '.join(cfgs.CONFIGS)} (see --list)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a run from RUN_DIR/last.pt with its own config.json; only "
                             f"{', '.join(cfgs.flag(k) for k in RESUMABLE)} may change")
    parser.add_argument("--list", action="store_true", help="list the named configs")
    parser.add_argument("--overwrite", action=BoolFlag, default=False,
                        help="a new run whose --out folder already holds a run removes that run's files first "
                             "(config.json, train.log, tb/, val_split.txt, *.pt, summary.json, synthetic/) once "
                             "the config, weights and data have been checked; without it such a folder is refused")
    add_log_level(parser)
    cfgs.add_arguments(parser)
    return parser


def print_configs() -> None:
    """Print the named configs, one line each."""
    print("named configs:")
    for name, (description, _) in cfgs.CONFIGS.items():
        print(f"  {name:<12} {description}")


def resolve(args: argparse.Namespace, rest: list[str]) -> cfgs.TrainConfig:
    """Return the run's config from the command line; ConfigError for anything wrong with it."""
    cfgs.refuse_leftovers(rest)
    if args.config and args.resume:
        raise cfgs.ConfigError("give --config NAME for a new run or --resume RUN_DIR, not both "
                               "(a resumed run keeps its own config.json)")
    if args.resume and args.overwrite:
        raise cfgs.ConfigError(f"--overwrite replaces a run with a new one; --resume {args.resume} continues it: "
                               "give one of them")
    overrides = cfgs.overrides(args)
    if args.resume:
        if not (args.resume / "config.json").is_file() or not (args.resume / "last.pt").is_file():
            raise cfgs.ConfigError(f"--resume {args.resume}: no config.json and last.pt there; "
                                   "give the folder of a run started by run_configs.py")
        refused = sorted(set(overrides) - set(RESUMABLE))
        if refused:
            raise cfgs.ConfigError(f"--resume cannot change {', '.join(cfgs.flag(k) for k in refused)} (the run "
                                   f"would no longer be the same); allowed: {', '.join(cfgs.flag(k) for k in RESUMABLE)}")
        cfg = replace(cfgs.load(args.resume / "config.json"), **overrides)
    else:
        cfg = cfgs.build(args.config, overrides)
    try:
        select_device(cfg.device)
    except ValueError as err:
        raise cfgs.ConfigError(str(err)) from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Parse, build the config, train; return the exit code (2 for a bad command line, data or file)."""
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else [str(a) for a in argv])
        if args.list or (not args.config and not args.resume):
            print_configs()
            if not args.list:
                print()
                parser.print_usage()
            return EXIT_OK
        cfg = resolve(args, rest)
    except cfgs.ConfigError as err:
        parser.print_usage(sys.stderr)
        return fail(str(err))

    try:
        train(cfg, run_dir=args.resume, resume=args.resume is not None, log_level=args.log_level,
              overwrite=args.overwrite)
    except (DataError, CheckpointError, cfgs.ConfigError) as err:
        return fail(str(err))
    except NonFiniteLoss as err:
        fail(str(err))
        return EXIT_PARTIAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
