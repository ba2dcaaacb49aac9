# NeuroVM top-level Makefile.  Two entry points for a fresh machine:
#   make sim    -- create .venv, install, run the main demo
#   make test   -- create .venv, install, run the regular test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# PyTorch for the convert_pytorch tests only (never needed to run NeuroVM): the CPU build pinned, since on
# this machine kind pip finds it on local disk; a range would pull a multi-GB CUDA build.  TORCH_SPEC= to skip
TORCH_SPEC ?= torch==2.13.0

.PHONY: sim test test-fast test-hdl test-cosim test-slow test-fpga fpga bench accuracy venv clean check-gpu bench-batch bench-predict

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,examples,formal]'
	$(PY) -m pip install --quiet '$(TORCH_SPEC)' || echo "PyTorch ($(TORCH_SPEC)) not installed: the convert_pytorch tests will say so and skip"
	@touch $(STAMP)

# the main job: the demo on the Verilator model, every output word checked against the emulator
# (WAVES=1 writes build/sim/demo.vcd, every signal: ~3.5 MB per step, so add ARGS="--steps 20")
sim: $(STAMP)
	$(PY) -m neurovm.cli demo --backend verilator --check $(if $(filter-out 0,$(WAVES)),--waves build/sim/demo.vcd) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# test tiers (markers in tests/conftest.py): pure Python first, then the HDL blocks, then the chip model
FAST_TIER := not slow and not fpga and not formal and not hdl and not cosim
test-fast: $(STAMP)
	$(PY) -m pytest -q -m '$(FAST_TIER)'

test-hdl: $(STAMP)
	$(PY) -m pytest -q -m 'hdl and not slow and not fpga and not formal'

test-cosim: $(STAMP)
	$(PY) -m pytest -q -m 'cosim and not slow and not fpga and not formal'

# FPGA bitstreams (yowasp yosys/nextpnr from PyPI; several minutes each): make fpga BOARD=icebreaker|ulx3s
BOARD ?= icebreaker
fpga: $(STAMP)
	$(PY) -m pip install --quiet -e '.[fpga]'
	$(PY) -m neurovm.cli fpga build --board $(BOARD)

# both bitstreams built and checked (fit, timing) -- not part of `make test`
test-fpga: $(STAMP)
	$(PY) -m pip install --quiet -e '.[fpga]'
	$(PY) -m pytest -q -m fpga

# the digits accuracy table and plot (docs/accuracy.md)
accuracy: $(STAMP)
	$(PY) benchmarks/digits_accuracy.py

# Brian2, the emulator's reference in benchmarks/emulator_throughput.py, in a venv of its own:
# Brian2 2.9 (numpy and cython targets) does not import with numpy 2.4, which neurovm uses
BRIAN2_VENV := build/brian2-venv
$(BRIAN2_VENV)/.installed:
	$(PYTHON) -m venv $(BRIAN2_VENV)
	$(BRIAN2_VENV)/bin/python -m pip install --quiet 'numpy>=2,<2.4' 'brian2>=2.9,<3' 'cython>=3,<4'
	@touch $@

bench: $(STAMP) $(BRIAN2_VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/emulator_throughput.py
	$(PY) benchmarks/core_throughput.py
	$(PY) benchmarks/router_throughput.py
	$(PY) benchmarks/chip_speed.py
	$(PY) benchmarks/mapper_quality.py

# the GPU engine (CuPy) against numpy on random workloads, every output word; on a machine
# without CuPy or a CUDA device it says so and exits with status 2
check-gpu: $(STAMP)
	$(PY) -m pip install --quiet -e '.[gpu]' || echo "check-gpu: could not install the gpu extra (CuPy); checking with what is installed"
	$(PY) benchmarks/check_gpu.py $(ARGS)

# batched emulator: events/s and steps/s against batch and network size, memory per copy
bench-batch: $(STAMP)
	$(PY) benchmarks/batch_throughput.py $(ARGS)

# predict on the digits MLP: sequential vs batched (emulator) vs replicas (Verilator), images/s
bench-predict: $(STAMP)
	$(PY) benchmarks/predict_throughput.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# the formal isolation proof (issue #14, spec §7.5): yosys-smtbmc + yices from PyPI; the regular
# suite runs it at a shallow depth, this runs the deeper bound (see BENCHMARKS.md for the times)
.PHONY: test-formal
test-formal: $(STAMP)
	$(PY) -m pip install --quiet -e '.[formal]'
	$(PY) -m pytest -q -m formal tests/test_formal.py

# the cocotb testbenches on Icarus Verilog instead of Verilator (issue #18 item 1); ICARUS_GEN=2012
# (default) or 2005 picks iverilog's language generation.  Needs iverilog: apt-get install iverilog
.PHONY: test-icarus
test-icarus: $(STAMP)
	@command -v iverilog >/dev/null || (echo "test-icarus: installing Debian's iverilog" && \
		apt-get update -qq && apt-get install -y -qq iverilog) || \
		{ echo "test-icarus: iverilog is missing and could not be installed (apt-get install iverilog)"; exit 2; }
	SIM=icarus $(PY) -m pytest -q -m 'hdl and not slow and not fpga and not formal' \
		tests/test_router_hdl.py tests/test_chip_blocks.py tests/test_core_hdl.py tests/test_fpga_bridge.py

# seeded random co-simulation of the blocks against the emulator, in parallel (issue #18, spec §22):
# JUnit XML, summary and merged coverage under build/regress/SIM, a reproduction line per failure,
# and a failure when a cover point was never hit.  make regress SEEDS=16 JOBS=2 SIM=icarus BLOCK=core
SEEDS ?= 8
JOBS  ?= 1
SIM   ?= verilator
BLOCK ?= all
.PHONY: regress
regress: $(STAMP)
	$(PY) -m neurovm.cli regress --seeds $(SEEDS) --jobs $(JOBS) --sim $(SIM) --block $(BLOCK) --check-coverage $(ARGS)
