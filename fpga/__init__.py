"""Bitstreams for open FPGA boards, built with open tools from PyPI, and flashing.

``build("icebreaker")`` / ``build("ulx3s")`` elaborate :class:`FpgaTop` (the
chip behind a :class:`~neurovm.hdl.uart.UartBridge` on the board's USB UART)
with the board's chip configuration, run yosys / nextpnr / icepack or ecppack
(the yowasp WebAssembly builds, so nothing needs a system install) and return
a :class:`BuildReport`: bitstream path, LUTs / cells, block RAM, Fmax against
the board clock, neurons and synapses.  ``flash(board, bitstream)`` calls
openFPGALoader (or iceprog) and fails with a clear message when the tool or
the board is absent.  ``neurovm.open("fpga:/dev/ttyUSB1", board="icebreaker")``
then runs the same workloads as the emulator and the Verilator model.
"""

from .boards import BOARDS, BoardSpec, board_spec
from .flow import BuildProgress, BuildReport, FpgaError, FpgaTop, build, flash

__all__ = ["BOARDS", "BoardSpec", "board_spec", "FpgaTop", "build", "flash", "BuildReport", "BuildProgress", "FpgaError"]
