"""Walking an ONNX graph for its weights: constants, the chains that reach a weight, subgraphs, quantized ops.

A weight is a :class:`Chain`: one stored tensor (an initializer or a ``Constant``
node's value, in this graph or an enclosing one) and the steps that turn it into
what a node consumes — ``Identity``, ``Cast``, ``Transpose``, ``Reshape`` (with a
constant shape) and ``DequantizeLinear`` (with constant scale and zero point).
:func:`weight_uses` lists, in node order with ``If`` / ``Loop`` / ``Scan`` bodies
expanded where their node stands, every node input that is such a weight:

==========================  ============================================================
node                        weight (dequantized with)
==========================  ============================================================
MatMul, Gemm, Conv, Gather  the constant input (its ``DequantizeLinear`` chain, if any)
Gather of integer codes     the table, with the scale/zero point of the ``DequantizeLinear``,
                            ``QLinearMatMul`` or ``MatMulInteger`` that reads the gathered codes
QLinearMatMul, QLinearConv  ``b`` / ``w`` with their ``*_scale`` and ``*_zero_point`` inputs
MatMulInteger, ConvInteger  ``B`` / ``w`` with ``*_zero_point`` and the scale of the ``Mul``
                            that rescales the output (``Mul(a_scale, b_scale)``, onnxruntime's
                            dynamic quantization)
LSTM, GRU, RNN              ``W`` and ``R`` (split into gates by :mod:`onnx_file`)
DynamicQuantizeLSTM         ``W`` and ``R`` (``[dirs, in, 4·hidden]`` int8) with their scales
==========================  ============================================================

Integer codes that reach a node any other way are reported, never analyzed as values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import LayerError, SourceError
from .onnx_quant import check_scale, dequantize

RNN_OPS = ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")
_GRAPH, _GRAPHS = 5, 10  # AttributeProto.GRAPH / GRAPHS
_RNN_ROLES = {3: "bias", 5: "initial state", 6: "initial state", 7: "peepholes"}  # inputs of LSTM / GRU / RNN


@dataclass(frozen=True)
class Chain:
    """A stored tensor and the steps from it to a node's input (nothing read)."""

    proto: Any = field(compare=False)
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the current value (the code type until dequantized)
    steps: tuple = ()  # ("transpose", perm) | ("reshape", shape) | ("cast", dtype) | ("dq", scale, zp, axis, block)
    codes: bool = False  # integer codes not yet dequantized
    stored_dtype: str = ""  # the stored tensor's dtype name
    storage: str = ""
    aux: tuple[str, ...] = ()
    error: str = ""  # inconsistent quantization metadata: reading the weight raises it

    def signature(self) -> tuple:
        """Identifies the value (same stored tensor, same steps)."""
        return (id(self.proto), *(
            (s[0], id(s[1].proto), None if s[2] is None else id(s[2].proto), s[3], s[4]) if s[0] == "dq" else s
            for s in self.steps))


@dataclass
class Use:
    """One node input that is a weight."""

    node: Any
    chain: Chain
    ltype: LayerType
    transpose: bool = False  # stored (in, out): the row is its transpose
    note: str = ""
    rnn: dict | None = None  # op, param ('ih' | 'hh'), dirs, hidden, gates, in_major (DynamicQuantizeLSTM)


@dataclass
class Walk:
    """What :func:`weight_uses` found: the uses and every stored constant with its consumers' op types."""

    uses: list[Use] = field(default_factory=list)
    stored: dict[int, tuple[Any, str, list[str]]] = field(default_factory=dict)  # id → (proto, name, ops)


def np_dtype(onnx: Any, data_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except Exception:
        return np.dtype(np.float32)


def dtype_name(onnx: Any, proto: Any) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)).name
    except Exception:
        return f"onnx:{proto.data_type}"


def _is_codes(dt: np.dtype) -> bool:
    return (dt.kind in "iu" and dt.itemsize <= 2) or dt.name in ("int4", "uint4", "int2", "uint2")


