"""Mutated real files: every damaged or hostile ``.nvm`` / ``.nvmap`` ends in the format's own named
error (ModelError / MapError) -- never a traceback of another type, never a large allocation -- and
loading never changes the file. The regular run samples each class of damage; ``-m slow`` sweeps more."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from neurovm.config import ChipConfig
from neurovm.host.model import ModelError, SnnModel, load_model
from neurovm.mapper import MapError, MappedNetwork, map_network

BIG = ChipConfig(mesh_width=16, mesh_height=16, neurons_per_core=4096, synapses_per_core=32768)


def small_model(seed: int = 0) -> SnnModel:
    rng = np.random.default_rng(seed)
    return SnnModel([rng.integers(-127, 128, (12, 10)), rng.integers(-127, 128, (4, 12))],
                    [rng.integers(-4000, 4000, 12), rng.integers(-50, 50, 4)],
                    [rng.integers(0, 8, 12), np.zeros(4, np.int64)], [90, 40], 0.5, 16, meta={"note": "fuzz"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One real .nvm and one real .nvmap (two vcores) and their bytes."""
    d = tmp_path_factory.mktemp("fuzz")
    model = small_model()
    model.save(d / "m.nvm")
    cfg = ChipConfig(neurons_per_core=16)
    mapped = map_network(model.network(), cfg)
    assert len(mapped.images) >= 2
    mapped.save(d / "m.nvmap")
    return {"nvm": (d / "m.nvm").read_bytes(), "nvmap": (d / "m.nvmap").read_bytes()}


LOADERS = {"nvm": (load_model, ModelError), "nvmap": (MappedNetwork.load, MapError)}


def load_outcome(path, kind: str) -> str:
    """Load ``path``; 'ok' or 'refused' (the named error, naming the file). The file must be unchanged."""
    loader, error = LOADERS[kind]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        loader(path)
        outcome = "ok"
    except error as e:
        assert str(path) in str(e), f"the message does not name the file: {e}"
        outcome = "refused"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "loading changed the file"
    return outcome


# ---------------------------------------------------------------- truncation and bit flips
def truncation_offsets(size: int, count: int | None) -> list[int]:
    if count is None:
        return list(range(size))
    rng = np.random.default_rng(1)
    return sorted(set(np.linspace(0, size - 1, count // 2, dtype=int).tolist()
                      + rng.integers(0, size, count // 2).tolist()))


def check_truncations(files, tmp_path, kind, count):
    data = files[kind]
    path = tmp_path / f"cut.{kind}"
    for n in truncation_offsets(len(data), count):
        path.write_bytes(data[:n])
        assert load_outcome(path, kind) == "refused", f"{kind} truncated to {n} bytes was accepted"


def check_bit_flips(files, tmp_path, kind, count, seed=2):
    """A flip either is refused by name or leaves a file that loads and passes every check
    (e.g. a flip in a zip timestamp); most flips must be refused."""
    data = files[kind]
    rng = np.random.default_rng(seed)
    path = tmp_path / f"flip.{kind}"
    outcomes = []
    for _ in range(count):
        pos, bit = int(rng.integers(len(data))), int(rng.integers(8))
        mutated = bytearray(data)
        mutated[pos] ^= 1 << bit
        path.write_bytes(bytes(mutated))
        outcomes.append(load_outcome(path, kind))
    assert outcomes.count("refused") >= 0.5 * count, outcomes


@pytest.mark.parametrize("kind", ["nvm", "nvmap"])
def test_truncated_files_are_refused_by_name(files, tmp_path, kind):
    check_truncations(files, tmp_path, kind, 40)


@pytest.mark.parametrize("kind", ["nvm", "nvmap"])
def test_bit_flips_are_refused_by_name_or_harmless(files, tmp_path, kind):
    check_bit_flips(files, tmp_path, kind, 60)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nvm", "nvmap"])
def test_truncation_and_bit_flip_sweep(files, tmp_path, kind):
    check_truncations(files, tmp_path, kind, None)
    check_bit_flips(files, tmp_path, kind, 3000, seed=3)


# ---------------------------------------------------------------- rewriting members
def members(data: bytes) -> tuple[dict, dict]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n))) for n in z.namelist()}
    return json.loads(bytes(arrays.pop("header")).decode()), arrays


