"""Shared test helpers: where ../shared lives, and skips when it is absent."""
from pathlib import Path

import pytest

from utils import ROOT

SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
DATASETS = SHARED / "datasets"


def need(path: Path) -> Path:
    """Return path, or skip the test with a reason when it is absent."""
    if not path.exists():
        where = ("restore it: git checkout -- " + str(path.relative_to(ROOT))) if path.is_relative_to(ROOT) \
            else "this test needs the project's ../shared folder"
        pytest.skip(f"{path} is absent: {where}")
    return path


def random_checkpoint(path: Path, seed: int = 0, **hparams) -> Path:
    """Write a checkpoint of a random-weight LRRNet (seeded; hparams shrink it) in run_configs.py's format to path;
    return path."""
    import torch

    from models import get_model
    from utils.checkpoint import atomic_save

    torch.manual_seed(seed)
    net = get_model("LRRNet", **hparams)
    atomic_save({"model": net.state_dict(), "model_name": "LRRNet", "model_hparams": net.hparams()}, path)
    return path
