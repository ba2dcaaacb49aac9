"""Shared fixtures and the test tiers (``make test-fast``, ``test-hdl``, ``test-cosim``, ``test``).

Markers (registered in pyproject.toml):

* ``hdl`` — cocotb testbenches and Verilator lint of the Amaranth blocks;
* ``cosim`` — the Verilator model of the whole chip against the emulator (every
  test parametrised over :data:`BACKENDS` carries it on its Verilator case);
* ``slow``, ``fpga``, ``formal`` — long sweeps, bitstream builds, the bounded
  model check: outside the regular suite.

Backends: a module that tests on both backends names its chip configuration
``CFG`` and uses :func:`new_backend` (``neurovm.host.Backend`` objects) or
:func:`new_feed_chip` (the emulator's ``feed`` interface); every object a
factory made is closed at the end of the module or test.
"""

from __future__ import annotations

import pytest

#: The two backends every cross-backend test runs on; the Verilator case is in the cosim tier.
BACKENDS = ["emulator", pytest.param("verilator", marks=pytest.mark.cosim)]


def _factory(kind: str, config, make_emulator, make_verilator):
    """A zero-argument maker of fresh chips of ``kind``, and the list of what it made."""
    made = []

    def make():
        made.append(make_emulator(config) if kind == "emulator" else make_verilator(config))
        return made[-1]

    return make, made


def _close_all(made) -> None:
    for obj in made:
        close = getattr(obj, "close", None)
        if close is not None:
            close()


@pytest.fixture(scope="module", params=BACKENDS)
def new_backend(request):
    """Backend factory over the module's ``CFG``: an ``EmulatorBackend`` or a ``VerilatorBackend``."""
    from neurovm.host import EmulatorBackend

    def verilator(config):
        from neurovm.host.verilator import VerilatorBackend
        return VerilatorBackend(config)

    make, made = _factory(request.param, request.module.CFG, EmulatorBackend, verilator)
    yield make
    _close_all(made)


@pytest.fixture(params=BACKENDS)
def new_feed_chip(request):
    """Factory of fresh chips with the emulator's ``feed`` interface over the module's ``CFG``."""
    from neurovm.emulator import Chip

    def verilator(config):
        from neurovm.host.verilator import VerilatedChip
        return VerilatedChip(config)

    make, made = _factory(request.param, request.module.CFG, Chip, verilator)
    yield make
    _close_all(made)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The name of a backend for ``neurovm.open`` (the Verilator case is in the cosim tier)."""
    return request.param
