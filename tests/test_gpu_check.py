"""benchmarks/gpu_check.py without CUDA: one line and exit 2; its report from a stored or a stopped run;
bench_model.py stopped part-way."""
import json
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from utils import ROOT


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: make gpu-check runs the real thing")
def test_without_cuda_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: no CUDA device") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_metrics_compared_as_printed():
    a = {"iou": 0.723049, "niou": 0.70001, "precision": 0.8, "recall": 0.85, "f1": 0.82, "pd": 0.97, "auc": 0.95,
         "fa": 12.344e-6}
    b = {**a, "iou": 0.72304, "fa": 12.3449e-6}  # both print 72.30 % and 12.34 x1e-6
    assert gpu_check.rounded(a) == gpu_check.rounded(b)
    assert gpu_check.rounded(a) != gpu_check.rounded({**a, "iou": 0.7232})


def test_markdown_report_lists_steps_nudt_and_throughput():
    rows = [{"batch": n, "path": p, "fps": f, "speedup": f / 100, "peak_gb": 1.0, "max_abs_diff_T": 0.0}
            for n, p, f in ((1, "reference", 100.0), (1, "bf16+graphs", 650.0), (16, "bf16", 3200.0))]
    metrics = {"iou": 0.7, "fa": 1e-5}
    report = {"device": "NVIDIA H100", "torch": "2.x", "cuda": "12", "seconds": 300.0,
              "steps": {"tests": {"ok": True, "seconds": 30}, "torchrun": {"ok": False, "seconds": 5},
                        "nudt": {"ok": True, "seconds": 80, "note": "agree",
                                 "runs": {"cuda": {"metrics": metrics}, "cpu": {"metrics": metrics}}},
                        "throughput": {"ok": True, "seconds": 100, "device": "NVIDIA H100", "rows": rows,
                                       "goals": {"1": {"bf16_frames_per_s": 650.0, "goal": 500.0, "met": True},
                                                 "16": {"bf16_frames_per_s": 3200.0, "goal": 3000.0, "met": True}}}}}
    text = gpu_check.markdown(report)
    assert "| torchrun | FAILED | 5 |" in text and "| tests | passed | 30 |" in text
    assert "| 1 | bf16+graphs | 650 | 6.50x |" in text
    assert "batch 16: best bf16 3200.0 frames/s, goal 3000: met" in text
    assert "| cuda | 0.7 | 1e-05 |" in text


@pytest.mark.slow
def test_bench_model_keeps_what_it_timed_when_stopped(tmp_path, monkeypatch, capsys):
    """A benchmark stopped part-way (a time limit) has printed and saved every (size, batch) it finished."""
    from benchmarks import bench_model

    out = tmp_path / "model.json"
    lines = bench_model.row_lines
    calls = []

    def stop_at_second(rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt     # stands for the time limit: after the first block was timed
        return lines(rows)

    monkeypatch.setattr(bench_model, "row_lines", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        bench_model.main(["--devices", "cpu", "--sizes", "32x32", "--batches", "1", "2", "--repeats", "1",
                          "--json", str(out)])
    saved = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["path"]) for r in saved] == [(1, "reference"), (1, "fp32"), (1, "bf16")]
    printed = capsys.readouterr().out
    assert "| cpu | 32x32 | 1 | fp32 |" in printed and "| cpu | 32x32 | 2 |" not in printed


def test_stopped_check_keeps_finished_steps_and_throughput_rows(tmp_path, monkeypatch):
    """gpu_check stopped inside its throughput step: report.json / .md hold the finished steps and the rows timed."""
    from benchmarks import bench_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(gpu_check, "step_tests", lambda args: {"ok": True, "exit_code": 0})
    row = {"device": "cuda", "size": "512x512", "batch": 1, "path": "bf16", "s_per_call": 0.002, "fps": 650.0,
           "speedup": 3.0, "peak_gb": 1.0, "max_abs_diff_T": 0.0}

    def first_batch_then_stop(*args, on_rows=None, **kwargs):
        on_rows([row])
        raise KeyboardInterrupt         # stands for the time limit, while batch 16 is being timed

    monkeypatch.setattr(bench_model, "run", first_batch_then_stop)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--steps", "tests", "throughput", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["steps"]["tests"]["ok"] is True
    throughput = report["steps"]["throughput"]
    assert throughput["partial"] and throughput["ok"] is False and throughput["rows"] == [row]
    text = (tmp_path / "report.md").read_text()
    assert "| tests | passed |" in text and "| throughput | unfinished |" in text
    assert "| 1 | bf16 | 650 | 3.00x |" in text