def _int_attr(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _str_attr(node: Any, name: str, default: str) -> str:
    return next((a.s.decode("utf-8", "replace") for a in node.attribute if a.name == name), default)


# ---------------------------------------------------------------- reading


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


def read_proto(onnx: Any, proto: Any, folder: Path | None, origin: str, where: str) -> np.ndarray:
    """One stored tensor as numpy (external data read from the model's folder, just this tensor's bytes)."""
    from onnx import numpy_helper

    ext = _external(proto, folder, origin)
    try:
        if ext is not None:
            file, offset, length = ext
            count = math.prod(int(d) for d in proto.dims)
            bits = {22: 4, 21: 4}.get(proto.data_type)  # INT4 / UINT4 pack two codes a byte
            need = (count + 1) // 2 if bits else count * np_dtype(onnx, proto.data_type).itemsize
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
        return numpy_helper.to_array(proto)
    except (SourceError, LayerError):
        raise
    except Exception as exc:
        raise SourceError(f"{origin}: cannot read {where} ({exc.__class__.__name__}: {str(exc)[:150]}).") from None


def materialize(onnx: Any, chain: Chain, folder: Path | None, origin: str, where: str) -> np.ndarray:
    """The value a chain computes: the stored tensor read, then each step applied in numpy."""
    if chain.error:
        raise LayerError(f"{origin}: {where}: inconsistent quantization metadata: {chain.error}")
    arr = read_proto(onnx, chain.proto, folder, origin, where)
    for step in chain.steps:
        if step[0] == "transpose":
            arr = arr.transpose(step[1])
        elif step[0] == "reshape":
            arr = arr.reshape(step[1])
        elif step[0] == "cast":
            arr = arr.astype(step[1])
        elif step[0] == "dq":
            _, scale, zp, axis, block = step
            s = materialize(onnx, scale, folder, origin, f"scale {scale.name!r} of {where}")
            z = None if zp is None else materialize(onnx, zp, folder, origin, f"zero point {zp.name!r} of {where}")
            try:
                arr = dequantize(arr, s, z, axis, block)
            except ValueError as exc:  # values changed under a shape we checked (never for a valid proto)
                raise LayerError(f"{origin}: {where}: inconsistent quantization metadata: {exc}") from None
    if arr.dtype.kind not in "fc":  # bfloat16 / float8 (ml_dtypes) and casts to integers: as float32
        arr = arr.astype(np.float32)
    return arr


# ---------------------------------------------------------------- constants and chains


def stored_chain(onnx: Any, proto: Any, name: str) -> Chain:
    dt = np_dtype(onnx, proto.data_type)
    return Chain(proto, name, tuple(int(d) for d in proto.dims), dt.name, codes=_is_codes(dt), stored_dtype=dt.name)


def _small_ints(onnx: Any, chain: Chain) -> tuple[int, ...] | None:
    """A small constant integer vector (a Reshape shape), read now; None when it is not one."""
    if chain.steps or len(chain.shape) != 1 or chain.shape[0] > 16 or chain.proto.data_location == 1:
        return None
    try:
        from onnx import numpy_helper

        return tuple(int(v) for v in numpy_helper.to_array(chain.proto).ravel())
    except Exception:
        return None


def _reshaped(shape: tuple[int, ...], target: tuple[int, ...], allowzero: bool) -> tuple[int, ...] | None:
    dims = [shape[i] if (d == 0 and not allowzero and i < len(shape)) else d for i, d in enumerate(target)]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        return None
    total, known = math.prod(shape), math.prod(d for d in dims if d != -1)
    if -1 in dims:
        if known == 0 or total % known:
            return None
        dims[dims.index(-1)] = total // known
    return tuple(dims) if math.prod(dims) == total else None


def dq_step(chain: Chain, scale: Chain | None, zp: Chain | None, axis: int, block: int, kind: str) -> Chain:
    """``chain`` dequantized (an ``error`` instead when the scale / zero point do not fit its shape)."""
    if scale is None:
        return replace(chain, error="", storage="")  # dynamic scale: not a constant weight (caller skips)
    aux = chain.aux + tuple(c.name for c in (scale, zp) if c is not None)
    try:
        gran, axis = check_scale(chain.shape, scale.shape, None if zp is None else zp.shape, axis, block)
    except ValueError as exc:
        return replace(chain, aux=aux, codes=False, storage=f"{chain.stored_dtype}-{kind}",
                       error=f"scale {scale.name!r} / zero point {zp.name if zp else None!r}: {exc}")
    suffix = {"tensor": ""}.get(gran, "/channel" if gran == "axis" else f"/{gran}")
    return replace(chain, steps=(*chain.steps, ("dq", scale, zp, axis, block)), dtype=scale.dtype, codes=False,
                   storage=f"{chain.stored_dtype}-{kind}{suffix}", aux=aux)


def _derive(onnx: Any, node: Any, consts: dict[str, Chain]) -> Chain | None:
    """The chain a pass-through node's output is, or None."""
    src = consts[node.input[0]]
    op = node.op_type
    if op == "Identity":
        return src
    if op == "Cast":
        to = np_dtype(onnx, _int_attr(node, "to", 1))
        return replace(src, steps=(*src.steps, ("cast", to.name)), dtype=to.name)
    if op == "Transpose":
        ndim = len(src.shape)
        perm = next((tuple(int(p) for p in a.ints) for a in node.attribute if a.name == "perm"),
                    tuple(reversed(range(ndim))))
        if sorted(perm) != list(range(ndim)):
            return None
        return replace(src, steps=(*src.steps, ("transpose", perm)), shape=tuple(src.shape[p] for p in perm))
    if op == "Reshape" and len(node.input) > 1 and node.input[1] in consts:
        target = _small_ints(onnx, consts[node.input[1]])
        shape = None if target is None else _reshaped(src.shape, target, bool(_int_attr(node, "allowzero", 0)))
        return None if shape is None else replace(src, steps=(*src.steps, ("reshape", shape)), shape=shape)
    if op == "DequantizeLinear" and src.codes:
        ins = list(node.input)
        scale = consts.get(ins[1]) if len(ins) > 1 else None
        zp = consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
        if scale is None:
            return None
        return dq_step(src, scale, zp, _int_attr(node, "axis", 1), _int_attr(node, "block_size", 0), "qdq")
    return None


def constants(onnx: Any, graph: Any, outer: dict[str, Chain], walk: Walk) -> dict[str, Chain]:
    """Every constant value of one graph by name (enclosing graphs' constants included)."""
    consts = dict(outer)
    for init in graph.initializer:
        consts[init.name] = stored_chain(onnx, init, init.name)
        walk.stored.setdefault(id(init), (init, init.name, []))
    for node in graph.node:
        if not node.output:
            continue
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    consts[node.output[0]] = stored_chain(onnx, attr.t, node.output[0])
                    walk.stored.setdefault(id(attr.t), (attr.t, node.output[0], []))
        elif node.op_type in ("Identity", "Cast", "Transpose", "Reshape", "DequantizeLinear") and node.input \
                and node.input[0] in consts:
            derived = _derive(onnx, node, consts)
            if derived is not None:
                consts[node.output[0]] = derived
    return consts


# ---------------------------------------------------------------- uses


class _Graph:
    """One (sub)graph's constants, consumers and producers."""

    def __init__(self, onnx: Any, graph: Any, consts: dict[str, Chain]) -> None:
        self.onnx, self.graph, self.consts = onnx, graph, consts
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        self.producer: dict[str, Any] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, i))
            for name in node.output:
                self.producer[name] = node
        self.ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(graph.input) + list(graph.value_info)
                      if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}

    def const(self, node: Any, index: int) -> Chain | None:
        return self.consts.get(node.input[index]) if len(node.input) > index and node.input[index] else None

    def integer_scale(self, node: Any, side: int) -> Chain | None:
        """The constant scale of operand ``side`` of a MatMulInteger / ConvInteger: ``out → [Cast] → Mul(·, Mul(a_s, b_s))``."""
        out = node.output[0] if node.output else ""
        users = self.consumers.get(out, [])
        if len(users) == 1 and users[0][0].op_type == "Cast":
            users = self.consumers.get(users[0][0].output[0], [])
        for user, i in users:
            if user.op_type != "Mul":
                continue
            other = self.producer.get(user.input[1 - i])
            if other is not None and other.op_type == "Mul" and len(other.input) == 2:
                return self.consts.get(other.input[side])
        return None

    def gathered_codes(self, node: Any, table: Chain) -> Chain:
        """A Gather's integer table dequantized by what reads the gathered codes (unchanged if nothing does)."""
        for user, i in self.consumers.get(node.output[0] if node.output else "", []):
            op = user.op_type
            if op == "DequantizeLinear" and i == 0:
                scale, zp = self.const(user, 1), self.const(user, 2)
                axis = _int_attr(user, "axis", 1)
                if scale is not None and math.prod(scale.shape) > 1:
                    ids = self.ranks.get(node.input[1])  # the gathered output is ids.shape + table.shape[1:]
                    if axis < 0:
                        axis += len(table.shape)
                    else:
                        axis = axis - ids + 1 if ids is not None else -1
                    if not 0 < axis < len(table.shape):  # along the gathered indices, or unknown
                        return replace(table, codes=False, storage=f"{table.stored_dtype}-qdq", error=(
                            f"DequantizeLinear {user.name!r} after Gather {node.name!r} has a per-axis scale "
                            f"{scale.name!r} of shape {scale.shape} that does not run along the embedding axis; "
                            f"expected () or ({table.shape[-1]},) with axis -1"))
                return dq_step(table, scale, zp, axis, _int_attr(user, "block_size", 0), "qdq")
            if op == "QLinearMatMul" and i in (0, 3):
                return dq_step(table, self.const(user, i + 1), self.const(user, i + 2), 1, 0, "qlinear")
            if op == "MatMulInteger" and i in (0, 1):
                return dq_step(table, self.integer_scale(user, i), self.const(user, i + 2), 1, 0, "integer")
        return table


