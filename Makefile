# The two set-up commands of the README:
#   make demo   set up the runtime (with OpenVINO) and run the main job on the demo data and members
#   make test   set up everything (torch, keras, tensorflow, transformers, OpenVINO, Ray, dev tools) and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test setup setup-dev libraries lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[openvino]'

setup-dev: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[torch,keras,tensorflow,transformers,openvino,ray,dev]'

# Nets from segmentation_models_pytorch and torchvision for tests/test_export_libraries.py (skipped
# without them). torch is pinned in the same command, else pip swaps it for the newest (CUDA) build to
# get the newest torchvision. Not part of setup-dev: PyPI's Linux x86_64 torchvision is built against
# CUDA torch, and beside a CPU-only torch it fails to import, which breaks transformers' imports too.
libraries: setup-dev
	$(BIN)/pip install -q $(TORCH) -e '.[libraries]'

demo: setup
	$(BIN)/ens data demo
	$(BIN)/ens predict --tta flip --out submissions/demo.csv
	$(BIN)/ens check submissions/demo.csv
	$(BIN)/ens score submissions/demo.csv

test: setup-dev
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check ensemble exporters zoo tests benchmarks

bench: setup-dev
	$(BIN)/python benchmarks/predict_bench.py

clean:
	rm -rf $(VENV) .cache data
