"""ONNX models (a ``.onnx`` path or an in-memory ``onnx.ModelProto``), read with the ``onnx`` extra.

Weights are found where the graph uses them, not by listing initializers
(:mod:`.onnx_graph` walks the graph, ``If`` / ``Loop`` / ``Scan`` bodies included):
a tensor is a layer's weight when a node that multiplies by it consumes it and
it is constant — a graph initializer or the output of a ``Constant`` node
(exporters such as paddle2onnx keep every weight there), in this graph or an
enclosing one — possibly through ``Identity`` / ``Cast`` / ``Transpose`` /
``Reshape`` / ``DequantizeLinear`` steps. Layouts follow the node:

=============================  ===================================  ===============================
node                           constant input                       row (as a PyTorch module holds it)
=============================  ===================================  ===============================
MatMul, QLinearMatMul,         B, (in, out)                         dense, transposed to (out, in)
MatMulInteger
Gemm                           B, (out, in) if ``transB`` else      dense (out, in)
                               (in, out)
Conv, QLinearConv,             W, (out, in/group, kh, kw) or        conv2d / conv1d as stored
ConvInteger                    (out, in/group, k)
Gather                         data (vocab, dim), indices not       embedding
                               constant
LSTM, GRU, RNN,                W (dirs, gates·hidden, in), R        dense rows per direction and gate,
DynamicQuantizeLSTM            (dirs, gates·hidden, hidden)         named as ``nn.LSTM`` / ``nn.GRU`` /
                                                                    ``nn.RNN`` state-dict keys
=============================  ===================================  ===============================

Quantized weights are dequantized to the matrix the model computes with
(:mod:`.onnx_quant`); their row's ``storage`` says what was stored (``int8-qdq``,
``uint8-qlinear/channel``, ``int8-integer``, ``int8-dynlstm``) and the scales / zero
points are its ``aux``. Integer codes reaching a node without a recognized scale are
listed with the reason ("quantized weights, scheme not recognized: …"), never analyzed
as values; inconsistent quantization metadata fails that layer alone, with a one-line
error naming the tensor, the node and the expected shape.

Rows come in node order (``layer_id`` counts them from 1); a constant used twice
the same way (both branches of an ``If``) is one row, a constant used two ways (a
tied embedding, ``Gather`` and ``MatMul``) is analyzed once and the second use is
marked. The row's name is the weight's own name without ``.weight`` / ``_quantized``
(``fc1``, ``conv2d_0.w_0``) or, when the exporter gave it an anonymous name
(``onnx::MatMul_8``), the consuming node's name (``/encoder/layer.0/query/MatMul``
→ ``encoder.layer.0.query``). RNN ops give ``weight_ih_l<k>[_reverse].<gate>`` and
``weight_hh_l<k>[_reverse].<gate>`` rows (long name ``<node path>.<that>``, gates
``i f g o`` / ``r z n`` in PyTorch's order, ``k`` counting the op's nodes under one
path), exactly the rows the exported module's state dict gives (``extra=True``, as
:mod:`.splits`). Every other constant of two or more dimensions is listed as skipped
with what uses it (the census). External data files are read one tensor at a time
and only from the model's own folder (plain relative names; nothing is fetched).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import LayerType
from ..errors import SourceError
from .base import Source, WeightTensor, layer_type_from_shape, natural_key
from .onnx_graph import Chain, Use, Walk, dtype_name, materialize, stored_chain, weight_uses

if TYPE_CHECKING:
    import numpy as np

_ANONYMOUS = re.compile(r"^(onnx::|/)|_output_\d+$|^(val|_val|const|Constant)_?\d*$")
# PyTorch's gate names in its order, and where each sits in ONNX's order (LSTM i o f c, GRU z r h)
_TORCH_GATES = {"LSTM": ("ifgo", (0, 2, 3, 1)), "GRU": ("rzn", (1, 0, 2)), "RNN": ("", (0,))}


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


def _loader(onnx: Any, chain: Chain, folder: Path | None, origin: str, where: str, transpose: bool = False,
            piece: tuple[int, bool, int, int] | None = None) -> Callable[[], np.ndarray]:
    """``load()`` for one row: the chain's value, transposed, or one gate of one direction of an RNN weight."""
    import numpy as np

    def load() -> np.ndarray:
        arr = materialize(onnx, chain, folder, origin, where)
        if piece is not None:
            d, in_major, start, stop = piece
            arr = arr[d].T if in_major else arr[d]
            arr = arr[start:stop]
        if transpose:
            arr = arr.T
        arr = np.ascontiguousarray(arr)
        arr.flags.writeable = False
        return arr

    return load


