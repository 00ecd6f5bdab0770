# The two set-up commands of the README:
#   make demo   set up the runtime (with OpenVINO) and run the main job on the demo data and members
#   make test   set up everything (torch, keras, tensorflow, transformers, smp/timm/torchvision, OpenVINO, Ray, dev tools)
#               and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torchvision needs the torch it was built with: PyPI's x86_64 0.29.1 pairs with torch 2.14.1 (a CUDA
# build that runs on the CPU; ~5.5 GB installed). Both are pinned in one command so pip swaps neither.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test setup setup-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[openvino]'

setup-dev: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q $(TORCH) -e '.[torch,keras,tensorflow,transformers,libraries,openvino,ray,dev]'

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
