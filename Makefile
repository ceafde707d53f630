# Set-up and checks; every target installs what it needs into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (fast to install); skipped when the environment already has a torch.
TORCH_PIN ?= torch==2.13.0

.PHONY: install demo test test-slow

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: install  ## pretrain + fine-tune a small model on the bundled corpus; prints dev WER and throughput
	$(VENV)/bin/w2v2 demo --workdir demo_run

test: install  ## the default suite (a few minutes on 2 cores)
	$(PY) -m pytest -q -m "not slow"

test-slow: install  ## end-to-end checks that take longer (exit 5 = none selected is fine)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]
