"""Importers of trained networks (ONNX, Keras, TFLite, PyTorch) into rate-coded SNN models.

Each importer reads its format into the layer IR of :mod:`.layers`; :func:`.convert.convert_ops`
lowers the IR to affine layers, normalises and quantises them into a
:class:`~neurovm.host.model.SnnModel` (docs/architecture.md §18).
"""

from .convert import convert_ops

__all__ = ["convert_ops", "convert_keras", "convert_onnx_file", "convert_tflite"]


def __getattr__(name):   # the format readers import their parsers (onnx, h5py, tflite) only when used
    if name == "convert_keras":
        from .keras import convert_keras
        return convert_keras
    if name == "convert_onnx_file":
        from .onnx import convert_onnx_file
        return convert_onnx_file
    if name == "convert_tflite":
        from .tflite import convert_tflite
        return convert_tflite
    raise AttributeError(name)
