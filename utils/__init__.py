"""Library code behind the entry scripts: data, training engine, prediction, metrics and helpers."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: datasets/, checkpoints/, results/ and runs/ live here
DATASETS_DIR = ROOT / "datasets"
RESULTS_DIR = ROOT / "results"
RUNS_DIR = ROOT / "runs"