def _reference_rows(onnx: Any, graph: Any, origin: str, folder: Path | None) -> list[WeightTensor]:
    """The reference's ONNX rows: 2-D and 4-D initializers, in file order, as stored."""
    out = []
    for index, init in enumerate(graph.initializer):
        shape = tuple(int(d) for d in init.dims)
        if len(shape) not in (2, 4):
            continue
        out.append(WeightTensor(
            layer_id=index, name=init.name, longname=init.name,
            layer_type=LayerType.DENSE if len(shape) == 2 else LayerType.CONV2D, shape=shape,
            dtype=dtype_name(onnx, init), origin=origin, key=init.name,
            load=_loader(onnx, stored_chain(onnx, init, init.name), folder, origin, f"initializer {init.name!r}"),
        ))
    return out


def _scope_path(node: Any) -> list[str] | None:
    """The module path torch.onnx.export's dynamo exporter records (``namespace``: ``: M/fc: Linear/linear: aten…``)."""
    for prop in getattr(node, "metadata_props", ()):
        if prop.key == "namespace" and len(prop.value) < 4096:
            names = [seg.split(":", 1)[0].strip() for seg in prop.value.split("/")]
            if len(names) > 2:
                return [n for n in names[1:-1] if n]
    return None


def _node_path(node: Any) -> list[str]:
    """The module path of a node: the exporter's scope, else its ``/a/b/Op`` name less the op."""
    scope = _scope_path(node)
    if scope:
        return scope
    parts = [p for p in node.name.strip("/").split("/") if p]
    base = node.op_type.removeprefix("QLinear").removeprefix("DynamicQuantize").removesuffix("Integer")
    if len(parts) > 1 and parts[-1].split("_")[0] in (node.op_type, base):
        parts = parts[:-1]
    return parts


def _row_name(tensor_name: str, node: Any) -> str:
    if tensor_name and not _ANONYMOUS.search(tensor_name):
        return tensor_name.removesuffix("_quantized").removesuffix(".weight")
    return ".".join(_node_path(node)) or node.name or tensor_name or node.op_type


def _rnn_rows(onnx: Any, uses: list[Use], path: str, layer: int, origin: str, folder: Path | None,
              first_id: int) -> list[WeightTensor]:
    """One row per direction, matrix (W, then R) and gate of an RNN op, named as the PyTorch module's keys."""
    out: list[WeightTensor] = []
    dirs = max(use.rnn["dirs"] for use in uses if use.rnn is not None)
    for d in range(dirs):
        for use in uses:
            info, chain = use.rnn, use.chain
            assert info is not None
            torch_gates, onnx_gates = _TORCH_GATES[info["op"]]
            hidden, cols = info["hidden"], chain.shape[1] if info["in_major"] else chain.shape[2]
            param = f"weight_{info['param']}_l{layer}" + ("_reverse" if d == 1 or info["reverse"] else "")
            for t, g in zip(torch_gates or [""], onnx_gates):
                name = f"{param}.{t}" if t else param
                where = f"{name} ({info['op']} {use.node.name or info['op']!r} input {chain.name!r})"
                out.append(WeightTensor(
                    layer_id=first_id + len(out), name=name, longname=f"{path}.{name}" if path else name,
                    layer_type=LayerType.DENSE, shape=(hidden, cols), dtype=chain.dtype, origin=origin,
                    key=chain.name, extra=True, storage=chain.storage, aux=chain.aux, note=use.note,
                    load=_loader(onnx, chain, folder, origin, where,
                                 piece=(d, info["in_major"], g * hidden, (g + 1) * hidden)),
                ))
    return out


