"""Load benchmark of ``neurovm serve`` (issue #15 item 10, spec §23).

Usage::

    .venv/bin/python benchmarks/service_load.py [--tenants 8] [--requests 200] [--seed 0] [--quick]

One real ``neurovm serve`` subprocess (emulator backend, one chip) listens on 127.0.0.1 on a free
port, over a data folder of its own in a temporary directory.  Each of ``--tenants`` tenant
processes (``multiprocessing``) holds its own token and replays a seeded random plan of
``--requests`` mixed requests (``create_vm``, ``load``, ``run``, ``predict``, ``state``,
``destroy``; the plan depends on the seed and the tenant only, never on timing).  Phases:

1. **load**: every tenant sends its plan to the server at once, timing each request;
2. **in-process**: each tenant replays the same plan on the emulator in its own process, one
   tenant at a time (so these latencies are not inflated by the others), each VM alone on a
   chip of its own;
3. **solo** (not with ``--quick``): one more tenant sends tenant 0's plan to the idle server
   alone: the server's own overhead per request, without queueing behind other tenants.

Every server result (spike trains, state arrays, predictions and scores, the created VM's
name and cores) is compared with the in-process result of the same request: a request that got
no answer is *lost*, an answer that differs is *wrong* (a misrouted result -- another VM's or
another tenant's -- is one of these).  The run asserts that both counts are zero and prints
throughput, p50/p99 latency per request kind, and the in-process latencies beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurovm.host.service.process import ServeProcess

KINDS = ("create_vm", "load", "run", "predict", "state", "destroy")
#: VMs a tenant holds at most at once (its quota is one more: ``predict`` borrows a VM)
MAX_VMS = 3
#: Networks and run lengths a plan draws from
NETWORKS = 3
RUN_STEPS = (16, 32, 64)
PREDICT_SAMPLES, PREDICT_STEPS = 2, 16
#: Quota of every benchmark tenant: no request is refused for rate, VMs or cores
QUOTA = {"vms": MAX_VMS + 1, "cores": 2 * MAX_VMS + 2, "rate": 10_000, "burst": 10_000}


# ---- the plan ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One request of a plan: its kind, the VM it names, and its argument (cores, network index, run
    steps; the input seed is ``seed``)."""

    kind: str
    vm: str = ""
    arg: int = 0
    seed: int = 0


def make_plan(seed: int, tenant: int, n: int) -> list[Op]:
    """``n`` requests of a seeded random mix; every request is valid for the VMs the plan holds then."""
    rng = np.random.default_rng([seed, tenant, 1])
    vms: dict[str, bool] = {}         # name -> loaded
    made, plan = 0, []
    weights = {"create_vm": 2, "load": 2, "run": 6, "predict": 1, "state": 2, "destroy": 1}
    while len(plan) < n:
        loaded = [v for v, ok in vms.items() if ok]
        allowed = {"create_vm": len(vms) < MAX_VMS, "load": bool(vms), "run": bool(loaded),
                   "predict": True, "state": bool(loaded), "destroy": len(vms) > 1}
        kinds = [k for k in KINDS if allowed[k]]
        p = np.array([weights[k] for k in kinds], dtype=float)
        kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
        op_seed = int(rng.integers(1 << 31))
        if kind == "create_vm":
            name, made = f"v{made}", made + 1
            vms[name] = False
            plan.append(Op(kind, name, int(rng.integers(1, 3)), op_seed))
        elif kind == "load":
            name = sorted(vms)[rng.integers(len(vms))]
            vms[name] = True
            plan.append(Op(kind, name, int(rng.integers(NETWORKS)), op_seed))
        elif kind in ("run", "state"):
            name = sorted(loaded)[rng.integers(len(loaded))]
            plan.append(Op(kind, name, int(RUN_STEPS[rng.integers(len(RUN_STEPS))]), op_seed))
        elif kind == "destroy":
            name = sorted(vms)[rng.integers(len(vms))]
            del vms[name]
            plan.append(Op(kind, name, 0, op_seed))
        else:
            plan.append(Op(kind, "", PREDICT_SAMPLES, op_seed))
    return plan


