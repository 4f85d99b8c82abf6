# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SIRST ?= ../shared/datasets/SIRST-v1
CKPT ?= checkpoints/lrrnet_sirst_v1.pt
DEMO ?= results/demo

.PHONY: venv test demo bench clean

$(STAMP): requirements.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first, pinned to the release this machine kind caches; a CUDA machine keeps its own torch
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(VPY) -m pip install -q torch torchvision
	$(VPY) -m pip install -q -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q tests

# The shipped checkpoint on the SIRST v1 test frames when both are here; otherwise a one-minute
# training run on generated scenes. Either way: infer, score, print the table, write overlays and roc.png.
demo: $(STAMP)
	@if [ -f $(CKPT) ] && [ -d $(SIRST) ]; then \
	  $(VPY) inference.py --checkpoint $(CKPT) --data-root $(SIRST) --split test --out $(DEMO) --overlay --score --overwrite; \
	else \
	  echo "($(CKPT) or $(SIRST) absent: training on synthetic scenes first)"; \
	  $(VPY) run_configs.py --config synthetic --out runs/demo_synthetic --overwrite && \
	  $(VPY) inference.py --checkpoint runs/demo_synthetic/best.pt --data-root runs/demo_synthetic/synthetic \
	    --split test --out $(DEMO) --overlay --score --overwrite; \
	fi

bench: $(STAMP)
	$(VPY) -m models.summary --size 512 512
	$(VPY) benchmarks/bench_model.py
	$(VPY) benchmarks/bench_train.py --bf16
	$(VPY) benchmarks/bench_inference.py
	$(VPY) benchmarks/bench_video.py
	$(VPY) benchmarks/bench_metrics.py
	$(VPY) benchmarks/bench_data.py

clean:
	rm -rf $(VENV) .pytest_cache