def _unrecognized(chain: Chain, node: Any) -> str:
    return (f"quantized weights, scheme not recognized: {chain.stored_dtype} tensor {chain.name!r} reaches "
            f"{node.op_type} {node.name!r} without a constant scale")


def _node_uses(g: _Graph, node: Any, out: list[Use]) -> None:
    op, ins, consts = node.op_type, list(node.input), g.consts

    def add(chain: Chain | None, ltype: LayerType, transpose: bool = False, rnn: dict | None = None) -> None:
        if chain is None:
            return
        note = _unrecognized(chain, node) if chain.codes else ""
        out.append(Use(node, chain, ltype, transpose, note, rnn))

    def two_d(i: int) -> Chain | None:
        c = g.const(node, i)
        return c if c is not None and len(c.shape) == 2 else None

    if op == "MatMul" and len(ins) == 2:
        if two_d(1) is not None:
            add(two_d(1), LayerType.DENSE, True)
        elif two_d(0) is not None:  # y = W @ x: W is (out, in)
            add(two_d(0), LayerType.DENSE)
    elif op == "Gemm" and two_d(1) is not None:
        add(two_d(1), LayerType.DENSE, not _int_attr(node, "transB", 0))
    elif op in ("Conv", "ConvInteger", "QLinearConv"):
        w = g.const(node, 3 if op == "QLinearConv" else 1)
        if w is None or len(w.shape) not in (3, 4):
            return
        if op == "QLinearConv" and w.codes:
            w = dq_step(w, g.const(node, 4), g.const(node, 5), 0, 0, "qlinear")
        elif op == "ConvInteger" and w.codes:
            w = dq_step(w, g.integer_scale(node, 1), g.const(node, 3), 0, 0, "integer")
        add(w, LayerType.CONV2D if len(w.shape) == 4 else LayerType.CONV1D)
    elif (op == "Gather" and len(ins) == 2 and ins[1] not in consts and two_d(0) is not None
          and _int_attr(node, "axis", 0) == 0):
        table = two_d(0)
        add(g.gathered_codes(node, table) if table is not None and table.codes else table, LayerType.EMBEDDING)
    elif op == "QLinearMatMul" and two_d(3) is not None:
        b = two_d(3)
        add(dq_step(b, g.const(node, 4), g.const(node, 5), 1, 0, "qlinear") if b is not None and b.codes else b,
            LayerType.DENSE, True)
    elif op == "MatMulInteger" and two_d(1) is not None:
        b = two_d(1)
        add(dq_step(b, g.integer_scale(node, 1), g.const(node, 3), 1, 0, "integer") if b is not None and b.codes
            else b, LayerType.DENSE, True)
    elif op in RNN_OPS:
        _rnn_uses(g, node, add)


