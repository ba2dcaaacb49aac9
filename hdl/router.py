"""The AER network-on-chip: a five-port XY router node and the W x H mesh of them.

Links are ``amaranth.lib.stream`` interfaces carrying ``AER_PACKET``
(docs/architecture.md §10, §12.1) with valid/ready backpressure; a router
never drops a packet, it stalls.  Micro-architecture (§13): one FIFO per
input port, dimension-ordered XY routing computed from the FIFO head, and a
round-robin arbiter per output port that keeps its grant while the output is
stalled (so a presented packet never changes before it is taken).
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from neurovm.config import ChipConfig

from .layouts import LINK_LAYOUTS

__all__ = ["Dir", "RouterNode", "MeshNoC", "ROUTER_FIFO_DEPTH", "xy_direction"]

#: Default depth of each input FIFO of a router node.
ROUTER_FIFO_DEPTH = 4

AER = LINK_LAYOUTS["AER_PACKET"]


class Dir(enum.IntEnum):
    """Router ports.  ``y`` grows southward (core ``p`` is at ``x = p % W``, ``y = p // W``)."""

    LOCAL = 0
    NORTH = 1   # y - 1
    SOUTH = 2   # y + 1
    EAST = 3    # x + 1
    WEST = 4    # x - 1


_STEP = {Dir.NORTH: (0, -1), Dir.SOUTH: (0, 1), Dir.EAST: (1, 0), Dir.WEST: (-1, 0)}
_OPPOSITE = {Dir.NORTH: Dir.SOUTH, Dir.SOUTH: Dir.NORTH, Dir.EAST: Dir.WEST, Dir.WEST: Dir.EAST}


def xy_direction(x: int, y: int, dst_x: int, dst_y: int) -> Dir:
    """Output port of a packet for ``(dst_x, dst_y)`` at node ``(x, y)``: first x, then y."""
    if dst_x > x:
        return Dir.EAST
    if dst_x < x:
        return Dir.WEST
    if dst_y > y:
        return Dir.SOUTH
    if dst_y < y:
        return Dir.NORTH
    return Dir.LOCAL


class RouterNode(wiring.Component):
    """One mesh router at ``(x, y)``, with the ports that exist at that position.

    Parameters
    ----------
    config : ChipConfig
        Mesh size (ports towards the outside of the mesh are not created).
    x, y : int
        Position of the node.
    fifo_depth : int
        Depth of each input FIFO.

    Attributes
    ----------
    <dir>_in : In(stream.Signature(AER_PACKET))
        Packets entering from direction ``dir`` (``local`` = from the core).
    <dir>_out : Out(stream.Signature(AER_PACKET))
        Packets leaving towards ``dir`` (``local`` = to the core).
    packets_routed : Out(32)
        Packets that passed this node (counter 6 of §9.1), wrapping.
    clear : In(1)
        Zero ``packets_routed``.

    Destinations must lie inside the mesh (the MMU only produces existing
    cores); a packet for a position outside would wait forever for a port
    that does not exist.
    """

    def __init__(self, config: ChipConfig, x: int, y: int, fifo_depth: int = ROUTER_FIFO_DEPTH):
        if fifo_depth < 2:
            raise ValueError(f"router fifo_depth must be at least 2, not {fifo_depth}")
        self.config, self.x, self.y, self.fifo_depth = config, x, y, fifo_depth
        self.dirs = [Dir.LOCAL] + [d for d, (dx, dy) in _STEP.items()
                                   if 0 <= x + dx < config.mesh_width and 0 <= y + dy < config.mesh_height]
        members = {}
        for d in self.dirs:
            members[f"{d.name.lower()}_in"] = In(stream.Signature(AER))
            members[f"{d.name.lower()}_out"] = Out(stream.Signature(AER))
        members["packets_routed"] = Out(32)
        members["clear"] = In(1)
        super().__init__(members)

    def port_in(self, d: Dir):
        return getattr(self, f"{d.name.lower()}_in")

    def port_out(self, d: Dir):
        return getattr(self, f"{d.name.lower()}_out")

    def elaborate(self, platform):
        m = Module()
        heads, valid, route, pop = {}, {}, {}, {}
        for d in self.dirs:
            q = fifo.SyncFIFOBuffered(width=AER.size, depth=self.fifo_depth)
            m.submodules[f"fifo_{d.name.lower()}"] = q
            wiring.connect(m, wiring.flipped(self.port_in(d)), q.w_stream)
            heads[d] = data.View(AER, q.r_data)
            valid[d] = q.r_rdy
            pop[d] = q.r_en
            route[d] = r = Signal(Dir, name=f"route_{d.name.lower()}")
            h = heads[d]
            # XY: only the comparisons that can be true at this position (destinations are in the mesh)
            m.d.comb += r.eq(Dir.LOCAL)
            if self.y > 0:
                with m.If(h.dst_y < self.y):
                    m.d.comb += r.eq(Dir.NORTH)
            if self.y < self.config.mesh_height - 1:
                with m.If(h.dst_y > self.y):
                    m.d.comb += r.eq(Dir.SOUTH)
            if self.x > 0:
                with m.If(h.dst_x < self.x):
                    m.d.comb += r.eq(Dir.WEST)
            if self.x < self.config.mesh_width - 1:
                with m.If(h.dst_x > self.x):
                    m.d.comb += r.eq(Dir.EAST)

        pops = {d: [] for d in self.dirs}
        for o in self.dirs:
            # inputs that may request o: all but the one facing it (XY never U-turns), local may loop back
            srcs = [d for d in self.dirs if d is not o or o is Dir.LOCAL]
            n = len(srcs)
            out = self.port_out(o)
            req = Signal(n, name=f"req_{o.name.lower()}")
            m.d.comb += req.eq(Cat(valid[d] & (route[d] == o) for d in srcs))
            idx = range(max(2, n))   # at least 1 bit: Verilog has no 0-bit vectors
            last = Signal(idx, name=f"rr_{o.name.lower()}")    # the input served last
            hold = Signal(name=f"hold_{o.name.lower()}")       # stalled last clock: keep the grant
            held = Signal(idx, name=f"held_{o.name.lower()}")
            sel = Signal(idx, name=f"sel_{o.name.lower()}")
            any_req = req.any()
            with m.If(hold):
                m.d.comb += sel.eq(held)
            with m.Else():
                with m.Switch(last):   # round robin: the first requester after the last one served
                    for r in range(n):
                        with m.Case(r):
                            order = [(r + 1 + k) % n for k in range(n)]
                            with m.If(req[order[0]]):
                                m.d.comb += sel.eq(order[0])
                            for i in order[1:]:
                                with m.Elif(req[i]):
                                    m.d.comb += sel.eq(i)
            payload = Signal(AER.size, name=f"payload_{o.name.lower()}")
            with m.Switch(sel):
                for i, d in enumerate(srcs):
                    with m.Case(i):
                        m.d.comb += payload.eq(heads[d].as_value())
            m.d.comb += [out.valid.eq(any_req), out.payload.eq(payload)]
            fire = out.valid & out.ready
            with m.If(fire):
                m.d.sync += [last.eq(sel), hold.eq(0)]
            with m.Elif(out.valid):
                m.d.sync += [hold.eq(1), held.eq(sel)]
            for i, d in enumerate(srcs):
                pops[d].append(fire & (sel == i))

        for d in self.dirs:
            m.d.comb += pop[d].eq(Cat(pops[d]).any())
        npop = Signal(range(len(self.dirs) + 1))
        m.d.comb += npop.eq(sum(pop[d] for d in self.dirs))
        count = Signal(32)
        m.d.comb += self.packets_routed.eq(count)
        with m.If(self.clear):
            m.d.sync += count.eq(0)
        with m.Else():
            m.d.sync += count.eq(count + npop)
        return m


class MeshNoC(wiring.Component):
    """``mesh_width x mesh_height`` router nodes, neighbours linked, local ports exposed.

    Attributes
    ----------
    local_in, local_out : arrays of stream interfaces, indexed by physical core
        Injection into and delivery from node ``p`` (``x = p % W``, ``y = p // W``).
    packets_routed : array of Out(32)
        Per-node counter 6.
    clear : In(num_cores)
        Zero the counter of every node whose bit is set.
    """

    def __init__(self, config: ChipConfig, fifo_depth: int = ROUTER_FIFO_DEPTH):
        self.config, self.fifo_depth = config, fifo_depth
        C = config.num_cores
        super().__init__({
            "local_in": In(stream.Signature(AER)).array(C),
            "local_out": Out(stream.Signature(AER)).array(C),
            "packets_routed": Out(32).array(C),
            "clear": In(C),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        W, H = c.mesh_width, c.mesh_height
        nodes = {}
        for p in range(c.num_cores):
            x, y = c.core_xy(p)
            nodes[x, y] = node = RouterNode(c, x, y, self.fifo_depth)
            m.submodules[f"router_{x}_{y}"] = node
            wiring.connect(m, wiring.flipped(self.local_in[p]), node.local_in)
            wiring.connect(m, node.local_out, wiring.flipped(self.local_out[p]))
            m.d.comb += [self.packets_routed[p].eq(node.packets_routed), node.clear.eq(self.clear[p])]
        for (x, y), node in nodes.items():
            for d in (Dir.EAST, Dir.SOUTH):
                dx, dy = _STEP[d]
                if (x + dx, y + dy) in nodes:
                    other = nodes[x + dx, y + dy]
                    wiring.connect(m, node.port_out(d), other.port_in(_OPPOSITE[d]))
                    wiring.connect(m, other.port_out(_OPPOSITE[d]), node.port_in(d))
        assert len(nodes) == W * H
        return m
