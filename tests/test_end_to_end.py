"""End to end on synthetic scenes: train a few epochs, export with inference.py, score with cal_from_mask.py.

The scorer, reading the exported .mat maps, must give the numbers the training engine
computed for the same checkpoint on the same test split.
"""
import json

import pytest

import cal_from_mask
import inference
import run_configs

pytestmark = pytest.mark.slow   # whole commands, trained networks or the real clip: make test-fast skips them


def test_train_infer_score_agree(tmp_path):
    run = tmp_path / "run"
    assert run_configs.main(["--config", "synthetic", "--synthetic-frames", "24", "--synthetic-size", "64",
                             "--epochs", "2", "--steps-per-epoch", "4", "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    data, pred = run / "synthetic", tmp_path / "pred"
    assert inference.main(["--checkpoint", str(run / "best.pt"), "--data-root", str(data), "--split", "test",
                           "--out", str(pred), "--overlay", "--batch-size", "1", "--dtype", "fp32", "--quiet"]) == 0
    assert cal_from_mask.main(["--pred", str(pred), "--data-root", str(data), "--split", "test"]) == 0
    scored = json.loads((pred / "metrics.json").read_text())
    engine = summary["best"]["test"]
    assert scored["n_images"] == engine["n_images"] == 12
    for key in ("iou", "niou", "precision", "recall", "pd", "fa", "auc"):
        assert scored[key] == pytest.approx(engine[key], abs=1e-3), key
    assert (pred / "roc.png").is_file() and (pred / "detections.csv").is_file()
    assert len(list((pred / "overlay").glob("*.png"))) == 12
