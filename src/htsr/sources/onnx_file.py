"""ONNX models: the graph's initializers (weights), read with the ``onnx`` package (an optional extra)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SourceError
from .keyvalue import Entry, order_keys


def onnx_entries(path: Path) -> list[Entry]:
    """Entries for every initializer of rank ≥ 1, in natural key order.

    External-data tensors are resolved relative to the model file, as onnx does.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise SourceError(f"{path}: reading ONNX files needs onnx; install it with `pip install htsr[onnx]`.") from None
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise SourceError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    inits = {init.name: init for init in model.graph.initializer}
    out = []
    for key in order_keys(inits):
        init = inits[key]
        shape = tuple(int(d) for d in init.dims)
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name
        except Exception:
            dtype = f"onnx:{init.data_type}"

        def load(init=init, key=key):
            try:
                return numpy_helper.to_array(init).copy()
            except Exception as exc:
                raise SourceError(f"{path}: cannot read initializer {key!r} ({exc.__class__.__name__}).") from None

        out.append(Entry(key, shape, dtype, str(path), load))
    if not out:
        raise SourceError(f"{path}: the ONNX graph holds no initializers (weights).")
    return out
