"""NeuroVM: an open neuromorphic chip and the virtualization stack around it.

Subpackages: ``neurovm.hdl`` (Amaranth gateware), ``neurovm.emulator`` (the
bit-exact golden model), ``neurovm.mapper`` (SNN partitioning and placement),
``neurovm.host`` (runtime, backends, protocol).  The shared chip parameters
live in :mod:`neurovm.config`, the word formats in :mod:`neurovm.formats`.
"""

from __future__ import annotations

from .config import DEFAULT_CONFIG, ChipConfig

__version__ = "0.1.0"
__all__ = ["ChipConfig", "DEFAULT_CONFIG", "__version__", "open", "convert_onnx", "convert_pytorch",
           "convert_tensorflow", "convert_tflite", "load_model", "import_nir", "connect"]


def open(backend: str = "emulator", config: ChipConfig | None = None, **options):  # noqa: A001 - the entry point
    """Open a chip over a backend ("emulator", "verilator" or "fpga:PORT"); see :func:`neurovm.host.open`.

    For ``"emulator"``, ``device="cuda"`` (or ``"cuda:N"``) runs the emulator on an NVIDIA GPU
    through CuPy (``pip install 'neurovm[gpu]'``); without CuPy or a device it raises
    :class:`~neurovm.emulator.DeviceUnavailableError` saying which is missing.
    For ``fpga:PORT``, ``board=B`` takes the board's configuration, baud rate and bridge
    FIFO depth; the serial window follows the FIFO (docs/architecture.md §21).  The
    returned :class:`~neurovm.host.Chip` may be shared by threads.
    """
    from .host import open as _open

    return _open(backend, config, **options)


def convert_onnx(model, calibration=None, config: ChipConfig | str | None = None, **kw):
    """Convert an ONNX ReLU network or CNN to a rate-coded SNN; see :func:`neurovm.host.model.convert_onnx`.

    Without ``calibration`` the normalisation is data-free and a ``CalibrationWarning`` says so."""
    from .host.model import convert_onnx as _convert

    return _convert(model, calibration, config or DEFAULT_CONFIG, **kw)


def convert_pytorch(module, example_input=None, calibration=None, config: ChipConfig | str | None = None, **kw):
    """Convert a PyTorch module, TorchScript file (``.pt``) or ``torch.export`` file (``.pt2``) through
    ONNX; see :func:`neurovm.host.model.convert_pytorch`.  Without ``calibration`` the normalisation is
    data-free (a ``CalibrationWarning``)."""
    from .host.model import convert_pytorch as _convert

    return _convert(module, example_input, calibration, config or DEFAULT_CONFIG, **kw)


def convert_tensorflow(model, calibration=None, config: ChipConfig | str | None = None, **kw):
    """Convert a Keras ``.h5``/``.keras`` file (read without TensorFlow) or a live ``tf.keras`` model;
    see :func:`neurovm.host.importers.keras.convert_keras`."""
    from .host.importers.keras import convert_keras as _convert

    return _convert(model, calibration, config or DEFAULT_CONFIG, **kw)


def convert_tflite(path, calibration=None, config: ChipConfig | str | None = None, **kw):
    """Convert a ``.tflite`` file (float32 or int8-quantized; read without TensorFlow);
    see :func:`neurovm.host.importers.tflite.convert_tflite`."""
    from .host.importers.tflite import convert_tflite as _convert

    return _convert(path, calibration, config or DEFAULT_CONFIG, **kw)


def load_model(path):
    """Read a ``.nvm`` model file; see :class:`neurovm.host.model.SnnModel`."""
    from .host.model import load_model as _load

    return _load(path)


def import_nir(graph, dt: float = 1e-3, config: ChipConfig | None = None):
    """Import a NIR graph as a chip network; see :func:`neurovm.host.nir_import.import_nir`."""
    from .host.nir_import import import_nir as _import

    return _import(graph, dt, config or DEFAULT_CONFIG)


def connect(url: str, token: str | None = None, token_file=None, timeout: float = 600.0):
    """Connect to a ``neurovm serve`` daemon as a tenant; see :func:`neurovm.host.service.connect`.

    The token is ``token``, else the contents of ``token_file``, else ``$NEUROVM_TOKEN``.  The
    returned connection offers the in-process VM API (``create_vm``, then ``load``, ``run``,
    ``state``, ``telemetry``, ``destroy`` on the VM) and ``predict``.
    """
    from .host.service.client import connect as _connect

    return _connect(url, token, token_file, timeout)