def npy_bytes(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def write_file(path, header, arrays, raw_header: str | None = None, raw_members: dict | None = None):
    """A container like save_npz's, with any header text and any raw member bytes."""
    text = raw_header if raw_header is not None else json.dumps(header)
    blob = text if isinstance(text, bytes) else text.encode()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("header.npy", npy_bytes(np.frombuffer(blob, np.uint8)))
        for name, a in arrays.items():
            z.writestr(f"{name}.npy", npy_bytes(a))
        for name, raw in (raw_members or {}).items():
            z.writestr(f"{name}.npy", raw)


def set_path(header: dict, keys: tuple, value):
    h = json.loads(json.dumps(header))
    d = h
    for k in keys[:-1]:
        d = d[k]
    if value is DELETE:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value
    return h


DELETE = object()
HUGE = 10 ** 30
COMMON_HEADER_EDITS = [
    (("format",), 7), (("format",), "neurovm-other"), (("version",), True), (("version",), 1.0), (("version",), 2),
    (("config",), "big"), (("config",), None), (("config", "mesh_width"), 1e9), (("config", "mesh_width"), 2.0),
    (("config", "mesh_width"), True), (("config", "mesh_width"), -1), (("config", "neurons_per_core"), HUGE),
    (("config", "bogus"), 1), (("config", "weight_bits"), "8"), (("config",), DELETE),
]
NVM_HEADER_EDITS = COMMON_HEADER_EDITS + [
    (("layers",), 1e9), (("layers",), 10 ** 9), (("layers",), -1), (("layers",), 0), (("layers",), "2"),
    (("layers",), True), (("layers",), 3), (("layers",), DELETE), (("vth_mant",), 5), (("vth_mant",), [1]),
    (("vth_mant", 0), 1.5), (("vth_mant", 0), -1), (("vth_mant", 0), HUGE), (("vth_mant", 0), True),
    (("vth_mant", 0), None), (("input_scale",), "x"), (("input_scale",), 0), (("input_scale",), -1.0),
    (("input_scale",), [1.0]), (("input_scale",), True), (("input_scale",), 1e400), (("steps",), 0),
    (("steps",), 2.5), (("steps",), 10 ** 12), (("steps",), None), (("meta",), [1, 2]), (("steps",), DELETE),
]
NVMAP_HEADER_EDITS = COMMON_HEADER_EDITS + [
    (("cores",), []), (("cores",), DELETE), (("cores", "0", "weight_exp"), 99), (("cores", "0", "weight_exp"), "0"),
    (("cores", "0", "weight_exp"), 1.0), (("cores", "0", "n_active"), -1), (("cores", "0", "n_active"), HUGE),
    (("cores", "0", "n_active"), 2.5), (("cores", "0"), 5), (("cores", "0", "extra"), 1), (("cores", "a"), {}),
    (("cores", "7"), {"weight_exp": 0, "n_active": None}), (("report",), [1]), (("populations",), [1]),
    (("populations", "input"), [0, 10 ** 6]), (("populations", "input"), [0, -1]),
    (("populations", "input"), [0.5]), (("populations", "input"), "all"), (("populations", "input"), [True]),
]


def check_header_edits(files, tmp_path, kind, edits):
    header, arrays = members(files[kind])
    for i, (keys, value) in enumerate(edits):
        path = tmp_path / f"edit{i}.{kind}"
        write_file(path, set_path(header, keys, value), arrays)
        try:
            outcome = load_outcome(path, kind)
        except AssertionError as e:
            raise AssertionError(f"edit {keys}={value!r}: {e}") from None
        assert outcome == "refused", f"edit {keys}={value!r} was accepted"


def test_nvm_header_edits_are_refused_by_name(files, tmp_path):
    check_header_edits(files, tmp_path, "nvm", NVM_HEADER_EDITS)


def test_nvmap_header_edits_are_refused_by_name(files, tmp_path):
    check_header_edits(files, tmp_path, "nvmap", NVMAP_HEADER_EDITS)


@pytest.mark.parametrize("kind", ["nvm", "nvmap"])
def test_non_finite_and_damaged_json_headers_are_refused(files, tmp_path, kind):
    header, arrays = members(files[kind])
    text = json.dumps(header)
    key = '"input_scale": 0.5' if kind == "nvm" else '"mean_hops": '
    assert key in text
    cases = [text.replace('"input_scale": 0.5', '"input_scale": NaN') if kind == "nvm"
             else text.replace('"mean_hops": ', '"mean_hops": Infinity, "x": '),
             text.replace('"steps": 16', '"steps": 1e400') if kind == "nvm"
             else text.replace('"mean_hops": ', '"mean_hops": -1e999, "y": '),
             text[:-5], "[" * 100000 + "]" * 100000, b"\xff\xfe{", "[1, 2]", "null"]
    for i, raw in enumerate(cases):
        path = tmp_path / f"json{i}.{kind}"
        write_file(path, None, arrays, raw_header=raw)
        assert load_outcome(path, kind) == "refused", raw[:60]


def huge_npy(shape, descr="<i2", data=b"\0" * 64) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue() + data


def test_huge_declared_dimensions_are_refused_before_allocation(files, tmp_path):
    """The issue's 40000x40000 weight (11.9 GiB as int64) and 'layers': 1e9, on the largest chip a
    header may name: refused with less than 2 MB allocated."""
    header, arrays = members(files["nvm"])
    big = set_path(header, ("config",), BIG.to_dict())
    cases = {
        "dims": (big, {k: v for k, v in arrays.items() if k != "weight0"}, {"weight0": huge_npy((40000, 40000))}),
        "layers": (set_path(big, ("layers",), 10 ** 9), arrays, {}),
        "lying_size": (big, {k: v for k, v in arrays.items() if k != "weight1"}, {"weight1": huge_npy((4, 12))}),
        "float_weights": (header, {**arrays, "weight0": arrays["weight0"].astype(np.float64)}, {}),
        "object": (header, {k: v for k, v in arrays.items() if k != "bias_exp0"},
                   {"bias_exp0": huge_npy((12,), descr="|O")}),
        "three_d": (header, {**arrays, "weight1": arrays["weight1"][None]}, {}),
        "negative_dim": (header, {k: v for k, v in arrays.items() if k != "bias_mant1"},
                         {"bias_mant1": huge_npy((-4,))}),
        "uint64_wrap": (header, {**arrays, "bias_exp0": np.full(12, 2 ** 64 - 1, np.uint64)}, {}),
        "missing": (header, {k: v for k, v in arrays.items() if k != "bias_mant1"}, {}),
    }
    for name, (h, arrs, raw) in cases.items():
        path = tmp_path / f"{name}.nvm"
        write_file(path, h, arrs, raw_members=raw)
        tracemalloc.start()
        try:
            assert load_outcome(path, "nvm") == "refused", name
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 << 20, (name, peak)


def test_nvm_error_messages_name_the_field_the_value_and_the_rule(files, tmp_path):
    header, arrays = members(files["nvm"])
    expect = [
        ((("layers",), 1e9), r"header field 'layers' = 1000000000.0: must be an integer in 1..1023"),
        ((("config", "mesh_width"), 2.0), r"header field 'config': ChipConfig.mesh_width must be an int, got 2.0"),
        ((("config", "neurons_per_core"), 10 ** 6), r"ChipConfig.neurons_per_core=1000000 is outside 1..4096"),
        ((("vth_mant", 1), 1.5), r"layer 2: vth_mant 1.5 must be an integer in 0..131071"),
        ((("steps",), 10 ** 12), r"steps must be an integer in 1..65536, not 1000000000000"),
        ((("input_scale",), -1.0), r"input_scale must be a positive finite number, not -1.0"),
    ]
    for i, ((keys, value), pattern) in enumerate(expect):
        path = tmp_path / f"msg{i}.nvm"
        write_file(path, set_path(header, keys, value), arrays)
        with pytest.raises(ModelError, match=rf"msg{i}.nvm: .*{pattern}"):
            load_model(path)
    path = tmp_path / "wide.nvm"
    write_file(path, header, {**arrays, "bias_mant0": np.full(12, 5000, np.int16)})
    with pytest.raises(ModelError, match=r"wide.nvm: layer 1: bias_mant outside -4096..4095 \(13-bit signed\): "
                                         r"value 5000 at \[0\]"):
        load_model(path)


# ---------------------------------------------------------------- .nvmap arrays and consistency
def nvmap_array_cases(arrays: dict) -> dict:
    pc = arrays["pcore_of_vcore"]
    core_of, local = arrays["core_of"], arrays["local"]
    dup_slot = local.copy()
    dup_slot[1] = dup_slot[0]
    fo_far = arrays["core0.fo_vcore"].copy()
    fo_far[0] = 3
    fo_axon = arrays["core0.fo_axon"].copy()
    fo_axon[0] = 1000
    return {
        "pcore_twice": {"pcore_of_vcore": np.full_like(pc, pc[0])},
        "pcore_outside": {"pcore_of_vcore": pc + 100},
        "pcore_short": {"pcore_of_vcore": pc[:1]},
        "pcore_float": {"pcore_of_vcore": pc.astype(np.float64)},
        "core_of_outside": {"core_of": core_of + 5},
        "core_of_negative": {"core_of": core_of - 1},
        "local_outside": {"local": local + 100},
        "two_neurons_one_slot": {"local": dup_slot},
        "lengths_differ": {"local": local[:-1]},
        "core_of_2d": {"core_of": core_of[None]},
        "region_too_long": {"core0.target": np.zeros(20000, np.int64)},
        "target_outside": {"core0.target": arrays["core0.target"] + 1000},
        "weight_too_big": {"core0.weight": arrays["core0.weight"] * 0 + 999},
        "fanout_names_missing_vcore": {"core0.fo_vcore": fo_far},
        "fanout_names_missing_axon": {"core0.fo_axon": fo_axon},
        "bool_strings": {"core0.du": np.array(["a"] * arrays["core0.du"].size)},
        "missing_array": {"core1.syn_len": None},
        "missing_core_of": {"core_of": None},
    }


def test_nvmap_array_tampering_is_refused_by_name(files, tmp_path):
    header, arrays = members(files["nvmap"])
    for name, change in nvmap_array_cases(arrays).items():
        arrs = {**arrays, **{k: v for k, v in change.items() if v is not None}}
        for k in [k for k, v in change.items() if v is None]:
            del arrs[k]
        path = tmp_path / f"{name}.nvmap"
        write_file(path, header, arrs)
        assert load_outcome(path, "nvmap") == "refused", name


def test_nvmap_messages_name_the_field(files, tmp_path):
    header, arrays = members(files["nvmap"])
    pc = arrays["pcore_of_vcore"]
    expect = [
        ({"pcore_of_vcore": np.full_like(pc, pc[0])}, header,
         rf"array 'pcore_of_vcore': vcores 0 and 1 both name physical core {pc[0]}"),
        ({}, set_path(header, ("cores", "01"), {"weight_exp": 0, "n_active": None}),
         r"header field 'cores': key '01' is not a vcore number"),
        ({}, set_path(header, ("populations", "input"), [0, 10 ** 6]),
         r"header field 'populations\['input'\]': neuron 1000000 does not exist"),
        ({"core0.target": np.zeros(20000, np.int64)}, header,
         r"array 'core0.target': dimension 0 is 20000, at most 16384 allowed"),
    ]
    for i, (change, h, pattern) in enumerate(expect):
        path = tmp_path / f"msg{i}.nvmap"
        write_file(path, h, {**arrays, **change})
        with pytest.raises(MapError, match=rf"msg{i}.nvmap: {pattern}"):
            MappedNetwork.load(path)


def test_a_good_file_still_loads_and_non_files_are_named(files, tmp_path):
    for kind in ("nvm", "nvmap"):
        path = tmp_path / f"good.{kind}"
        path.write_bytes(files[kind])
        assert load_outcome(path, kind) == "ok"
        (tmp_path / f"dir.{kind}").mkdir()
        loader, error = LOADERS[kind]
        with pytest.raises(error, match=f"dir.{kind}: not a regular file"):
            loader(tmp_path / f"dir.{kind}")
        with pytest.raises(error, match=f"nothing.{kind}: no such file"):
            loader(tmp_path / f"nothing.{kind}")
