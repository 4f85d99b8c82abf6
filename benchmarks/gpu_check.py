"""One command that checks the CUDA paths on a GPU machine and measures them: `make gpu-check`.

    python benchmarks/gpu_check.py                    # everything; results/gpu_check/report.json and report.md
    python benchmarks/gpu_check.py --steps throughput --repeats 20

Steps (each runs even when an earlier one failed; the report says which passed):
  tests       pytest -m cuda: the CUDA-marked tests (tests/test_cuda.py)
  train       run_configs.py --config synthetic for 2 epochs on the GPU: autocast (bf16 where supported),
              channels_last; then the same with --compile
  torchrun    torchrun --standalone --nproc_per_node <GPUs> run_configs.py: DDP over NCCL, 1 epoch
  nudt        inference.py + cal_from_mask.py on the NUDT-SIRST test split with the shipped SIRST v1 checkpoint,
              on the GPU and on the CPU (fp32 both); the metrics compared to the printed digits
              (needs datasets/NUDT-SIRST; skipped with a note without it)
  throughput  benchmarks/bench_model.py at 512 x 512, batch 1 and 16: reference (the release's way), fp32, bf16,
              torch.compile, CUDA graphs (compile mode="reduce-overhead")
No data is downloaded; the generated scenes need none. Goal on one H100: >= 500 frames/s at batch 1 and
>= 3000 frames/s at batch 16 in bf16. Without CUDA the script stops at once with one line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

from benchmarks import bench_model  # noqa: E402
from utils.files import atomic_write_text, write_json  # noqa: E402

STEPS = ("tests", "train", "torchrun", "nudt", "throughput")
CHECKPOINT = ROOT / "checkpoints" / "lrrnet_sirst_v1.pt"
NUDT = ROOT / "datasets" / "NUDT-SIRST"
METRIC_DIGITS = {"iou": 4, "niou": 4, "precision": 4, "recall": 4, "f1": 4, "pd": 4, "auc": 4}  # the table's %.2f
FA_DIGITS = 8  # Fa printed as x1e-6 with 2 decimals: a fraction to 8 decimals
GOALS = {1: 500.0, 16: 3000.0}  # bf16 frames/s on one H100 (issue: speed and deployment)
TAIL = 3000  # characters of each command's output kept in the report


def run_command(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run a command from the repository root; return its exit code, seconds and the tail of its output."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        code, output = 124, f"timed out after {timeout:.0f} s\n" + ((error.stdout or b"").decode(errors="replace")
                                                                    if isinstance(error.stdout, bytes) else "")
    return {"command": " ".join(command), "exit_code": code, "seconds": round(time.perf_counter() - start, 1),
            "output_tail": output[-TAIL:]}


def step_tests(args: argparse.Namespace) -> dict:
    """The CUDA-marked tests."""
    result = run_command([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"], timeout=300)
    result["ok"] = result["exit_code"] == 0
    return result


def train_command(out: Path, epochs: int, *extra: str) -> list[str]:
    """Return a run_configs.py command line for the synthetic config on the GPU."""
    return ["run_configs.py", "--config", "synthetic", "--device", "cuda", "--epochs", str(epochs),
            "--out", str(out), "--overwrite", *extra]


def best_score(run_dir: Path) -> float | None:
    """Return the best val score (IoU for one source) recorded in a run folder's best.pt, or None."""
    path = run_dir / "best.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True).get("best_metric")


def step_train(args: argparse.Namespace) -> dict:
    """Two epochs of synthetic training with autocast and channels_last, then with torch.compile."""
    runs = {}
    for name, extra in (("amp_channels_last", ()), ("amp_channels_last_compile", ("--compile",))):
        out = args.work / name
        result = run_command([sys.executable, *train_command(out, 2, *extra)], timeout=420)
        result["best_val_score"] = best_score(out)
        result["ok"] = result["exit_code"] == 0 and result["best_val_score"] is not None
        runs[name] = result
    return {"runs": runs, "ok": all(r["ok"] for r in runs.values())}


def step_torchrun(args: argparse.Namespace) -> dict:
    """One epoch of DDP over NCCL, one process per GPU."""
    n_gpus = torch.cuda.device_count()
    out = args.work / "ddp"
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    result = run_command([*launcher, "--standalone", f"--nproc_per_node={n_gpus}", *train_command(out, 1)],
                         timeout=420)
    log_text = (out / "train.log").read_text() if (out / "train.log").is_file() else ""
    result.update({"processes": n_gpus, "nccl_in_log": "nccl" in log_text.lower(),
                   "ok": result["exit_code"] == 0 and (out / "last.pt").is_file()})
    return result


def rounded(metrics: dict) -> dict:
    """Return the metrics as the scorer's table prints them (percent with 2 decimals, Fa x1e-6 with 2)."""
    out = {k: round(metrics[k], d) for k, d in METRIC_DIGITS.items() if metrics.get(k) is not None}
    out["fa"] = round(metrics["fa"], FA_DIGITS)
    return out


