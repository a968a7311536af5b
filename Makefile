# Two-command quick start: `make sweep` and `make test` (each sets up .venv first if needed).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup sweep test bench gpu-check lint lock-check clean

# Every step prints one line. pip's own output (progress, index warnings from a machine's pip.conf, the build
# backend's notices) goes to $(INSTALL_LOG); a failed install prints its tail.
INSTALL_LOG = $(VENV)/install.log
PIP         = $(BIN)/python -m pip --disable-pip-version-check

# constraints.txt is the lock: the exact versions the tests pass with (made on Python 3.11)
$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "constraints.txt is locked on Python >= 3.11: make PYTHON=python3.11")'
	@echo "setup: $(VENV) with the locked versions, pip install -c constraints.txt -e '.[dev]' (log: $(INSTALL_LOG))"
	@$(PYTHON) -m venv $(VENV)
	@{ $(PIP) install --upgrade pip && $(PIP) install -c constraints.txt -e '.[dev]'; } > $(INSTALL_LOG) 2>&1 \
		|| { tail -n 30 $(INSTALL_LOG); echo "setup failed; the whole log: $(INSTALL_LOG)"; exit 1; }
	@touch $@

setup: $(BIN)/.installed

sweep: setup        ## the main job: l2_init study on the embedded MNIST-1D (8–11.5 min on 2 CPU cores, setup included)
	@echo "sweep: lth-tune sweep search_spaces/l2init.yaml (add --verbose for Tune's trial tables)"
	@$(BIN)/lth-tune sweep search_spaces/l2init.yaml

test: setup         ## the whole test suite (unit + end-to-end through real Ray Tune)
	@echo "test: pytest, unit and end-to-end tests through real Ray Tune"
	@$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/run_all.py

gpu-check: setup    ## on a CUDA GPU, <= 8 min: the lock and CUDA tests, training vs OpenLTH-style, 4 packed trials vs 1
	@echo "gpu-check: bench/gpu_check.py (summary table at the end; \$$OUT/gpu_check.json when OUT is set)"
	@$(BIN)/python bench/gpu_check.py

lock-check: setup   ## the lock resolves for every install; .venv, pyproject.toml and cluster*.yaml agree with it
	@$(BIN)/python .ci/lock.py check
	@echo "lock-check: pytest tests/test_lock.py tests/tune/test_cluster_config.py"
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_lock.py tests/tune/test_cluster_config.py

lint: setup
	$(BIN)/ruff check lth_tune analysis bench tests

clean:
	rm -rf $(VENV) results