def _rnn_uses(g: _Graph, node: Any, add: Callable[..., None]) -> None:
    op = node.op_type
    base = "LSTM" if op == "DynamicQuantizeLSTM" else op
    direction = _str_attr(node, "direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    gates = {"LSTM": "iofc", "GRU": "zrh", "RNN": "h"}[base]
    for param, index, scale_at in (("ih", 1, 8), ("hh", 2, 10)):
        w = g.const(node, index)
        if w is None or len(w.shape) != 3:
            continue
        in_major = op == "DynamicQuantizeLSTM"
        if in_major and w.codes:
            w = _rnn_dq(w, g.const(node, scale_at), g.const(node, scale_at + 1))
        rows = w.shape[2] if in_major else w.shape[1]
        hidden = _int_attr(node, "hidden_size", rows // len(gates))
        info = {"op": base, "param": param, "dirs": dirs, "hidden": hidden, "gates": gates, "in_major": in_major,
                "reverse": direction == "reverse"}
        if w.shape[0] != dirs or rows != len(gates) * hidden:
            w = replace(w, error=w.error or f"{op} {param} weights of shape {w.shape}; expected ({dirs}, "
                        f"{len(gates) * hidden}, …) for direction {direction!r}, hidden_size {hidden}")
            info.update(dirs=min(dirs, w.shape[0]), hidden=rows // len(gates))  # the rows' shapes stay sane
        add(w, LayerType.DENSE, False, info)


def _rnn_dq(w: Chain, scale: Chain | None, zp: Chain | None) -> Chain:
    """DynamicQuantizeLSTM's W / R: scales per direction ``[dirs]`` or per direction and column ``[dirs, 4·hidden]``."""
    if scale is None:
        return w
    dirs, cols = w.shape[0], w.shape[2]
    if scale.shape in ((dirs,), (dirs, cols)) and (zp is None or zp.shape == scale.shape):
        if len(scale.shape) == 1:
            return dq_step(w, scale, zp, 0, 0, "dynlstm")
        # per (direction, column): a scale of shape (dirs, 1, cols), one block over the input rows
        out = dq_step(w, _unsqueezed(scale), _unsqueezed(zp), 1, w.shape[1], "dynlstm")
        return out if out.error else replace(out, storage=f"{w.stored_dtype}-dynlstm/channel")
    return replace(w, codes=False, storage=f"{w.stored_dtype}-dynlstm", aux=w.aux + tuple(
        c.name for c in (scale, zp) if c is not None), error=(
        f"scale {scale.name!r} of shape {scale.shape}; expected ({w.shape[0]},) or ({w.shape[0]}, {w.shape[2]})"))


def _unsqueezed(c: Chain | None) -> Chain | None:
    """(dirs, cols) → (dirs, 1, cols)."""
    if c is None:
        return None
    shape = (c.shape[0], 1, c.shape[1])
    return replace(c, steps=(*c.steps, ("reshape", shape)), shape=shape)


def weight_uses(onnx: Any, graph: Any, outer: dict[str, Chain] | None = None, walk: Walk | None = None) -> Walk:
    """Every weight use of ``graph`` and its subgraphs, in node order (bodies where their node stands)."""
    walk = walk if walk is not None else Walk()
    g = _Graph(onnx, graph, constants(onnx, graph, outer or {}, walk))
    for node in graph.node:
        for index, name in enumerate(node.input):
            c = g.consts.get(name)
            if c is not None and id(c.proto) in walk.stored:
                role = _RNN_ROLES.get(index, "") if node.op_type in RNN_OPS else ""
                walk.stored[id(c.proto)][2].append(f"{node.op_type} ({role})" if role else node.op_type)
        _node_uses(g, node, walk.uses)
        for attr in node.attribute:
            if attr.type == _GRAPH:
                weight_uses(onnx, attr.g, g.consts, walk)
            elif attr.type == _GRAPHS:
                for sub in attr.graphs:
                    weight_uses(onnx, sub, g.consts, walk)
    return walk