# ---- a tenant's networks, model and inputs ----------------------------------------------------------------------
def network(seed: int, tenant: int, k: int):
    """Network ``k`` of a tenant: inputs and a recurrent LIF population, parameters drawn per tenant."""
    from neurovm.mapper import Network

    rng = np.random.default_rng([seed, tenant, 2, k])
    n_out = int(rng.integers(20, 48))
    net = Network()
    a = net.population("in", 12, report=False)
    b = net.population("out", n_out, du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 600)),
                       vth_mant=int(rng.integers(5, 40)), bias_mant=int(rng.integers(-20, 60)), refract=1)
    net.connect(a, b, [(i, j, int(rng.integers(-60, 127))) for i in range(12) for j in range(n_out)
                       if rng.random() < 0.5])
    net.connect(b, b, [(i, j, int(rng.integers(-80, 80))) for i in range(n_out) for j in range(n_out)
                       if i != j and rng.random() < 0.1])
    return net


def model(seed: int, tenant: int):
    """A tenant's small converted model (one dense layer, 10 classes)."""
    from neurovm.host.model import SnnModel

    rng = np.random.default_rng([seed, tenant, 3])
    return SnnModel(weights=[rng.integers(-60, 100, (10, 16))], bias_mant=[np.zeros(10, int)],
                    bias_exp=[np.zeros(10, int)], vth_mant=[20], input_scale=1.0, steps=PREDICT_STEPS)


@dataclass
class Assets:
    """What a tenant sends: ``.nvmap`` files of its networks and a ``.nvm`` file of its model."""

    nvmaps: list[Path]
    nvm: Path


def make_assets(seed: int, tenant: int, folder: Path) -> Assets:
    from neurovm.config import DEFAULT_CONFIG
    from neurovm.mapper import map_network

    folder.mkdir(parents=True, exist_ok=True)
    nvmaps = []
    for k in range(NETWORKS):
        nvmaps.append(folder / f"net{k}.nvmap")
        map_network(network(seed, tenant, k), DEFAULT_CONFIG).save(nvmaps[-1])
    nvm = folder / "model.nvm"
    model(seed, tenant).save(nvm)
    return Assets(nvmaps, nvm)


def run_inputs(op: Op) -> dict:
    return {"in": np.random.default_rng(op.seed).random((op.arg, 12)) < 0.2}


def predict_x(op: Op) -> np.ndarray:
    return np.random.default_rng(op.seed).random((op.arg, 16))


# ---- digests: what is compared --------------------------------------------------------------------------------------
def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.kind}{a.shape}".encode())
        h.update(a.astype(np.float64 if a.dtype.kind == "f" else np.int64).tobytes())
    return h.hexdigest()[:24]


def digest(kind: str, result) -> str:
    """A short fingerprint of one request's result (equal results, equal fingerprints)."""
    if kind == "run":
        return _digest(result.step, result.neuron, [result.n_neurons, result.steps])
    if kind == "state":
        return _digest(*(np.asarray(list(map(ord, k))) for k in sorted(result)), *(result[k] for k in sorted(result)))
    if kind == "predict":
        return _digest(*result)
    return repr(result)


# ---- executing a plan: on the server, and in-process ------------------------------------------------------------
class Remote:
    """A plan's requests against the server, as one tenant."""

    def __init__(self, url: str, token: str, assets: Assets):
        import neurovm

        self.conn, self.assets, self.vms = neurovm.connect(url, token), assets, {}

    def do(self, op: Op):
        if op.kind == "create_vm":
            vm = self.vms[op.vm] = self.conn.create_vm(op.vm, cores=op.arg)
            return (vm.name, vm.cores)
        if op.kind == "load":
            self.vms[op.vm].load(self.assets.nvmaps[op.arg])
            return ("loaded", op.vm, op.arg)
        if op.kind == "run":
            return self.vms[op.vm].run(op.arg, run_inputs(op))
        if op.kind == "state":
            return self.vms[op.vm].state()
        if op.kind == "destroy":
            self.vms.pop(op.vm).destroy()
            return ("destroyed", op.vm)
        return self.conn.predict(self.assets.nvm, predict_x(op), return_scores=True)

    def close(self):
        self.conn.close()


