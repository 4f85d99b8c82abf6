"""Train LRRNet from a named config.

    python run_configs.py --list
    python run_configs.py --config synthetic                     # about a minute on a CPU, no data needed
    python run_configs.py --config sirstv1_cpu --data-root ../shared/datasets/SIRST-v1
    python run_configs.py --config nudt --epochs 50 --lr 2e-4 --batch-size 4 --device cuda --out runs/nudt50
    python run_configs.py --resume runs/20261125-2200_sirstv1_cpu [--epochs 150]
    torchrun --nproc_per_node 2 run_configs.py --config synthetic --device cpu   # DDP (gloo on the CPU)

Any config field is an option (--key value); unknown keys and wrong types are refused
(exit code 2) before anything is written. The run directory gets config.json, train.log,
TensorBoard events (tb/), val_split.txt, last.pt, best.pt (best val IoU) and summary.json.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from utils import config as cfgs
from utils.data import DataError
from utils.runtime import select_device


def print_configs() -> None:
    """Print the named configs, one line each."""
    print("named configs:")
    for name, (description, _) in cfgs.CONFIGS.items():
        print(f"  {name:<12} {description}")


def main(argv: list[str] | None = None) -> int:
    """Parse, build the config, train; return the exit code (2 for a bad command line or data)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False,
                                     usage="%(prog)s (--config NAME | --resume RUN_DIR | --list) [--key value ...]")
    parser.add_argument("--config", choices=list(cfgs.CONFIGS), help="named config")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from RUN_DIR/last.pt")
    parser.add_argument("--list", action="store_true", help="list the named configs")
    args, rest = parser.parse_known_args(argv)
    if args.list or (not args.config and not args.resume):
        print_configs()
        if not args.list:
            print()
            parser.print_usage()
        return 0
    try:
        if args.config and args.resume:
            raise cfgs.ConfigError("give --config NAME for a new run or --resume RUN_DIR, not both "
                                   "(a resumed run keeps its own config.json)")
        overrides = cfgs.parse_overrides(rest)
        if args.resume:
            if not (args.resume / "config.json").is_file() or not (args.resume / "last.pt").is_file():
                raise cfgs.ConfigError(f"--resume {args.resume}: no config.json and last.pt there; "
                                       "give the directory of a run started by run_configs.py")
            allowed = {"epochs", "device", "workers", "val_every", "image_every", "compile", "nan_patience"}
            refused = sorted(set(overrides) - allowed)
            if refused:
                raise cfgs.ConfigError(f"--resume cannot change {', '.join(refused)} (the run would no longer be "
                                       f"the same); allowed with --resume: {', '.join(sorted(allowed))}")
            cfg = replace(cfgs.load(args.resume / "config.json"), **overrides)
            cfgs.validate(cfg.to_dict())
        else:
            cfg = cfgs.build(args.config, overrides)
        try:
            select_device(cfg.device)
        except ValueError as err:
            raise cfgs.ConfigError(str(err)) from None
    except cfgs.ConfigError as err:
        parser.print_usage(sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        return 2

    from utils.engine import train  # heavy imports only once the command line is valid
    try:
        train(cfg, run_dir=args.resume, resume=args.resume is not None)
    except (DataError, cfgs.ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    return 0


if __name__ == "__main__":
    sys.exit(main())
