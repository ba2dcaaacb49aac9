"""Compile an explicit edge list with a given neuron placement into core images.

This is the fixed-placement back end that demos, tests and benchmarks share;
the partitioner that *chooses* placements is ``neurovm.mapper`` (issue #6).
Axon ``j`` of every core carries global source neuron ``j``, so a network of
up to ``axons_per_core`` neurons needs no axon allocation.
"""

from __future__ import annotations

import numpy as np

from .config import ChipConfig
from .image import CoreImage, ImageError

__all__ = ["images_from_edges"]


def images_from_edges(cfg: ChipConfig, core_of, src, dst, weight, params: dict, report=None,
                      weight_exp: int = 0) -> dict[int, CoreImage]:
    """Core images for a network of ``len(core_of)`` neurons.

    Parameters
    ----------
    cfg : ChipConfig
    core_of : array of int
        Virtual core of each neuron; neurons take consecutive local indices per core.
    src, dst, weight : arrays
        One entry per synapse (global neuron ids, weight mantissa).
    params : dict
        Per-neuron arrays (or scalars) for ``du dv refract bias_mant bias_exp vth_mant``.
    report : array of bool, optional
        Neurons whose spikes go to the host (default: all).

    Returns
    -------
    dict
        ``{vcore: CoreImage}``.
    """
    core_of = np.asarray(core_of, dtype=np.int64)
    n = core_of.size
    if n > cfg.axons_per_core:
        raise ImageError(f"{n} neurons need {n} axons per core; the chip has axons_per_core={cfg.axons_per_core}")
    src, dst, weight = (np.asarray(a, dtype=np.int64) for a in (src, dst, weight))
    local = np.zeros(n, dtype=np.int64)
    for q in np.unique(core_of):
        idx = np.flatnonzero(core_of == q)
        local[idx] = np.arange(idx.size)
    report = np.ones(n, dtype=bool) if report is None else np.asarray(report, dtype=bool)
    full = {k: np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)) for k, v in params.items()}
    # distinct (source neuron, destination core) pairs = fan-out entries, ordered by source
    pairs = np.unique(src * (1 << 16) + core_of[dst]) if src.size else np.zeros(0, dtype=np.int64)
    pair_src, pair_core = pairs >> 16, pairs & 0xFFFF
    images = {}
    for q in np.unique(core_of).tolist():
        mine = np.flatnonzero(core_of == q)
        sel = np.flatnonzero(core_of[dst] == q)
        order = sel[np.argsort(src[sel], kind="stable")]
        lens = np.bincount(src[order], minlength=n)
        fo_sel = np.isin(pair_src, mine)
        fo_src, fo_core = pair_src[fo_sel], pair_core[fo_sel]
        fo_len = np.bincount(local[fo_src], minlength=mine.size) if fo_src.size else np.zeros(mine.size, np.int64)
        images[q] = CoreImage(
            syn_start=np.cumsum(lens) - lens, syn_len=lens,
            target=local[dst[order]], weight=weight[order],
            fo_start=np.cumsum(fo_len) - fo_len, fo_len=fo_len, report=report[mine],
            fo_axon=fo_src, fo_vcore=fo_core, weight_exp=weight_exp,
            **{k: v[mine] for k, v in full.items()},
        )
    return images
