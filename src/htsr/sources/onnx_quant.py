"""ONNX linear quantization in numpy: ``y = (x − zero_point) · scale``, as the ONNX operators define it.

One function checks the scale / zero-point shapes against the quantized tensor
(:func:`check_scale`), one dequantizes (:func:`dequantize`). Three granularities,
as ``DequantizeLinear`` (opset 10, 13, 21) defines them:

* per tensor: ``scale`` a scalar (or shape ``(1,)``);
* per axis: ``scale`` 1-D of length ``x.shape[axis]``;
* blocked (opset 21 ``block_size`` > 0): ``scale`` of ``x``'s rank, ``ceil(x.shape[axis] / block_size)``
  along ``axis`` and ``x.shape`` elsewhere.

The arithmetic follows onnxruntime's kernels: ``x − zero_point`` in int32, converted
to float32 and multiplied by the float32 scale (one rounding), then cast to the
scale's dtype — the matrix the model computes with, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np


def check_scale(shape: tuple[int, ...], scale_shape: tuple[int, ...], zp_shape: tuple[int, ...] | None,
                axis: int, block_size: int = 0) -> tuple[str, int]:
    """(granularity, normalized axis), or raise ``ValueError`` naming the expected scale shape.

    ``granularity`` is ``'tensor'``, ``'axis'`` or ``'block<n>'``.
    """
    ndim = len(shape)
    if zp_shape is not None and tuple(zp_shape) != tuple(scale_shape):
        raise ValueError(f"zero point shape {tuple(zp_shape)} differs from the scale shape {tuple(scale_shape)}")
    if math.prod(scale_shape) == 1 and len(scale_shape) <= 1 and not block_size:
        return "tensor", 0
    if ndim == 0 or not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for shape {shape}")
    axis %= ndim
    if block_size > 0:
        expected = tuple(-(-d // block_size) if i == axis else d for i, d in enumerate(shape))
        if tuple(scale_shape) != expected:
            raise ValueError(f"scale shape {tuple(scale_shape)}, expected {expected} (blocks of {block_size} "
                             f"along axis {axis} of shape {shape})")
        return f"block{block_size}", axis
    if tuple(scale_shape) != (shape[axis],):
        raise ValueError(f"scale shape {tuple(scale_shape)}, expected () or ({shape[axis]},) for axis {axis} "
                         f"of shape {shape}")
    return "axis", axis


def dequantize(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray:
    """``(codes − zero_point) · scale`` broadcast per tensor, per axis or per block (shapes checked first).

    Examples
    --------
    >>> import numpy as np
    >>> dequantize(np.array([[0, 10], [20, 30]], np.int8), np.array([0.5, 2.0], np.float32),
    ...            np.array([0, 10], np.int8), axis=1).tolist()
    [[0.0, 0.0], [10.0, 40.0]]
    """
    codes, scale = np.asarray(codes), np.asarray(scale)
    zp = None if zero_point is None else np.asarray(zero_point)
    kind, axis = check_scale(codes.shape, scale.shape, None if zp is None else zp.shape, axis, block_size)

    def spread(param: np.ndarray, dtype: type) -> np.ndarray:
        p: np.ndarray = param.astype(dtype)
        if kind == "tensor":
            return p.reshape(())
        if kind == "axis":
            return p.reshape(tuple(p.size if i == axis else 1 for i in range(codes.ndim)))
        return np.repeat(p, min(block_size, codes.shape[axis]), axis=axis)[tuple(slice(0, d) for d in codes.shape)]

    if codes.dtype.kind in "iub":
        x = codes.astype(np.int32)
        xf = (x - spread(zp, np.int32) if zp is not None else x).astype(np.float32)
    else:  # float8 codes (ml_dtypes): the zero point is a float8 zero
        xf = codes.astype(np.float32)
        if zp is not None:
            xf = xf - spread(zp, np.float32)
    out = xf * spread(scale, np.float32)
    if scale.dtype.kind == "f" and scale.dtype != np.float32:
        out = out.astype(scale.dtype)
    return out