def _census(walk: Walk, rows: list[WeightTensor], origin: str, first_id: int) -> list[WeightTensor]:
    """A skipped row for every stored constant of two or more dimensions that no row uses or consumes."""
    import numpy as np

    used = {r.key for r in rows} | {a for r in rows for a in r.aux}
    out: list[WeightTensor] = []
    for proto, name, ops in walk.stored.values():
        shape = tuple(int(d) for d in proto.dims)
        if len(shape) < 2 or name in used:
            continue
        by = ", ".join(sorted(set(ops))) or "no node"
        dt = dtype_name(sys.modules["onnx"], proto)
        kind = np.dtype(dt).kind if not dt.startswith("onnx:") else "f"
        reason = (f"quantized weights, scheme not recognized: {dt} tensor used by {by}"
                  if kind in "iu" and np.dtype(dt).itemsize == 1 else f"not a layer weight: used by {by}")

        def refuse(name: str = name, reason: str = reason) -> Any:
            raise SourceError(f"{origin}: {name!r} is not analyzed ({reason}).")

        out.append(WeightTensor(
            layer_id=first_id + len(out), name=name, longname=name, layer_type=layer_type_from_shape(name, shape),
            shape=shape, dtype=dt, origin=origin, key=name, load=refuse, note=reason,
        ))
    return out


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
        walk = weight_uses(onnx, model.graph)
    except RecursionError:
        raise SourceError(f"{origin}: ONNX subgraphs nested too deeply.") from None
    except Exception as exc:  # a malformed proto that parsed
        raise SourceError(f"{origin}: malformed ONNX graph ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    uses = walk.uses
    out: list[WeightTensor] = []
    folder = path.parent if path is not None else None
    if reference_ids:
        out = _reference_rows(onnx, model.graph, origin, folder)
        inits = {id(init) for init in model.graph.initializer}
        # Constant-node weights, which the reference misses; no RNN rows (the reference has none)
        uses = [u for u in uses if id(u.chain.proto) not in inits and u.rnn is None]
    next_id = len(model.graph.initializer) if reference_ids else 1
    first: dict[int, str] = {}
    seen: set[tuple] = set()
    rnn_layers: dict[str, list[int]] = {}  # node path / op → its RNN nodes: the layer index k
    group: list[Use] = []  # the W / R uses of one RNN node
    for i, use in enumerate(uses):
        chain, node = use.chain, use.node
        sig = (*chain.signature(), use.ltype, use.transpose, None if use.rnn is None else use.rnn["param"])
        if sig in seen:  # the same weight used the same way again (both branches of an If): one row
            continue
        seen.add(sig)
        if use.rnn is not None:
            group.append(use)
            if i + 1 < len(uses) and uses[i + 1].node is node and uses[i + 1].rnn is not None:
                continue  # W, then R of the same node: rows interleave per direction as the module's
            mod = ".".join(_node_path(node)) if node.name or _scope_path(node) else use.rnn["op"].lower()
            nodes = rnn_layers.setdefault(f"{mod}/{use.rnn['op']}", [])
            if id(node) not in nodes:
                nodes.append(id(node))
            rows = _rnn_rows(onnx, group, mod, nodes.index(id(node)), origin, folder, next_id)
            group = []
            out.extend(rows)
            next_id += len(rows)
            first.setdefault(id(chain.proto), rows[0].name if rows else chain.name)
            continue
        name = _row_name(chain.name, node)
        shape = chain.shape[::-1] if use.transpose else chain.shape
        note = use.note
        if not note and id(chain.proto) in first:  # W and Wᵀ share a spectrum: one analysis per stored tensor
            note = f"tied: same tensor as {first[id(chain.proto)]}"
        elif not note:
            first[id(chain.proto)] = name
        where = f"weight {chain.name!r} of node {node.name or node.op_type!r}"
        out.append(WeightTensor(
            layer_id=next_id, name=name, longname=name, layer_type=use.ltype, shape=tuple(shape),
            dtype=chain.dtype, origin=origin, key=chain.name, storage=chain.storage, aux=chain.aux, note=note,
            load=_loader(onnx, chain, folder, origin, where, use.transpose),
        ))
        next_id += 1
    if not reference_ids:
        out.extend(_census(walk, out, origin, next_id))
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


def open_file(path: Path, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """The rows of an ONNX file (``reference_ids``: numbered as the reference numbers them)."""
    from .safetensors_header import require_regular_file

    require_regular_file(path)
    return model_source(load_model(path), str(path), path, extra_rows, reference_ids)


def _param_of(longname: str) -> str:
    """The parameter a gate row comes from: ``lstm.weight_ih_l0.i`` → ``lstm.weight_ih_l0`` (key order, as state dicts)."""
    head, _, last = longname.rpartition(".")
    return head if head and len(last) == 1 else longname


def model_source(model: Any, description: str, path: Path | None, extra_rows: bool = True,
                 reference_ids: bool = False) -> Source:
    """A ModelProto's rows; ``extra_rows=False`` leaves out the RNN gate rows the reference does not have.

    htsr's own ids follow the state-dict rule, so that one model gives one table in every format
    (``docs/formats.md``): the layer weights first, then the gate rows of RNN ops, then the tensors
    listed as skipped, numbered 1…n in that order. ``reference_ids`` keeps the reference's numbering.
    """
    import dataclasses

    rows = [t for t in onnx_tensors(model, path, reference_ids) if extra_rows or not t.extra]
    if not reference_ids:
        gates = sorted((t for t in rows if t.extra and not t.note), key=lambda t: natural_key(_param_of(t.longname)))
        ordered = [t for t in rows if not t.extra and not t.note] + gates + [t for t in rows if t.note]
        rows = [dataclasses.replace(t, layer_id=i) for i, t in enumerate(ordered, start=1)]
    return Source(description, tuple(rows), "onnx")


def open_model(model: Any, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """An ``onnx.ModelProto`` in memory (:data:`htsr.sources.registry.OBJECT_READERS`)."""
    return model_source(model, f"ONNX model {model.graph.name!r}", None, extra_rows, reference_ids)
