"""ONNX models (a ``.onnx`` path or an in-memory ``onnx.ModelProto``), read with the ``onnx`` extra.

Weights are found where the graph uses them, not by listing initializers: a
tensor is a layer's weight when a ``MatMul``, ``Gemm``, ``Conv`` or ``Gather``
node consumes it and it is constant — a graph initializer, the output of a
``Constant`` node (exporters such as paddle2onnx keep every weight there), or
an ``Identity`` / ``Cast`` / ``Transpose`` of one of those. Layouts follow the
node:

=========  ===================================  =================================
node       constant input                       row (as a PyTorch module holds it)
=========  ===================================  =================================
MatMul     B, (in, out)                         dense, transposed to (out, in)
Gemm       B, (out, in) if ``transB`` else      dense (out, in)
           (in, out)
Conv       W, (out, in/group, kh, kw) or        conv2d / conv1d as stored
           (out, in/group, k)
Gather     data (vocab, dim), indices not       embedding
           constant
=========  ===================================  =================================

Rows come in node order (``layer_id`` counts them from 1); a constant used by
two nodes (a tied embedding) is analyzed once and the second use is marked.
The row's name is the weight's own name without ``.weight`` (``fc1``,
``conv2d_0.w_0``) or, when the exporter gave it an anonymous name
(``onnx::MatMul_8``), the consuming node's name (``/encoder/layer.0/query/MatMul``
→ ``encoder.layer.0.query``). External data files are read only from the
model's own folder (plain relative names; nothing is fetched); subgraphs
(``If`` / ``Loop`` bodies) are not searched.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import LayerError, SourceError
from .base import Source, WeightTensor

_ANONYMOUS = re.compile(r"^(onnx::|/)|_output_\d+$|^(val|_val|const|Constant)_?\d*$")
_PASS = ("Identity", "Cast", "Transpose")


def is_onnx_model(obj: Any) -> bool:
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(obj, onnx.ModelProto)


def _import_onnx(where: str) -> Any:
    try:
        import onnx
    except ImportError:
        raise SourceError(f"{where}: reading ONNX models needs onnx; install it with `pip install 'htsr[onnx]'`.") from None
    return onnx


def load_model(path: Path) -> Any:
    onnx = _import_onnx(str(path))
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SourceError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {str(exc)[:200]}).") from None


class _Const:
    """A constant tensor of the graph, possibly transposed (Transpose of a constant)."""

    def __init__(self, proto: Any, name: str, perm: tuple[int, ...] | None = None) -> None:
        self.proto = proto
        self.name = name  # the initializer's or Constant node output's name (pass-throughs keep it)
        self.perm = perm

    @property
    def shape(self) -> tuple[int, ...]:
        dims = tuple(int(d) for d in self.proto.dims)
        return tuple(dims[p] for p in self.perm) if self.perm is not None else dims


def _constants(graph: Any) -> dict[str, _Const]:
    """Every constant value of the graph by name: initializers, Constant nodes and pass-throughs of them."""
    consts: dict[str, _Const] = {init.name: _Const(init, init.name) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    consts[node.output[0]] = _Const(attr.t, node.output[0])
        elif node.op_type in _PASS and node.input and node.output and node.input[0] in consts:
            src = consts[node.input[0]]
            if node.op_type == "Transpose":
                ndim = len(src.shape)
                perm = next((tuple(int(p) for p in a.ints) for a in node.attribute if a.name == "perm"),
                            tuple(reversed(range(ndim))))
                if sorted(perm) != list(range(ndim)):
                    continue
                base = src.perm if src.perm is not None else tuple(range(ndim))
                consts[node.output[0]] = _Const(src.proto, src.name, tuple(base[p] for p in perm))
            else:
                consts[node.output[0]] = src
    return consts


def _int_attr(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _weight_uses(graph: Any, consts: dict[str, _Const]) -> list[tuple[Any, str, _Const, LayerType, bool]]:
    """(node, input name, constant, layer type, transpose?) for each weight-consuming node, in node order."""
    uses = []
    for node in graph.node:
        ins = list(node.input)
        op = node.op_type
        if op == "MatMul" and len(ins) == 2:
            if ins[1] in consts and len(consts[ins[1]].shape) == 2:
                uses.append((node, ins[1], consts[ins[1]], LayerType.DENSE, True))
            elif ins[0] in consts and len(consts[ins[0]].shape) == 2:  # y = W @ x: W is (out, in)
                uses.append((node, ins[0], consts[ins[0]], LayerType.DENSE, False))
        elif op == "Gemm" and len(ins) >= 2 and ins[1] in consts and len(consts[ins[1]].shape) == 2:
            uses.append((node, ins[1], consts[ins[1]], LayerType.DENSE, not _int_attr(node, "transB", 0)))
        elif op == "Conv" and len(ins) >= 2 and ins[1] in consts and len(consts[ins[1]].shape) in (3, 4):
            ltype = LayerType.CONV2D if len(consts[ins[1]].shape) == 4 else LayerType.CONV1D
            uses.append((node, ins[1], consts[ins[1]], ltype, False))
        elif (op == "Gather" and len(ins) == 2 and ins[0] in consts and ins[1] not in consts
              and len(consts[ins[0]].shape) == 2 and _int_attr(node, "axis", 0) == 0):
            uses.append((node, ins[0], consts[ins[0]], LayerType.EMBEDDING, False))
    return uses


def _reference_rows(onnx: Any, graph: Any, origin: str, folder: Path | None) -> list[WeightTensor]:
    """The reference's ONNX rows: 2-D and 4-D initializers, in file order, as stored."""
    out = []
    for index, init in enumerate(graph.initializer):
        shape = tuple(int(d) for d in init.dims)
        if len(shape) not in (2, 4):
            continue
        const = _Const(init, init.name)
        out.append(WeightTensor(
            layer_id=index, name=init.name, longname=init.name,
            layer_type=LayerType.DENSE if len(shape) == 2 else LayerType.CONV2D, shape=shape,
            dtype=_dtype_name(onnx, init), origin=origin, key=init.name,
            load=_loader(onnx, const, False, folder, origin, f"initializer {init.name!r}"),
        ))
    return out


