# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The clip demo: the shipped checkpoint on the real clip of datasets/samples (always runs; no data needed), in fp32
# on every CPU, since the stored scores it is checked against are fp32's (inference.py alone runs bf16 where native).
# Switching the demo to another checkpoint is this one line; `make demo-expected` then records its numbers.
CLIP_CKPT ?= checkpoints/lrrnet_general.pt
CLIP ?= datasets/samples/videos/IR_BIRD_019_128-255.mp4
CLIP_LABELS ?= datasets/samples/labels.csv
CLIP_OUT ?= results/demo_clip
STRIP ?= docs/img/demo_strip.png
# The SIRST v1 demo: runs when the dataset is in the repository's datasets/ folder (or SIRST=/path/to/SIRST-v1).
SIRST ?= datasets/SIRSTv1
CKPT ?= checkpoints/lrrnet_sirst_v1.pt
DEMO ?= results/demo

.PHONY: venv test test-fast lint demo demo-clip demo-sirst demo-expected demo-synthetic bench gpu-check gpu-pack gpu-train \
        gpu-test clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first, pinned to the release this machine kind caches; a CUDA machine keeps its own torch
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(VPY) -m pip install -q torch torchvision
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# What CI runs (.ci/run): the linter, then every test (tests marked slow included; CUDA tests skip without a GPU).
test: $(STAMP) lint
	$(VPY) -m pytest -q tests

# The quick tier while working: every test not marked slow (under 2 minutes on a 2-core CPU).
test-fast: $(STAMP) lint
	$(VPY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(VPY) -m ruff check .

# The shipped checkpoint on the real clip: detections, the annotated video, the box scores, the picture strip;
# then, when SIRST v1 is here, on its test frames (metric table, overlays, roc.png).
demo: demo-clip demo-sirst

demo-clip: $(STAMP)
	@test -f $(CLIP_CKPT) || { echo "error: checkpoint $(CLIP_CKPT) is missing: restore it (git checkout -- $(CLIP_CKPT)) or pass CLIP_CKPT=FILE"; exit 2; }
	$(VPY) inference.py --checkpoint $(CLIP_CKPT) --video $(CLIP) --out $(CLIP_OUT) --overlay --overwrite --quiet --dtype fp32
	$(VPY) cal_from_mask.py --boxes $(CLIP_LABELS) --pred $(CLIP_OUT) --quiet
	$(VPY) -m utils.strip --video $(CLIP) --pred $(CLIP_OUT) --boxes $(CLIP_LABELS) --out $(STRIP) --overwrite
	@$(VPY) -m utils.demo check --checkpoint $(CLIP_CKPT) --pred $(CLIP_OUT) || true

demo-sirst: $(STAMP)
	@if [ -f $(CKPT) ] && [ -d $(SIRST) ]; then \
	  $(VPY) inference.py --checkpoint $(CKPT) --data-root $(SIRST) --split test --out $(DEMO) --overlay --score --overwrite --dtype fp32; \
	else \
	  echo "(SIRST v1 demo skipped: $(SIRST) or $(CKPT) is absent; put SIRST v1 there or pass SIRST=/path/to/SIRST-v1)"; \
	fi

# Record the clip's scores for CLIP_CKPT in datasets/samples/expected_scores.json (CPU, fp32, every frame and every
# 2nd; tests/test_demo.py checks them). With `make demo` before it, also the strip: make demo demo-expected CLIP_CKPT=...
demo-expected: $(STAMP)
	$(VPY) -m utils.demo record --checkpoint $(CLIP_CKPT)

# One minute of training on generated scenes, then the same inference and scoring (no data, no checkpoint needed).
demo-synthetic: $(STAMP)
	$(VPY) run_configs.py --config synthetic --out runs/demo_synthetic --overwrite
	$(VPY) inference.py --checkpoint runs/demo_synthetic/best.pt --data-root runs/demo_synthetic/synthetic \
	  --split test --out results/demo_synthetic --overlay --score --overwrite

bench: $(STAMP)
	$(VPY) -m models.summary --size 512 512
	$(VPY) benchmarks/bench_model.py --onnx --int8 --sizes 256x320 512x512 1024x1280 --json results/bench/model.json
	$(VPY) benchmarks/bench_train.py --bf16
	$(VPY) benchmarks/bench_inference.py
	$(VPY) benchmarks/bench_video.py --clip $(CLIP) --checkpoint $(CLIP_CKPT) --onnx
	$(VPY) benchmarks/bench_metrics.py
	$(VPY) benchmarks/bench_data.py

# On a machine with an NVIDIA GPU: CUDA tests, AMP/compile training, torchrun over NCCL, NUDT-SIRST on GPU and CPU
# (when datasets/NUDT-SIRST is there), throughput at 512 x 512; writes results/gpu_check/report.json and report.md.
gpu-check: $(STAMP)
	$(VPY) benchmarks/gpu_check.py

# One GPU window, one command (docs/gpu.md). Here, where the datasets are: `make gpu-pack` writes packs/$(WINDOW).npz
# (git-ignored; the test split left out to fit the 64 MiB a lease carries). There, in one call carrying that file:
# `make gpu-train` trains the recipe on the device path, stops by its --time-budget, and puts best.pt, the log and
# the results row under $$OUT/$(WINDOW) (else the run folder under runs/); back here, score test once with
# `make gpu-test RESULTS=folder`. GPU_PY: the GPU machine's python3 holds PyTorch (no venv is made there).
WINDOW ?= nudt_window
DATASETS ?= datasets
GPU_PY ?= python3
gpu-pack: $(STAMP)
	$(VPY) -m utils.train.pack --config $(WINDOW) --datasets $(DATASETS) --no-test $(PACK_ARGS)

gpu-train:
	@test -f packs/$(WINDOW).npz || { echo "error: packs/$(WINDOW).npz is missing: run make gpu-pack WINDOW=$(WINDOW) where the datasets are, and carry packs/$(WINDOW).npz"; exit 2; }
	$(GPU_PY) -m utils.train.window --config $(WINDOW) $(TRAIN_ARGS)

gpu-test: $(STAMP)
	$(VPY) -m utils.train.window --score-test $(RESULTS) $(TEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