def step_nudt(args: argparse.Namespace) -> dict:
    """NUDT-SIRST test on the GPU and the CPU, fp32, scored the same way; the printed metrics compared."""
    if not NUDT.is_dir():
        return {"ok": None, "note": f"skipped: {NUDT} is absent (link or copy NUDT-SIRST there to run this step)"}
    runs = {}
    for device in ("cuda", "cpu"):
        out = args.work / f"nudt_{device}"
        result = run_command([sys.executable, "inference.py", "--checkpoint", str(CHECKPOINT), "--data-root", str(NUDT),
                              "--split", "test", "--device", device, "--out", str(out), "--overwrite", "--quiet",
                              "--score"], timeout=600)
        metrics_path = out / "metrics.json"
        result["metrics"] = rounded(json.loads(metrics_path.read_text())) if metrics_path.is_file() else None
        runs[device] = result
    gpu, cpu = runs["cuda"]["metrics"], runs["cpu"]["metrics"]
    same = gpu is not None and gpu == cpu
    differences = {k: [gpu[k], cpu[k]] for k in gpu if gpu[k] != cpu.get(k)} if gpu and cpu else None
    note = ("the GPU and CPU metrics agree to the printed digits" if same else
            "cuDNN convolutions sum in another order than oneDNN's (and use TF32 unless it is turned off): "
            "a pixel at p = 0.5 can fall either side; the differences are listed")
    return {"runs": runs, "same_printed_metrics": same, "differences": differences, "note": note,
            "ok": all(r["exit_code"] == 0 for r in runs.values())}


def step_throughput(args: argparse.Namespace) -> dict:
    """Frames/s at 512 x 512, batch 1 and 16, every path, the release's way beside ours."""
    device = bench_model.machine(torch.device("cuda"))
    done: list[dict] = []

    def on_rows(new: list[dict]) -> None:   # each batch size saved as soon as it is timed (the slow step)
        done.extend(new)
        args.save_partial({"device": device, "rows": list(done)})

    rows = bench_model.run(torch.device("cuda"), [(512, 512)], args.repeats, compile_=True, batches=(1, 16), cuda_graphs=True,
               on_rows=on_rows)
    best = {n: max((r["fps"] for r in rows if r["batch"] == n and r["path"].startswith("bf16")), default=0.0)
            for n in GOALS}
    return {"device": device, "rows": rows,
            "goals": {str(n): {"bf16_frames_per_s": round(best[n], 1), "goal": goal, "met": best[n] >= goal}
                      for n, goal in GOALS.items()},
            "ok": True}


def markdown(report: dict) -> str:
    """Return the report as markdown: a summary per step and the throughput table."""
    lines = [f"# GPU check: {report['device']}", "", f"torch {report['torch']}, CUDA {report['cuda']}, "
             f"{report['seconds']:.0f} s in all", "", "| step | result | seconds |", "|---|---|---|"]
    for name, step in report["steps"].items():
        result = ("unfinished" if step.get("partial")
                  else {True: "passed", False: "FAILED", None: "skipped"}[step.get("ok")])
        lines.append(f"| {name} | {result} | {step.get('seconds', '')} |")
    nudt = report["steps"].get("nudt", {})
    if nudt.get("runs"):
        lines += ["", "NUDT-SIRST test, SIRST v1 checkpoint, fp32 (fractions):", "",
                  "| device | " + " | ".join(nudt["runs"]["cuda"]["metrics"] or {}) + " |",
                  "|---" * (1 + len(nudt["runs"]["cuda"]["metrics"] or {})) + "|"]
        for device, run in nudt["runs"].items():
            if run["metrics"]:
                lines.append(f"| {device} | " + " | ".join(f"{v:g}" for v in run["metrics"].values()) + " |")
        lines += ["", nudt["note"]]
    throughput = report["steps"].get("throughput", {})
    if throughput.get("rows"):
        lines += ["", f"Throughput at 512 x 512 ({throughput['device']}):", "",
                  "| batch | path | frames/s | speed-up vs release | peak GiB | max abs diff T |", "|---|---|---|---|---|---|"]
        for r in throughput["rows"]:
            lines.append(f"| {r['batch']} | {r['path']} | {r['fps']:.0f} | {r['speedup']:.2f}x | {r['peak_gb']:.2f} | "
                         f"{r['max_abs_diff_T']:.1e} |")
        lines += [""] + [f"- batch {n}: best bf16 {g['bf16_frames_per_s']} frames/s, goal {g['goal']:.0f}: "
                         f"{'met' if g['met'] else 'missed'}" for n, g in throughput.get("goals", {}).items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the steps, write report.json and report.md; return 0 when every step that ran passed, else 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check", help="report folder")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu_check", help="training runs and predictions")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per path (median)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device here (torch.cuda.is_available() is False): run make gpu-check on a machine "
              "with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    start = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "steps": {}}
    def save() -> None:     # after every step (and every throughput row set): a check stopped part-way keeps the rest
        report["seconds"] = time.perf_counter() - start
        write_json(args.out / "report.json", report)
        atomic_write_text(args.out / "report.md", markdown(report))

    for name in args.steps:
        print(f"== {name}", flush=True)
        began = time.perf_counter()

        def save_partial(result: dict, name: str = name, began: float = began) -> None:
            report["steps"][name] = {**result, "ok": False, "partial": True,
                                     "seconds": round(time.perf_counter() - began, 1)}
            save()
        args.save_partial = save_partial
        try:
            result = globals()[f"step_{name}"](args)
        except Exception as error:  # a failed step is reported with its traceback, and the next one still runs
            result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            print(result["traceback"], file=sys.stderr)
        result.setdefault("seconds", round(time.perf_counter() - began, 1))
        report["steps"][name] = result
        print(f"   {'passed' if result.get('ok') else 'skipped' if result.get('ok') is None else 'FAILED'} "
              f"({result['seconds']} s)", flush=True)
        save()
    print(markdown(report))
    return 0 if all(step.get("ok") is not False for step in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
