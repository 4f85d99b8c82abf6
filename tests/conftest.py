"""Shared test helpers: where ../shared lives, and skips when it is absent."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
DATASETS = SHARED / "datasets"


def need(path: Path) -> Path:
    """Return path, or skip the test with a reason when it is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the project's ../shared folder")
    return path
