"""The boards NeuroVM builds for, and the chip configuration each one carries."""

from __future__ import annotations

from dataclasses import dataclass

from neurovm.config import ChipConfig

__all__ = ["BoardSpec", "BOARDS", "board_spec", "host_window", "DEFAULT_FIFO_DEPTH"]

#: Command words the UART bridge buffers unless a board says otherwise (``UartBridge``'s default).
DEFAULT_FIFO_DEPTH = 512


def host_window(fifo_depth: int) -> int:
    """Command words the host may have in flight to a bridge FIFO of ``fifo_depth`` words
    (docs/architecture.md §21): the depth less one eighth of it, at least 2 words.

    The margin covers the SYNC the host appends to every window and the words still in
    the line, the receiver and the word assembler when the host starts the next window.
    512 -> 448, 256 -> 224.
    """
    if isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int) or fifo_depth < 4:
        raise ValueError(f"a bridge FIFO depth must be an integer >= 4 words, not {fifo_depth!r}")
    return fifo_depth - max(2, fifo_depth // 8)


@dataclass(frozen=True)
class BoardSpec:
    """A board: its amaranth-boards platform, the chip configuration that fits, the UART rate."""

    name: str
    platform: str          # "module:Class" in amaranth_boards
    config: ChipConfig
    baud: int = 115200
    fifo_depth: int = DEFAULT_FIFO_DEPTH  # command words the UART bridge buffers (the host window stays below it)
    flash_tools: tuple = ("openFPGALoader",)
    synth_opts: str = ""   # extra options for yosys's synth_<family>
    pnr_opts: str = ""     # extra options for nextpnr
    description: str = ""

    @property
    def window(self) -> int:
        """The host's serial window for this board: :func:`host_window` of its FIFO depth."""
        return host_window(self.fifo_depth)

    def make_platform(self):
        import importlib

        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)()


BOARDS: dict[str, BoardSpec] = {
    # iCE40 UP5K: 5,280 LUTs, 30 x 4 kbit block RAM, 8 DSPs.  One small core.
    "icebreaker": BoardSpec(
        "icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform",
        ChipConfig(mesh_width=1, mesh_height=1, neurons_per_core=64, synapses_per_core=1024, axons_per_core=128,
                   fanout_per_core=128, max_vms=2, vcores_per_vm=1),
        fifo_depth=256, flash_tools=("openFPGALoader", "iceprog"), synth_opts="-dsp",
        description="iCEBreaker (Lattice iCE40 UP5K, 12 MHz)"),
    # ECP5 LFE5U-85F: 83,640 LUTs, 208 x 18 kbit block RAM, 156 DSPs.  A 3x3 mesh of 256-neuron cores.
    "ulx3s": BoardSpec(
        "ulx3s", "amaranth_boards.ulx3s:ULX3S_85F_Platform",
        ChipConfig(mesh_width=3, mesh_height=3, neurons_per_core=256, synapses_per_core=8192, axons_per_core=512,
                   fanout_per_core=512, max_vms=4, vcores_per_vm=9),
        description="ULX3S 85F (Lattice ECP5 LFE5U-85F, 25 MHz)"),
}


def board_spec(name: str) -> BoardSpec:
    """The :class:`BoardSpec` called ``name``; ValueError listing the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None
