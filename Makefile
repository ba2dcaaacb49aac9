# NeuroVM top-level Makefile.  Two entry points for a fresh machine:
#   make sim    -- create .venv, install, run the main demo
#   make test   -- create .venv, install, run the regular test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: sim test test-slow bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,examples]'
	@touch $(STAMP)

# the main job: the demo on the Verilator model, every output word checked against the emulator
# (WAVES=1 writes build/sim/demo.vcd, every signal: ~3.5 MB per step, so add ARGS="--steps 20")
sim: $(STAMP)
	$(PY) -m neurovm.cli demo --backend verilator --check $(if $(filter-out 0,$(WAVES)),--waves build/sim/demo.vcd) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/emulator_throughput.py
	$(PY) benchmarks/core_throughput.py
	$(PY) benchmarks/router_throughput.py
	$(PY) benchmarks/chip_speed.py
	$(PY) benchmarks/mapper_quality.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
