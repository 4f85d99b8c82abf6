"""One GPU window, one command (``make gpu-train``): train a window recipe from its pack, then bring back what counts.

    python -m utils.train.window --config nudt_window                    # results under $OUT, else runs/
    python -m utils.train.window --config general_window --time-budget 7 --device cuda
    python -m utils.train.window --score-test OUT/nudt_window --data-root datasets/NUDT-SIRST   # a pack without test

Trains as ``run_configs.py --config NAME`` does (every other option is passed on) into a run folder,
then writes the results folder: best.pt without the optimiser's state (the weights selected on
val, with their history and the summary, as the shipped checkpoints hold them: 14 MB), summary.json,
train.log, config.json, and results_row.md — the run's row in docs/results.md's format. The
results folder is $OUT/NAME when $OUT is set (five files: what a GPU machine brings back is at
most 8 files of 16 MiB), else the run folder itself (runs/TIME_NAME, which keeps last.pt). docs/gpu.md: what one window runs, how long, what comes back.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from models import CheckpointError, load_checkpoint, load_model
from utils import RUNS_DIR
from utils.checkpoint import atomic_save
from utils.cli import EXIT_OK, EXIT_PARTIAL, fail
from utils.data import DataError, IRSTDDataset, resolve_data_root
from utils.eval.metrics import plain
from utils.files import atomic_write_text, write_json
from utils.infer.device import select_device
from utils.train import config as cfgs
from utils.train.config import parse_sources
from utils.train.loop import NonFiniteLoss, train
from utils.train.setup import split_options
from utils.train.validate import evaluate

TRAINING_ONLY = ("optimizer", "scheduler", "scaler", "ema", "ema_n_averaged", "rng", "nonfinite_in_row", "hard_points")


def percent(scores: dict | None, key: str) -> str:
    """Return scores[key] in % with two decimals, or "-" when there are no scores."""
    return f"{100 * scores[key]:.2f}" if scores and scores.get(key) is not None else "-"


def results_row(summary: dict, config: dict, device: str) -> str:
    """Return the run's row of docs/results.md's benchmark table (scores in %, Fa x 1e-6) for its best.pt."""
    best, cfg = summary["best"], config
    val, test = best["val"], best["test"]
    epochs = f"{best['epoch']} of {summary['epochs']}" + (f" ({summary['stopped_early']})"
                                                           if "stopped_early" in summary else "")
    where = f"{summary.get('train_minutes', float('nan')):.1f} min, {device}"
    if "test_scored_apart" in summary:
        where += f"; test scored on {summary['test_scored_apart']}"
    cells = [f"ours, `{summary['config']}` (`--loader {cfg['loader']}`)", cfg["sources"] or cfg["dataset"],
             "best val", epochs, percent(val, "iou"), f"**{percent(test, 'iou')}**", percent(test, "niou"),
             percent(test, "pd"), f"{test['fa'] * 1e6:.2f}" if test else "-", percent(test, "f1"), where]
    return "| " + " | ".join(cells) + " |\n"


def bring_back(run_dir: Path, out: Path) -> Path:
    """Write the results folder out from a finished run: best.pt (weights and history), summary.json, train.log,
    config.json and results_row.md; return the row's path."""
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    best = load_checkpoint(run_dir / "best.pt")
    if out.resolve() != run_dir.resolve():
        for name in ("summary.json", "train.log", "config.json"):
            shutil.copyfile(run_dir / name, out / name)
        atomic_save({**{k: v for k, v in best.items() if k not in TRAINING_ONLY}, "summary": summary}, out / "best.pt")
    row = results_row(summary, json.loads((run_dir / "config.json").read_text()), best.get("device", "?"))
    return atomic_write_text(out / "results_row.md", row)


def score_test(results: Path, data_root: str = "") -> dict:
    """Score results/best.pt once on its config's test split read from the dataset folder (data_root when given),
    on the CPU; store the scores in results/summary.json and best.pt, rewrite results_row.md; return the summary."""
    best = load_checkpoint(results / "best.pt")
    summary = json.loads((results / "summary.json").read_text())
    if summary["best"]["test"] is not None:
        raise cfgs.ConfigError(f"{results} already holds a test score: a test split is scored once")
    cfg = cfgs.from_dict(best["config"])
    first = parse_sources(cfg.sources)[0][0] if cfg.sources else (cfg.data_root or cfg.dataset)
    test = IRSTDDataset(resolve_data_root(data_root or first), "test", cache=False, **split_options(cfg))
    net, _ = load_model(results / "best.pt")
    scores = plain(evaluate(net, test, torch.device("cpu"), progress=True).compute())
    summary["best"]["test"], summary["n_test"] = scores, len(test)
    summary["test_scored_apart"] = f"cpu x{os.cpu_count()}"
    write_json(results / "summary.json", summary)
    atomic_save({**best, "summary": summary}, results / "best.pt")
    atomic_write_text(results / "results_row.md", results_row(summary, best["config"], best.get("device", "?")))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Train the recipe, write the results folder, print where it is; return the exit code (run_configs.py's)."""
    parser = cfgs.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    parser.add_argument("--config", choices=list(cfgs.CONFIGS), metavar="NAME",
                        help="the recipe to train (nudt_window, general_window, or any other)")
    parser.add_argument("--score-test", type=Path, metavar="RESULTS",
                        help="instead: score the best.pt of a results folder whose pack had no test split, once, "
                             "on the CPU, from the dataset folder (--data-root when given)")
    try:
        args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else [str(a) for a in argv])
        if bool(args.config) == bool(args.score_test):
            raise cfgs.ConfigError("give --config NAME (train) or --score-test RESULTS (score), one of them")
        if args.score_test:
            overrides = cfgs.parse_overrides(rest)
            if set(overrides) - {"data_root"} or not (args.score_test / "best.pt").is_file():
                raise cfgs.ConfigError("--score-test RESULTS takes a folder holding best.pt and summary.json, and "
                                       "--data-root PATH at most")
            summary = score_test(args.score_test, overrides.get("data_root", ""))
            print(f"test IoU {summary['best']['test']['iou']:.4f}; {args.score_test / 'results_row.md'}:")
            print((args.score_test / "results_row.md").read_text(), end="")
            return EXIT_OK
        overrides = cfgs.parse_overrides(rest)
        if "out" in overrides:
            raise cfgs.ConfigError("the window command chooses the run folder itself (runs/TIME_NAME): leave "
                                   "out --out, or call run_configs.py")
        env_out = os.environ.get("OUT")
        run_dir = RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}_{args.config}"
        cfg = cfgs.build(args.config, {**overrides, "out": str(run_dir)})
        select_device(cfg.device)
    except (cfgs.ConfigError, ValueError, DataError, CheckpointError) as err:
        return fail(str(err))
    out = Path(env_out) / args.config if env_out else run_dir
    try:
        summary = train(cfg)
    except (DataError, CheckpointError, cfgs.ConfigError) as err:
        return fail(str(err))
    except NonFiniteLoss as err:
        fail(str(err))
        return EXIT_PARTIAL
    row = bring_back(run_dir, out)
    test = summary["best"]["test"]
    print(f"results in {out}: best.pt, summary.json, train.log, config.json, results_row.md; " +
          (f"test IoU {test['iou']:.4f}" if test else f"no test split in the pack: score it where the data is "
           f"with python -m utils.train.window --score-test {out}"))
    print(row, end="")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
