"""The NeuroVM chip top: W x H LifCores on the MeshNoC, the VirtMMU and the
HostInterface.  Ports: the 32-bit command stream in, the 32-bit output stream out."""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from neurovm.config import ChipConfig

from .core import LifCore
from .layouts import CORE_COUNTERS, counter_port
from .host_if import HostInterface
from .mmu import VirtMMU
from .router import MeshNoC

__all__ = ["NeuroChip", "ChipPins"]


class NeuroChip(wiring.Component):
    """One NeuroVM chip.

    Parameters
    ----------
    config : ChipConfig

    Attributes
    ----------
    cmd : In(stream.Signature(32))
        Host command words (docs/architecture.md §8.1).
    out : Out(stream.Signature(32))
        Output words (§8.2).
    timestep : Out(32)
        The timestep counter T.
    idle : Out(1)
        Nothing to do until more command words arrive: between commands, or
        inside a command whose remaining words have not come yet.
    at_boundary : Out(1)
        Waiting for a command header (not inside a command).
    """

    def __init__(self, config: ChipConfig):
        self.config = config
        super().__init__({
            "cmd": In(stream.Signature(32)),
            "out": Out(stream.Signature(32)),
            "timestep": Out(32),
            "idle": Out(1),
            "at_boundary": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        C = c.num_cores
        m.submodules.mmu = mmu = VirtMMU(c)
        m.submodules.host_if = hif = HostInterface(c, mmu.signature)
        m.submodules.mesh = mesh = MeshNoC(c)
        wiring.connect(m, hif.mmu, mmu)
        wiring.connect(m, wiring.flipped(self.cmd), hif.cmd)
        wiring.connect(m, hif.out, wiring.flipped(self.out))
        m.d.comb += [self.timestep.eq(hif.timestep), self.idle.eq(hif.idle), self.at_boundary.eq(hif.at_boundary),
                     mesh.clear.eq(hif.mesh_clear)]
        for p in range(C):
            core = LifCore(c)
            m.submodules[f"core{p}"] = core
            wiring.connect(m, hif.cfg[p], core.cfg)
            wiring.connect(m, core.cfg_rdata, hif.cfg_rdata[p])
            wiring.connect(m, core.spikes, hif.spikes[p])
            wiring.connect(m, hif.mesh_in[p], mesh.local_in[p])
            # events: host injections (only between steps) or mesh deliveries (only during steps)
            inj, dlv = hif.inject[p], mesh.local_out[p]
            m.d.comb += [
                core.events.valid.eq(inj.valid | dlv.valid),
                core.events.payload.eq(dlv.payload.axon),
                inj.ready.eq(core.events.ready),
                dlv.ready.eq(core.events.ready & ~inj.valid),
                hif.mesh_delivered[p].eq(dlv.valid & dlv.ready),
                core.start.eq(hif.start[p]),
                core.commit.eq(hif.commit),
                hif.phase[p].eq(core.phase),
                hif.done[p].eq(core.done),
                hif.syn_idle[p].eq(core.syn_idle),
                *(getattr(hif.core_counters[p], counter_port(cn)).eq(getattr(core, counter_port(cn)))
                  for cn in CORE_COUNTERS),
                hif.packets_routed[p].eq(mesh.packets_routed[p]),
            ]
            with m.If(inj.valid):
                m.d.comb += core.events.payload.eq(inj.payload)
            if c.learning:   # the core's domain timestep, for its epoch test (§24.4 step 5)
                m.d.comb += core.t_dom.eq(hif.core_t[p])
        return m


class ChipPins(wiring.Component):
    """:class:`NeuroChip` with flat, single-underscore port names and registered
    boundaries, as the top of the Verilator model (``sim/``) and of FPGA builds:
    ``cmd_valid/cmd_ready/cmd_data``, ``out_valid/out_ready/out_data``, ``idle``,
    ``at_boundary``, ``timestep``.

    Both streams pass through a small FIFO, so no combinational path runs from
    a pin into the chip (good for FPGA timing, and Verilator then has almost no
    input-dependent logic to re-evaluate).  ``idle`` and ``at_boundary`` also
    require both FIFOs to be empty.
    """

    FIFO_DEPTH = 4

    def __init__(self, config: ChipConfig, reset_less: bool = False):
        self.config = config
        self.reset_less = reset_less
        members = {
            "cmd_valid": In(1), "cmd_ready": Out(1), "cmd_data": In(32),
            "out_valid": Out(1), "out_ready": In(1), "out_data": Out(32),
            "idle": Out(1), "at_boundary": Out(1), "timestep": Out(32),
        }
        if reset_less:
            members["clk"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        if self.reset_less:
            # Registers start at their init values (power-on state) and there is no reset
            # input: Verilator then need not re-evaluate every register's reset mux from a pin.
            m.domains.sync = cd = ClockDomain("sync", reset_less=True)
            m.d.comb += cd.clk.eq(self.clk)
        m.submodules.chip = chip = NeuroChip(self.config)
        m.submodules.cmd_fifo = cmd_fifo = SyncFIFOBuffered(width=32, depth=self.FIFO_DEPTH)
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(width=32, depth=self.FIFO_DEPTH)
        wiring.connect(m, cmd_fifo.r_stream, chip.cmd)
        wiring.connect(m, chip.out, out_fifo.w_stream)
        empty = (cmd_fifo.level == 0) & (out_fifo.level == 0)
        m.d.comb += [
            cmd_fifo.w_en.eq(self.cmd_valid), self.cmd_ready.eq(cmd_fifo.w_rdy), cmd_fifo.w_data.eq(self.cmd_data),
            self.out_valid.eq(out_fifo.r_rdy), out_fifo.r_en.eq(self.out_ready), self.out_data.eq(out_fifo.r_data),
            self.idle.eq(chip.idle & empty), self.at_boundary.eq(chip.at_boundary & empty),
            self.timestep.eq(chip.timestep),
        ]
        return m
