"""Choose between candidate checkpoints on val: every source's val term, the selection score and, with a
detectability report of each, the extended score (docs/protocols.md#general-model). Test is never scored.

    python -m utils.select --config general_v3_cpu --checkpoints checkpoints/lrrnet_general.pt runs/general_v3/best.pt \\
        --detectability results/detect_v2/detectability.json results/detect_v3/detectability.json

Each checkpoint's LRRNet runs alone (no verifier: the selection rule of training) on the named config's val
splits, as training validates them (``utils.train.validate.score_sets``: pooled IoU for pixel masks, box counts
for box-labelled sources). The table prints one row per checkpoint; the chosen one has the highest extended
score (the selection score when no reports are given); ``--json`` writes the rows.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from models.load import CheckpointError, load_model
from utils.cli import ArgumentParser, BoolFlag, add_device, fail
from utils.data import DataError
from utils.eval.selection import detectability_term, extended_score, source_term
from utils.files import OutputError, check_output, write_json
from utils.infer.device import select_device
from utils.train.config import ConfigError, build
from utils.train.setup import eval_sets
from utils.train.validate import score_sets


def parse_args(argv: Sequence[str] | None):
    """Return the parsed command line."""
    parser = ArgumentParser(prog="python -m utils.select",
                            description="Score candidate checkpoints on a named config's val splits and choose one by "
                                        "the selection score, extended by a detectability term when reports are given.")
    parser.add_argument("--config", required=True, help="the named config whose val splits score (its --sources)")
    parser.add_argument("--sources", default=None, help="the config's sources replaced by these (NAME[:WEIGHT],... as "
                                                        "run_configs.py takes them)")
    parser.add_argument("--checkpoints", required=True, nargs="+", type=Path, metavar="CKPT", help="the candidates")
    parser.add_argument("--detectability", nargs="+", type=Path, default=None, metavar="JSON",
                        help="one detectability.json per checkpoint, in the same order (python -m utils.detectability "
                             "on val backgrounds, default grid)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --json")
    add_device(parser, default="cpu")
    return parser.parse_args(argv)


def format_rows(rows: list[dict], chosen: int) -> str:
    """Return the markdown table: one row per checkpoint, every source's term, the scores; the chosen one marked."""
    names = list(rows[0]["sources"])
    head = "| checkpoint | " + " | ".join(names) + " | selection score | detectability term | extended score |"
    lines = [head, "|---" * (len(names) + 4) + "|"]
    for k, r in enumerate(rows):
        terms = " | ".join(f"{source_term(r['sources'][n]):.4f}" for n in names)
        det = "" if r["detectability_term"] is None else f"{r['detectability_term']:.4f}"
        ext = "" if r["extended_score"] is None else f"{r['extended_score']:.4f}"
        mark = " (chosen)" if k == chosen else ""
        lines.append(f"| {r['checkpoint']}{mark} | {terms} | {r['score']:.4f} | {det} | {ext} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Score every candidate on val, print the table and the choice; 0, or 2 on an error."""
    args = parse_args(argv)
    try:
        if args.detectability is not None and len(args.detectability) != len(args.checkpoints):
            raise ConfigError(f"--detectability gives {len(args.detectability)} report(s) for "
                              f"{len(args.checkpoints)} checkpoint(s): give one per checkpoint, in the same order")
        if args.json is not None:
            check_output(args.json, args.overwrite, [("--checkpoints", c) for c in args.checkpoints], option="--json")
        reports = [json.loads(p.read_text()) for p in args.detectability] if args.detectability else [None] * len(args.checkpoints)
        terms = [None if r is None else detectability_term(r) for r in reports]
        cfg = build(args.config, {"sources": args.sources} if args.sources else None)
        if not cfg.sources:
            raise ConfigError(f"config {args.config!r} has no --sources: utils.select compares general models")
        val_set, _, val_sources = eval_sets(cfg)
        device = select_device(args.device)
        nets = [load_model(c)[0] for c in args.checkpoints]     # every file is read before the minutes of scoring
    except (CheckpointError, ConfigError, DataError, OutputError, ValueError, OSError) as error:
        return fail(str(error))
    rows = []
    for path, net, report, term in zip(args.checkpoints, nets, reports, terms):
        with torch.inference_mode():
            scores = score_sets(net.to(device).eval(), val_set, val_sources, device)
        rows.append({"checkpoint": str(path), "sources": scores["sources"], "score": scores["score"],
                     "detectability_term": term,
                     "extended_score": None if report is None else extended_score(scores["sources"], report)})
    key = "extended_score" if args.detectability else "score"
    chosen = max(range(len(rows)), key=lambda k: rows[k][key])
    print(format_rows(rows, chosen))
    print(f"chosen on val by the {'extended ' if args.detectability else ''}selection score: {rows[chosen]['checkpoint']}")
    if args.json is not None:
        write_json(args.json, {"config": args.config, "rows": rows, "chosen": rows[chosen]["checkpoint"], "by": key})
    return 0


if __name__ == "__main__":
    sys.exit(main())
