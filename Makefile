# The two set-up commands of the README:
#   make demo   set up the runtime (with OpenVINO) and run the main job on the demo data and members
#   make test   set up everything (torch, keras, tensorflow, transformers, OpenVINO, Ray, dev tools) and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test setup setup-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[openvino]'

setup-dev: $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[torch,keras,tensorflow,transformers,openvino,ray,dev]'

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