class Local:
    """The same requests in-process on the emulator: each VM alone on a chip of its own."""

    def __init__(self, assets: Assets):
        from neurovm.host.model import load_model
        from neurovm.mapper import MappedNetwork

        self.nets = [MappedNetwork.load(p) for p in assets.nvmaps]
        self.model = load_model(assets.nvm)
        self.vms = {}

    def prepare(self, op: Op) -> None:
        """Untimed set-up of ``op``: a fresh chip for a new VM."""
        import neurovm

        if op.kind == "create_vm":
            self._chip = neurovm.open()

    def do(self, op: Op):
        if op.kind == "create_vm":
            vm = self.vms[op.vm] = self._chip.create_vm(op.vm, cores=op.arg)
            return (vm.name, len(vm.pcores))
        if op.kind == "load":
            self.vms[op.vm].load(self.nets[op.arg])
            return ("loaded", op.vm, op.arg)
        if op.kind == "run":
            return self.vms[op.vm].run(op.arg, run_inputs(op))
        if op.kind == "state":
            return self.vms[op.vm].state()
        if op.kind == "destroy":
            self.vms.pop(op.vm).destroy()
            return ("destroyed", op.vm)
        return self.model.predict(predict_x(op), batch=1, return_scores=True, progress=False)


def execute(target, plan: list[Op], label: str = "", progress: bool = False) -> list[tuple[str, float, str | None]]:
    """Each request of ``plan`` on ``target``: ``(kind, seconds, digest)``, digest None when it raised
    (the error is printed)."""
    out = []
    for i, op in enumerate(plan):
        getattr(target, "prepare", lambda op: None)(op)
        t0 = time.perf_counter()
        try:
            result = target.do(op)
        except Exception as e:  # noqa: BLE001 - a lost request is counted, the plan goes on
            dt = time.perf_counter() - t0
            print(f"  {label} request {i} ({op.kind} {op.vm}): {type(e).__name__}: {e}", file=sys.stderr)
            out.append((op.kind, dt, None))
            continue
        dt = time.perf_counter() - t0
        out.append((op.kind, dt, digest(op.kind, result)))
        if progress and (i + 1) % max(1, len(plan) // 4) == 0:
            print(f"  {label}: {i + 1}/{len(plan)} requests", file=sys.stderr, flush=True)
    return out


def tenant_worker(index: int, url: str, token: str, seed: int, n: int, folder: str, start, loaded, local_turn,
                  results, progress: bool = True) -> None:
    """One tenant process: prepare, wait for the start, send the plan, then replay it in-process when it is
    this tenant's turn (``local_turn``: a lock); puts ``(index, remote, local)`` on ``results``."""
    try:
        assets = make_assets(seed, index, Path(folder) / f"t{index}")
        plan = make_plan(seed, index, n)
        remote = Remote(url, token, assets)
        start.wait()
        got = execute(remote, plan, f"tenant {index}", progress)
        remote.close()
        loaded.wait()
        with local_turn:
            ref = execute(Local(assets), plan, f"tenant {index} in-process")
        results.put((index, got, ref))
    except BaseException as e:
        results.put((index, repr(e), None))
        start.abort()           # the parent and the other tenants stop waiting for this one
        loaded.abort()
        raise


# ---- the server ---------------------------------------------------------------------------------------------------
# ---- the benchmark ------------------------------------------------------------------------------------------------
def run_load(tenants: int = 8, requests: int = 200, seed: int = 0, solo: bool = True, progress: bool = True,
             folder: Path | None = None) -> dict:
    """Run the benchmark; a summary: ``checked``, ``lost``, ``wrong``, ``seconds`` (load phase),
    ``throughput``, and per kind the latencies under load, solo and in-process."""
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(dir=folder) as tmp, ServeProcess(Path(tmp) / "data", startup_timeout=600) as server:
        tokens = [server.add_tenant(f"t{i}", **QUOTA) for i in range(tenants)]
        start, loaded = ctx.Barrier(tenants + 1), ctx.Barrier(tenants + 1)
        local_turn, results = ctx.Lock(), ctx.Queue()
        procs = [ctx.Process(target=tenant_worker, args=(i, server.url, tokens[i], seed, requests, tmp, start,
                                                         loaded, local_turn, results, progress))
                 for i in range(tenants)]
        for p in procs:
            p.start()
        start.wait(timeout=300)
        t0 = time.perf_counter()
        if progress:
            print(f"load: {tenants} tenants x {requests} requests against {server.url}", file=sys.stderr)
        loaded.wait(timeout=3600)
        seconds = time.perf_counter() - t0
        if progress:
            print(f"load done in {seconds:.1f} s; in-process replays, one tenant at a time", file=sys.stderr)
        got = dict((i, (r, ref)) for i, r, ref in (results.get(timeout=3600) for _ in procs))
        for p in procs:
            p.join()
        broken = {i: r for i, (r, ref) in got.items() if ref is None}
        if broken:
            raise RuntimeError(f"tenant processes failed: {broken}")
        solo_rows = []
        if solo:
            if progress:
                print("solo: tenant 0's plan alone on the idle server", file=sys.stderr)
            assets = make_assets(seed, 0, Path(tmp) / "solo")
            remote = Remote(server.url, server.add_tenant("solo", **QUOTA), assets)
            solo_rows = execute(remote, make_plan(seed, 0, requests), "solo")
            remote.close()
            solo_ref = got[0][1]
            solo_bad = sum(1 for (_, _, a), (_, _, b) in zip(solo_rows, solo_ref) if a is None or a != b)
            if solo_bad:
                raise AssertionError(f"the solo run got {solo_bad} results that differ from in-process")
        status = server.admin_get("/admin/status").json()
    return summarize(got, solo_rows, seconds, status)


def summarize(got: dict, solo_rows: list, seconds: float, status: dict) -> dict:
    """Counts and latency percentiles from the tenants' rows."""
    lost = wrong = checked = 0
    per_kind = {k: {"load": [], "local": [], "solo": []} for k in KINDS}
    for remote, local in got.values():
        for (kind, dt, a), (_, dt_local, b) in zip(remote, local):
            checked += 1
            if a is None:
                lost += 1
            elif b is None or a != b:
                wrong += 1
            per_kind[kind]["load"].append(dt)
            per_kind[kind]["local"].append(dt_local)
        lost += abs(len(remote) - len(local))
    for kind, dt, _ in solo_rows:
        per_kind[kind]["solo"].append(dt)
    total = sum(len(r) for r, _ in got.values())
    return {"checked": checked, "lost": lost, "wrong": wrong, "requests": total, "seconds": seconds,
            "throughput": total / seconds if seconds else 0.0, "per_kind": per_kind,
            "swaps": status.get("swaps"), "batches": status.get("batches"),
            "largest_batch": status.get("largest_batch")}


def _ms(values, q) -> str:
    return f"{np.percentile(values, q) * 1e3:.1f}" if values else "-"


def table(summary: dict) -> str:
    """The summary as a Markdown table."""
    rows = ["| request | n | p50 under load (ms) | p99 under load (ms) | p50 solo (ms) | p50 in-process (ms) "
            "| server overhead, solo (ms) | solo / in-process |",
            "|---|--:|--:|--:|--:|--:|--:|--:|"]
    per_kind = dict(summary["per_kind"])
    per_kind["all"] = {part: [x for d in summary["per_kind"].values() for x in d[part]]
                       for part in ("load", "solo", "local")}
    for kind, d in per_kind.items():
        both = d["solo"] and d["local"]
        overhead = f"{(np.median(d['solo']) - np.median(d['local'])) * 1e3:.1f}" if both else "-"
        ratio = f"{np.median(d['solo']) / np.median(d['local']):.1f}x" if both and np.median(d["local"]) > 0 else "-"
        rows.append(f"| {kind} | {len(d['load'])} | {_ms(d['load'], 50)} | {_ms(d['load'], 99)} | "
                    f"{_ms(d['solo'], 50)} | {_ms(d['local'], 50)} | {overhead} | {ratio} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", type=int, default=8, help="tenant processes (default 8)")
    ap.add_argument("--requests", type=int, default=200, help="requests per tenant (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 tenants x 20 requests, no solo phase")
    args = ap.parse_args(argv)
    tenants, requests = (2, 20) if args.quick else (args.tenants, args.requests)
    t0 = time.perf_counter()
    s = run_load(tenants, requests, args.seed, solo=not args.quick)
    print(f"{s['requests']} requests from {tenants} tenant processes in {s['seconds']:.1f} s: "
          f"{s['throughput']:.1f} requests/s (server: {s['batches']} gated RUNs, largest {s['largest_batch']} VMs, "
          f"{s['swaps']} context swaps)")
    print(f"checked against in-process: {s['checked']} results, {s['lost']} lost, {s['wrong']} wrong or misrouted")
    print(table(s))
    print(f"(whole benchmark {time.perf_counter() - t0:.0f} s, {os.cpu_count()} CPUs)")
    assert s["checked"] == s["requests"] == tenants * requests, s
    assert s["lost"] == 0 and s["wrong"] == 0, "lost or misrouted results"
    return 0


if __name__ == "__main__":
    sys.exit(main())
