"""Golden model of the mesh's routing (docs/architecture.md §10): dimension-ordered XY."""

from __future__ import annotations

from neurovm.config import ChipConfig

__all__ = ["xy_route", "hops"]


def xy_route(config: ChipConfig, src: int, dst: int) -> list[int]:
    """Physical cores whose routers a packet from ``src`` to ``dst`` passes, in order
    (source, intermediate and destination nodes): first along x, then along y."""
    sx, sy = config.core_xy(src)
    dx, dy = config.core_xy(dst)
    x, y = sx, sy
    path = [y * config.mesh_width + x]
    while x != dx:
        x += 1 if dx > x else -1
        path.append(y * config.mesh_width + x)
    while y != dy:
        y += 1 if dy > y else -1
        path.append(y * config.mesh_width + x)
    return path


def hops(config: ChipConfig, src: int, dst: int) -> tuple[int, int]:
    """``(|dx|, |dy|)`` between two cores: HOPS_X and HOPS_Y of one packet."""
    sx, sy = config.core_xy(src)
    dx, dy = config.core_xy(dst)
    return abs(dx - sx), abs(dy - sy)