def _row_name(tensor_name: str, node: Any) -> str:
    if tensor_name and not _ANONYMOUS.search(tensor_name):
        return tensor_name.removesuffix(".weight")
    parts = [p for p in node.name.strip("/").split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:
        parts = parts[:-1]
    return ".".join(parts) or node.name or tensor_name or node.op_type


def _dtype_name(onnx: Any, proto: Any) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)).name
    except Exception:
        return f"onnx:{proto.data_type}"


def _external(proto: Any, folder: Path | None, origin: str) -> tuple[Path, int, int | None] | None:
    """(file, offset, length) of a tensor stored outside the model, checked to lie in the model's folder."""
    if proto.data_location != 1:  # TensorProto.EXTERNAL
        return None
    info = {e.key: e.value for e in proto.external_data}
    location = info.get("location", "")
    if folder is None:
        raise LayerError(f"invalid: tensor {proto.name!r} of the in-memory model {origin} keeps its data in an "
                         f"external file {location!r}; load the model with its data (onnx.load) or pass its path")
    if (not location or Path(location).is_absolute() or ".." in Path(location).parts or "\\" in location
            or ":" in location):
        raise SourceError(f"{origin}: tensor {proto.name!r} names external data {location[:100]!r} outside the "
                          "model's folder; htsr only reads files next to the model.")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise SourceError(f"{origin}: tensor {proto.name!r} has a bad external-data offset/length.") from None
    return folder / location, offset, length


def _loader(onnx: Any, const: _Const, transpose: bool, folder: Path | None, origin: str,
            where: str) -> Callable[[], np.ndarray]:
    from onnx import numpy_helper

    def load() -> np.ndarray:
        proto = const.proto
        ext = _external(proto, folder, origin)
        try:
            if ext is not None:
                file, offset, length = ext
                itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize
                need = math.prod(int(d) for d in proto.dims) * itemsize
                if length is not None and length != need:
                    raise SourceError(f"{origin}: external data of {where} is {length} bytes; its shape needs {need}.")
                if not file.is_file() or file.stat().st_size < offset + need:
                    raise SourceError(f"{origin}: external data file {file.name!r} of {where} is missing or too short.")
                with open(file, "rb") as fh:
                    fh.seek(offset)
                    raw = fh.read(need)
                inline = onnx.TensorProto()
                inline.data_type, inline.name = proto.data_type, proto.name
                inline.dims.extend(proto.dims)
                inline.raw_data = raw
                proto = inline
            arr = numpy_helper.to_array(proto)
        except (SourceError, LayerError):
            raise
        except Exception as exc:
            raise SourceError(f"{origin}: cannot read {where} ({exc.__class__.__name__}: {str(exc)[:150]}).") from None
        if arr.dtype.kind not in "fciub":  # bfloat16 / float8 come back as ml_dtypes
            arr = arr.astype(np.float32)
        if const.perm is not None:
            arr = arr.transpose(const.perm)
        if transpose:
            arr = arr.T
        arr = np.ascontiguousarray(arr)
        arr.flags.writeable = False
        return arr

    return load


