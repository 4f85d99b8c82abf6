"""Add what one fine-tuning taught to another checkpoint, in weight space (task arithmetic).

    python -m utils.merge --into checkpoints/lrrnet_general.pt --add checkpoints/lrrnet_nudt_sirst.pt \\
        --base sirst_stage1.pt --scale 0.5 --out runs/merged.pt

Every weight becomes ``into + scale * (add - base)``: ``add - base`` is what fine-tuning ``base``
into ``add`` changed (a "task vector", Ilharco et al., *Editing models with task arithmetic*,
ICLR 2023), and ``scale`` says how much of it to add. It is meant for checkpoints that descend
from the same ``base``: here the general and NUDT-SIRST checkpoints both descend from SIRST v1
stage 1 (``git show 010964d:checkpoints/lrrnet_sirst_v1.pt > sirst_stage1.pt``). Between unrelated
networks the sum means nothing; the tool cannot tell, so it is the user's to know.

--out is never one of the three inputs, and an existing file is replaced only with --overwrite; merged weights
that are not finite (a --scale so large that they overflow, or an input holding NaN/Inf) are refused before
anything is written.

Integer tensors (none in LRRNet today) are taken from ``into``. The output is a checkpoint that
``load_model``, ``inference.py`` and ``run_configs.py --init`` read; it records the three files
(path and SHA-256) and the scale under ``"merge"``, keeps ``into``'s network and config, and drops
what belonged to ``into``'s weights alone (its verifier, val and test scores). It is written
atomically.

An even weight average of two checkpoints (a "model soup") is ``--into A --add B --base A --scale 0.5``.
``--score CONFIG`` then scores the merged LRRNet on that named config's val split(s) (every source's
val and the selection score for a ``--sources`` config) and its test split, before writing, and stores
them as an exported run stores its own: ``val`` and ``summary["best"]`` (``--data-root`` for a config
of one dataset). ``general_ft``'s val holds video frames: several minutes on a CPU.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Sequence

import torch

from models.load import CheckpointError, load_model
from utils.checkpoint import FORMAT_VERSION, atomic_save, code_revision
from utils.cli import ArgumentParser, BoolFlag, add_device, fail, finite_float
from utils.data import DataError
from utils.eval.metrics import plain
from utils.files import OutputError, check_output, file_sha256
from utils.infer.device import select_device
from utils.train.config import ConfigError, build
from utils.train.setup import eval_sets
from utils.train.validate import evaluate, score_sets

KEPT_KEYS = ("model_name", "model_hparams", "config")  # of --into; the rest described its own weights


def task_arithmetic(into: dict[str, torch.Tensor], add: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                    scale: float) -> dict[str, torch.Tensor]:
    """Return into + scale * (add - base) for every floating-point tensor, into's tensor for the others.

    The three state_dicts must hold the same names with the same shapes (CheckpointError otherwise).
    """
    for name, other in (("--add", add), ("--base", base)):
        if other.keys() != into.keys():
            missing, extra = sorted(into.keys() - other.keys()), sorted(other.keys() - into.keys())
            raise CheckpointError(f"{name} does not hold --into's weights (missing {missing[:3]}, extra "
                                  f"{extra[:3]}): pass checkpoints of the same network")
        bad = [k for k in into if other[k].shape != into[k].shape]
        if bad:
            raise CheckpointError(f"{name}'s {bad[0]} is {tuple(other[bad[0]].shape)}, --into's "
                                  f"{tuple(into[bad[0]].shape)}: pass checkpoints of the same network")
    return {k: into[k] + scale * (add[k].to(into[k].dtype) - base[k].to(into[k].dtype))
            if into[k].is_floating_point() else into[k].clone() for k in into}


def merge(into: Path, add: Path, base: Path, scale: float, score: tuple | None = None) -> dict:
    """Return the merged checkpoint dict (weights, into's network and config, the recipe under "merge").

    score: (config name, its val set, test set, per-source val sets, device) from eval_sets: the merged weights are
    then scored on them and the result stored under "val" and "summary", as utils.checkpoint.export stores a run's.
    """
    loaded = {name: load_model(path) for name, path in (("into", into), ("add", add), ("base", base))}
    states = {name: net.state_dict() for name, (net, _) in loaded.items()}
    meta = loaded["into"][1]   # each file is read once
    out = {k: meta[k] for k in KEPT_KEYS if k in meta}
    out.setdefault("model_name", "LRRNet")
    out["model"] = task_arithmetic(states["into"], states["add"], states["base"], scale)
    bad = [k for k, v in out["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        dtype = str(states["into"][bad[0]].dtype).removeprefix("torch.")
        raise CheckpointError(f"the merged weights are not finite in {len(bad)} of {len(out['model'])} tensors "
                              f"(first {bad[0]}): --scale {scale:g} x (--add - --base) overflows {dtype}, or an "
                              "input holds NaN/Inf; pass a smaller --scale (nothing was written)")
    out["format_version"] = FORMAT_VERSION
    out["merge"] = {"rule": "into + scale * (add - base)", "scale": scale,
                    **{name: {"path": str(path), "sha256": file_sha256(path)}
                       for name, path in (("into", into), ("add", add), ("base", base))}}
    if score is not None:
        net = copy.deepcopy(loaded["into"][0])   # a copy: states["into"] shares its tensors with into's network
        net.load_state_dict(out["model"])
        out.update(scored(net, *score))
    return out


def scored(net: torch.nn.Module, config: str, val_set, test_set, val_sources: tuple, device: torch.device) -> dict:
    """Return {"val": ..., "summary": ...} for net scored on a config's val split(s) and test split."""
    net = net.to(device).eval()
    val = score_sets(net, val_set, val_sources, device)
    test = plain(evaluate(net, test_set, device, progress=True).compute())
    best = {"epoch": None, "weights": "merge", "val": val, "test": test}
    return {"val": {"selected": "merge", "selected_score": val["score"], "merge": val},
            "summary": {"config": config, "n_test": len(test_set), "code_revision": code_revision(),
                        "world_size": 1, "best": best}}


def main(argv: Sequence[str] | None = None) -> int:
    """Write --into + --scale * (--add - --base) to --out; return 0, or 2 with a one-line error."""
    parser = ArgumentParser(prog="python -m utils.merge", description="Task arithmetic: write INTO + SCALE * (ADD - BASE), weight by "
                                                 "weight, as a checkpoint (for checkpoints that share BASE).")
    parser.add_argument("--into", type=Path, required=True, help="the checkpoint to add to (its network and config "
                                                                 "are kept)")
    parser.add_argument("--add", type=Path, required=True, help="a checkpoint fine-tuned from --base")
    parser.add_argument("--base", type=Path, required=True, help="the checkpoint --add was fine-tuned from")
    parser.add_argument("--scale", type=finite_float, default=1.0, help="how much of add - base to add (default 1)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the checkpoint to write (new, or --overwrite; never one of the three inputs)")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace an existing --out")
    parser.add_argument("--score", metavar="CONFIG", default=None,
                        help="score the merged LRRNet on this named config's val split(s) and test split and store "
                             "the scores in the checkpoint (as an exported run has them)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="with --score and a config of one dataset: its folder (default: the config's)")
    parser.add_argument("--sources", default=None,
                        help="with --score and a --sources config: its sources, as run_configs.py takes them "
                             "(names under datasets/ or paths, NAME:WEIGHT,...; default: the config's)")
    add_device(parser)
    args = parser.parse_args(argv)
    try:
        check_output(args.out, args.overwrite, [("--into", args.into), ("--add", args.add), ("--base", args.base)])
        score = None
        if args.score is not None:     # the data is read and checked before any work
            overrides = {k: str(v) for k, v in (("data_root", args.data_root), ("sources", args.sources)) if v}
            cfg = build(args.score, overrides)
            if args.data_root is not None and cfg.sources:
                raise ConfigError(f"--data-root does not apply to config {args.score!r}: it reads its --sources "
                                  f"({cfg.sources}); drop --data-root")
            score = (args.score, *eval_sets(cfg), select_device(args.device))
        out = merge(args.into, args.add, args.base, args.scale, score)
        atomic_save(out, args.out)
    except (CheckpointError, ConfigError, DataError, OutputError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write {args.out} ({error.strerror or error}): pass a writable --out")
    print(f"wrote {args.out}: {args.into} + {args.scale:g} x ({args.add} - {args.base}), "
          f"{len(out['model'])} tensors")
    if "summary" in out:
        val, test = out["summary"]["best"]["val"], out["summary"]["best"]["test"]
        print(f"{args.score}: val score {val['score']:.4f}; test IoU {100 * test['iou']:.2f}, Pd {100 * test['pd']:.2f}, "
              f"Fa {1e6 * test['fa']:.2f} x 1e-6 ({out['summary']['n_test']} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
