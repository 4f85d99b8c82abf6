# Two entry points for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

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

clean:
	rm -rf $(VENV) .pytest_cache