def onnx_tensors(model: Any, path: Path | None = None, reference_ids: bool = False) -> list[WeightTensor]:
    """WeightTensors of an ONNX model (see the module docstring for what counts as a weight).

    With ``reference_ids`` (the compat ``WeightWatcher``), rows follow the reference
    instead: every 2-D (dense) and 4-D (conv2d) initializer in file order, ``layer_id``
    its 0-based index among the initializers, named by the initializer; weights in
    ``Constant`` nodes, which the reference does not see, follow with ids after the
    last initializer.

    Raises
    ------
    SourceError
        No node of the graph consumes a constant weight, or the model is malformed.
    """
    origin = str(path) if path is not None else "<onnx.ModelProto>"
    onnx = _import_onnx(origin)
    try:
        graph = model.graph
        consts = _constants(graph)
        uses = _weight_uses(graph, consts)
    except Exception as exc:  # a malformed proto that parsed
        raise SourceError(f"{origin}: malformed ONNX graph ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    out: list[WeightTensor] = []
    first: dict[int, str] = {}
    folder = path.parent if path is not None else None
    if reference_ids:
        out = _reference_rows(onnx, model.graph, origin, folder)
        inits = {id(init) for init in model.graph.initializer}
        uses = [u for u in uses if id(u[2].proto) not in inits]  # Constant-node weights, which the reference misses
    start = len(model.graph.initializer) if reference_ids else 1
    for layer_id, (node, _input, const, ltype, transpose) in enumerate(uses, start=start):
        name = _row_name(const.name, node)
        shape = const.shape[::-1] if transpose else const.shape
        ident = id(const.proto)  # W and Wᵀ share a spectrum: one analysis per stored tensor
        note = ""
        if ident in first:
            note = f"tied: same tensor as {first[ident]}"
        else:
            first[ident] = name
        where = f"weight {const.name!r} of node {node.name or node.op_type!r}"
        out.append(WeightTensor(
            layer_id=layer_id, name=name, longname=name, layer_type=ltype, shape=tuple(shape),
            dtype=_dtype_name(onnx, const.proto), origin=origin, key=const.name,
            load=_loader(onnx, const, transpose, folder, origin, where), note=note,
        ))
    if not out:
        kinds = sorted({n.op_type for n in model.graph.node})[:12]
        raise SourceError(f"{origin}: no MatMul, Gemm, Conv or Gather node of the ONNX graph uses a constant weight "
                          f"({len(model.graph.initializer)} initializers; node types: {', '.join(kinds) or 'none'}).")
    return out


# ModelProto's fields as a first byte after ir_version: producer_name … graph, opset_import, metadata_props
_MODEL_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xAA}


def sniff(path: Path, head: bytes) -> bool:
    """A protobuf ModelProto: field 1 (``ir_version``, a small varint), then another ModelProto field.

    ONNX has no magic number; every exporter writes ``ir_version`` first. This
    is the weakest signature of the registry, so it is tried last.
    """
    if len(head) < 3 or head[0] != 0x08:
        return False
    version, i = 0, 1
    while i < len(head) and i < 4:
        version |= (head[i] & 0x7F) << (7 * (i - 1))
        if not head[i] & 0x80:
            break
        i += 1
    return 1 <= version <= 64 and i + 1 < len(head) and head[i + 1] in _MODEL_TAGS


def open_file(path: Path, extra_rows: bool = True) -> Source:
    from .safetensors_file import require_regular_file

    require_regular_file(path)
    return Source(str(path), tuple(onnx_tensors(load_model(path), path, not extra_rows)), "onnx")
