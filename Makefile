# Two-command quick start: `make sweep` and `make test` (each sets up .venv first if needed).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup sweep test bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

sweep: setup        ## the main job: l2_init study on the embedded MNIST-1D (~10 min on 2 CPU cores)
	$(BIN)/lth-tune sweep search_spaces/l2init.yaml

test: setup         ## the whole test suite (unit + end-to-end through real Ray Tune)
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/run_all.py

lint: setup
	$(BIN)/ruff check lth_tune analysis bench tests

clean:
	rm -rf $(VENV) results
