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


def _verilator(name: str):
    """A constructor of ``neurovm.host.verilator.<name>``, imported only when a Verilator case runs."""
    def make(config):
        from neurovm.host import verilator
        return getattr(verilator, name)(config)
    return make


def _chips(request, make_emulator, verilator_class: str):
    """Yield a zero-argument maker of fresh chips (over the module's ``CFG``) of the backend of
    ``request.param`` (``make_emulator``, or ``neurovm.host.verilator.<verilator_class>``); close
    everything it made afterwards."""
    made = []
    make_verilator = _verilator(verilator_class)

    def make():
        config = request.module.CFG
        made.append(make_emulator(config) if request.param == "emulator" else make_verilator(config))
        return made[-1]

    yield make
    for obj in made:
        close = getattr(obj, "close", None)
        if close is not None:
            close()


@pytest.fixture(scope="module", params=BACKENDS)
def new_backend(request):
    """Backend factory over the module's ``CFG``: an ``EmulatorBackend`` or a ``VerilatorBackend``."""
    from neurovm.host import EmulatorBackend

    yield from _chips(request, EmulatorBackend, "VerilatorBackend")


@pytest.fixture(params=BACKENDS)
def new_feed_chip(request):
    """Factory of fresh chips with the emulator's ``feed`` interface over the module's ``CFG``:
    a ``neurovm.emulator.Chip`` or a ``VerilatedChip``."""
    from neurovm.emulator import Chip

    yield from _chips(request, Chip, "VerilatedChip")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The name of a backend for ``neurovm.open`` (the Verilator case is in the cosim tier)."""
    return request.param
