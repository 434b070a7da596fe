"""Keras 3 models: in memory, ``.keras`` archives and legacy ``.h5`` files (``keras`` extra: h5py only).

Files are read with ``h5py`` alone — no TensorFlow, no Keras, nothing from the
archive is deserialized but JSON. Kernels are turned into PyTorch's layout so
every source of the same network gives the same rows:

===============  ===================================  ========================
layer            Keras kernel                         row
===============  ===================================  ========================
``Dense``        (in, out)                            dense (out, in)
``EinsumDense``  the equation's kernel axes           dense (out, in): output
                                                      axes × contracted axes
``Conv1D``       (k, in, out)                         conv1d (out, in, k)
``Conv2D``       (kh, kw, in, out)                    conv2d (out, in, kh, kw)
``Embedding``    (vocab, dim)                         embedding as stored
===============  ===================================  ========================

``layer_id`` is the layer's position in ``model.layers`` (a functional model's
``InputLayer`` is layer 0; nested models are walked in place, their layers
numbered after them); ``name`` is the Keras layer name. Where a file carries
no model config (a bare ``.weights.h5``), layers take the names of their
groups (in the file's order, numbered from 0) and their class from the group
name (``einsum_dense_1`` → ``EinsumDense``, first kernel axis contracted).

Archive layouts read: ``.keras`` = zip of ``config.json`` + ``model.weights.h5``
with ``layers/<snake_case class name, numbered>/vars/<i>`` groups, the
numbering following the config's layer order (Keras' own naming, reproduced
here from the config); legacy ``.h5`` = ``model_weights`` with the ordered
``layer_names`` / ``weight_names`` attributes and a ``model_config`` attribute.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import SourceError
from .base import Source, WeightTensor

_TYPES = {"Dense": LayerType.DENSE, "EinsumDense": LayerType.DENSE, "Conv1D": LayerType.CONV1D,
          "Conv2D": LayerType.CONV2D, "Embedding": LayerType.EMBEDDING}
_CONTAINERS = ("Sequential", "Functional", "Model")
_FROM_SNAKE = {"dense": "Dense", "einsum_dense": "EinsumDense", "conv1d": "Conv1D", "conv2d": "Conv2D",
               "embedding": "Embedding"}
_MAX_JSON = 64 << 20


@dataclass
class _Layer:
    layer_id: int
    name: str
    class_name: str
    equation: str | None
    shape: tuple[int, ...]  # the Keras kernel's shape
    read: Callable[[], np.ndarray]
    dtype: str = "float32"
    h5path: str = ""  # the dataset read (files), for the census
    extra: bool = False  # an RNN gate matrix (numbered after the layers, as sources/splits.py numbers them)
    note: str = ""  # non-empty: listed, not analyzed (a variable that is no layer's kernel)


def is_keras_model(obj: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, getattr(keras, "Model", ()))


def _einsum_perm(equation: str, ndim: int) -> tuple[list[int], list[int]] | None:
    """(output axes, contracted axes) of an EinsumDense kernel, from ``ab,bc->ac``-style equations."""
    m = re.fullmatch(r"\s*([a-z.]+)\s*,\s*([a-z]+)\s*->\s*([a-z.]+)\s*", equation or "")
    if not m or len(m.group(2)) != ndim:
        return None
    inp, ker, _ = m.groups()
    contracted = [i for i, c in enumerate(ker) if c in inp]
    outputs = [i for i, c in enumerate(ker) if c not in inp]
    return (outputs, contracted) if contracted and outputs else None


def torch_layout(class_name: str, kernel: np.ndarray, equation: str | None = None) -> np.ndarray:
    """A Keras kernel in PyTorch's layout (see the module table); unknown ranks are left as stored."""
    if class_name in ("Embedding", _GATE):
        return kernel
    if kernel.ndim == 2 and class_name in ("Dense", "EinsumDense", ""):
        if class_name == "EinsumDense":
            split = _einsum_perm(equation or "", 2)
            if split is not None:
                return kernel.transpose(split[0] + split[1])
        return kernel.T
    if class_name == "EinsumDense" or (class_name == "Dense" and kernel.ndim > 2):
        split = _einsum_perm(equation or "", kernel.ndim)
        outputs, contracted = split if split is not None else (list(range(1, kernel.ndim)), [0])
        t = kernel.transpose(outputs + contracted)
        rows = int(np.prod([kernel.shape[i] for i in outputs]))
        return t.reshape(rows, -1)
    if kernel.ndim == 3:
        return kernel.transpose(2, 1, 0)
    if kernel.ndim == 4:
        return kernel.transpose(3, 2, 0, 1)
    return kernel


def _row_shape(layer: _Layer) -> tuple[int, ...]:
    if layer.class_name == _GATE or layer.note:
        return layer.shape
    return tuple(torch_layout(layer.class_name, np.empty(layer.shape, dtype=np.uint8), layer.equation).shape)


def _type_of(class_name: str, shape: tuple[int, ...], vname: str) -> LayerType:
    if class_name in _TYPES:
        return _TYPES[class_name]
    if "embedding" in vname:
        return LayerType.EMBEDDING
    return {2: LayerType.DENSE, 3: LayerType.CONV1D, 4: LayerType.CONV2D}.get(len(shape), LayerType.OTHER)


_RNN_GATES = {"LSTM": "ifco", "GRU": "zrh", "SimpleRNN": ""}  # Keras' gate order along the kernel's columns
_RNN_SNAKE = {"lstm_cell": "LSTM", "gru_cell": "GRU", "simple_rnn_cell": "SimpleRNN",
              "lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}
_GATE = "Gate"  # class name of a gate row: read already in PyTorch's (out, in) layout


def _gate(read: Callable[[], np.ndarray], start: int, stop: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return np.asarray(read()).T[start:stop]

    return load


def rnn_layers(name: str, cls: str, kernel: tuple[tuple[int, ...], Callable[[], np.ndarray], str],
               recurrent: tuple[tuple[int, ...], Callable[[], np.ndarray], str] | None, dtype: str) -> list[_Layer]:
    """The gate matrices of a Keras LSTM / GRU / SimpleRNN, as PyTorch's (out, in) rows.

    Keras stores ``kernel`` (in, gates·H) and ``recurrent_kernel`` (H, gates·H), the
    gates side by side along the columns — LSTM (i, f, c, o), GRU (z, r, h). Each
    gate is one row ``<layer>/kernel.<gate>`` / ``<layer>/recurrent_kernel.<gate>``
    of shape (H, in) / (H, H), ``extra`` like the gates of a PyTorch RNN.
    """
    out = []
    parts = [("kernel", kernel)] + ([("recurrent_kernel", recurrent)] if recurrent is not None else [])
    hidden = recurrent[0][0] if recurrent is not None and len(recurrent[0]) == 2 else None
    gates = _RNN_GATES.get(cls, "")
    for label, (shape, read, path) in parts:
        if len(shape) != 2:
            continue
        if gates and hidden and shape[1] == len(gates) * hidden:
            for i, g in enumerate(gates):
                out.append(_Layer(0, f"{name}/{label}.{g}", _GATE, None, (hidden, shape[0]),
                                  _gate(read, i * hidden, (i + 1) * hidden), dtype, path, extra=True))
        else:
            out.append(_Layer(0, f"{name}/{label}", _GATE, None, (shape[1], shape[0]), _gate(read, 0, shape[1]),
                              dtype, path, extra=True))
    return out


def _census(f: Any, h5: _H5, prefix: str, layers: list[_Layer]) -> list[_Layer]:
    """Every dataset of two or more dimensions that no row reads, as a listed (not analyzed) row."""
    used = {layer.h5path for layer in layers}
    found: list[tuple[str, Any]] = []
    f.visititems(lambda n, o: found.append((n, o)) if getattr(o, "ndim", 0) >= 2 else None)
    out = []
    for name, ds in found:
        path = f"{prefix}{name}"
        if path in used:
            continue
        note = "not a layer weight: a variable htsr does not read as a matrix (bias, state or an unknown layer's)"
        out.append(_Layer(0, name, "", None, tuple(ds.shape), functools.partial(h5.read, path), str(ds.dtype),
                          path, note=note))
    return out


def _tensors(layers: list[_Layer], origin: str) -> list[WeightTensor]:
    out = []
    next_id = max((layer.layer_id for layer in layers if not (layer.extra or layer.note)), default=-1) + 1
    for layer in layers:
        if layer.extra or layer.note:
            layer.layer_id, next_id = next_id, next_id + 1
        def load(layer: _Layer = layer) -> np.ndarray:
            raw = layer.read()
            arr = np.ascontiguousarray(raw if layer.note else torch_layout(layer.class_name, raw, layer.equation))
            arr.flags.writeable = False
            return arr

        out.append(WeightTensor(
            layer_id=layer.layer_id, name=layer.name, longname=layer.name,
            layer_type=LayerType.DENSE if layer.class_name == _GATE else _type_of(layer.class_name, layer.shape, layer.name),
            shape=_row_shape(layer), dtype=layer.dtype,
            origin=origin, key=layer.h5path or layer.name, load=load, extra=layer.extra, note=layer.note,
        ))
    if not out:
        raise SourceError(f"{origin}: no Dense, EinsumDense, Conv1D, Conv2D or Embedding layer with weights found.")
    return out


# ---------------------------------------------------------------- in memory


def _walk_model(model: Any, counter: list[int], prefix: str) -> Iterator[tuple[int, str, Any]]:
    for layer in model.layers:
        layer_id = counter[0]
        counter[0] += 1
        name = f"{prefix}{layer.name}"
        yield layer_id, name, layer
        cls = type(layer).__name__
        if hasattr(layer, "layers") and cls in (*_CONTAINERS, "Sequential"):
            yield from _walk_model(layer, counter, name + "/")
        elif cls not in _TYPES and cls not in _RNN_GATES and getattr(layer, "_layers", None):
            yield from _walk_sublayers(layer, counter, name + "/")


def _walk_sublayers(layer: Any, counter: list[int], prefix: str) -> Iterator[tuple[int, str, Any]]:
    """The layers a custom (subclassed) layer tracks, numbered after it, as in a nested model."""
    class _Holder:
        layers = [x for x in layer._layers if hasattr(x, "name")]  # noqa: RUF012 - the class itself is the per-call stand-in model

    yield from _walk_model(_Holder, counter, prefix)


def model_tensors(model: Any) -> list[WeightTensor]:
    """Rows of an in-memory Keras 3 model (any backend); the model is only read."""
    from .torch_source import is_torch_tensor, tensor_to_numpy

    layers = []
    for layer_id, name, layer in _walk_model(model, [0], ""):
        cls = type(layer).__name__

        def read(var: Any) -> np.ndarray:
            value = var.value if hasattr(var, "value") else var  # the backend's tensor (torch, jax, numpy)
            return np.array(tensor_to_numpy(value) if is_torch_tensor(value) else np.asarray(value))

        cell: Any = getattr(layer, "cell", None)
        if cls in _RNN_GATES and getattr(cell, "kernel", None) is not None:
            pair = [(tuple(int(s) for s in v.shape), functools.partial(read, v), "")
                    for v in (cell.kernel, getattr(cell, "recurrent_kernel", None)) if v is not None]
            layers.extend(rnn_layers(name, cls, pair[0], pair[1] if len(pair) > 1 else None,
                                     str(getattr(cell.kernel, "dtype", "float32"))))
            continue
        var = getattr(layer, "embeddings" if cls == "Embedding" else "kernel", None) if cls in _TYPES else None
        if var is None:
            continue

        layers.append(_Layer(layer_id, name, cls, getattr(layer, "equation", None), tuple(int(s) for s in var.shape),
                             functools.partial(read, var), str(getattr(var, "dtype", "float32"))))
    return _tensors(layers, f"<keras {type(model).__name__} {model.name!r}>")


# ---------------------------------------------------------------- files


def _snake(name: str) -> str:
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _config_layers(config: dict) -> tuple[list[dict], bool]:
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    layers = inner.get("layers", []) if isinstance(inner, dict) else []
    if not isinstance(layers, list):
        layers = []
    sequential = config.get("class_name") == "Sequential"
    return [lay for lay in layers if isinstance(lay, dict)], sequential


def _h5py(origin: str) -> Any:
    try:
        import h5py
    except ImportError:
        raise SourceError(f"{origin}: reading Keras files needs h5py; install it with `pip install 'htsr[keras]'`.") from None
    return h5py


class _H5:
    """Opens the weights file for each read (a path, or a member of a .keras zip)."""

    def __init__(self, path: Path, member: str | None) -> None:
        self.path, self.member = path, member

    def read(self, dataset: str) -> np.ndarray:
        h5py = _h5py(str(self.path))
        try:
            if self.member is None:
                with h5py.File(self.path, "r") as f:
                    return np.array(f[dataset])
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh, h5py.File(fh, "r") as f:
                return np.array(f[dataset])
        except Exception as exc:
            raise SourceError(f"{self.path}: cannot read {dataset!r} ({exc.__class__.__name__}: {str(exc)[:150]}).") from None


def _kernel_dataset(group: Any, class_name: str) -> Any:
    """The kernel (or embeddings) dataset of a Keras 3 ``vars`` group: the first variable."""
    vars_ = group.get("vars") if hasattr(group, "get") else None
    if vars_ is None or "0" not in vars_:
        return None
    ds = vars_["0"]
    return ds if getattr(ds, "ndim", 0) >= 2 else None


def _vars(group: Any) -> list[Any]:
    """The datasets ``vars/0 … vars/n`` of a Keras 3 layer group, in index order."""
    vars_ = group.get("vars") if hasattr(group, "get") else None
    if vars_ is None or not hasattr(vars_, "keys"):
        return []
    keys = sorted((k for k in vars_ if k.isdigit()), key=int)
    return [vars_[k] for k in keys if hasattr(vars_[k], "shape")]


def _rnn_of(group: Any, cls: str, name: str, h5path: str, h5: _H5) -> list[_Layer]:
    """Gate rows of an RNN layer group (its ``cell/vars``: kernel, recurrent kernel, bias)."""
    cell = group.get("cell") if hasattr(group, "get") else None
    found = _vars(cell) if cell is not None else []
    if len(found) < 2:
        return []
    paths = [f"{h5path}cell/vars/{i}" for i in range(2)]
    kernel, recurrent = ((tuple(ds.shape), functools.partial(h5.read, p), p) for ds, p in zip(found, paths))
    return rnn_layers(name, cls, kernel, recurrent, str(found[0].dtype))


def _class_of(group: Any, gname: str) -> str:
    """A layer group's class, from the name Keras gave its variables (``vars`` attribute ``name``) or the group's."""
    vars_ = group.get("vars") if hasattr(group, "get") else None
    label = vars_.attrs.get("name", "") if vars_ is not None and hasattr(vars_, "attrs") else ""
    label = label.decode() if isinstance(label, bytes) else str(label)
    for candidate in (label, gname):
        base = re.sub(r"_\d+$", "", candidate)
        if base in _FROM_SNAKE:
            return _FROM_SNAKE[base]
        if base in _RNN_SNAKE:
            return _RNN_SNAKE[base]
    return ""


def _keras3_layers(f: Any, config: dict | None, h5: _H5) -> list[_Layer]:
    out: list[_Layer] = []

    def bare(group: Any, counter: list[int], prefix: str, h5prefix: str) -> None:
        """No config (a ``.weights.h5`` of a subclassed or functional model): every group holding ``vars``.

        Groups nest as the model's attributes do (``block1/layers/conv2d/vars/0``); each group
        with variables is a layer, numbered in the file's order (pre-order), named by its path.
        """
        for gname in group:
            sub = group[gname]
            if gname == "vars" or not hasattr(sub, "keys"):
                continue
            name, h5path = prefix + gname, f"{h5prefix}{gname}/"
            if "vars" in sub:
                lid = counter[0]
                counter[0] += 1
                cls = _class_of(sub, gname)
                found = _vars(sub)
                if cls in _RNN_GATES:
                    out.extend(_rnn_of(sub, cls, name, h5path, h5))
                    continue
                if found and found[0].ndim >= 2:
                    out.append(_Layer(lid, name, cls, None, tuple(found[0].shape),
                                      functools.partial(h5.read, h5path + "vars/0"), str(found[0].dtype), h5path + "vars/0"))
            bare(sub, counter, name + "/", h5path)

    def walk(group: Any, layers_cfg: list[dict], sequential: bool, counter: list[int], prefix: str,
             h5prefix: str) -> None:
        used: dict[str, int] = {}
        for lay in layers_cfg:
            cls = str(lay.get("class_name", ""))
            if sequential and cls == "InputLayer":
                continue
            gname = _snake(cls)
            if gname in used:
                used[gname] += 1
                gname = f"{gname}_{used[gname]}"
            else:
                used[gname] = 0
            lid = counter[0]
            counter[0] += 1
            cfg = lay.get("config", {}) if isinstance(lay.get("config"), dict) else {}
            name = prefix + str(cfg.get("name", lay.get("name", gname)))
            if gname not in group:
                continue
            sub = group[gname]
            if cls in _CONTAINERS and "layers" in sub:
                inner, seq = _config_layers(lay)
                walk(sub["layers"], inner, seq, counter, name + "/", f"{h5prefix}{gname}/layers/")
                continue
            if cls in _RNN_GATES:
                out.extend(_rnn_of(sub, cls, name, f"{h5prefix}{gname}/", h5))
                continue
            ds = _kernel_dataset(sub, cls) if cls in _TYPES else None
            if ds is not None:
                path = f"{h5prefix}{gname}/vars/0"
                out.append(_Layer(lid, name, cls, cfg.get("equation"), tuple(ds.shape),
                                  functools.partial(h5.read, path), str(ds.dtype), path))

    if config is None:
        if "layers" in f and not any(k != "layers" and k != "vars" for k in f):
            bare(f["layers"], [0], "", "layers/")  # a functional or Sequential model: layers/<name>/vars
        else:
            bare(f, [0], "", "")  # a subclassed model: groups named after its attributes
    elif "layers" in f:
        layers_cfg, sequential = _config_layers(config)
        walk(f["layers"], layers_cfg, sequential, [0], "", "layers/")
    return out + _census(f, h5, "", out)


def _legacy_layers(f: Any, h5: _H5) -> list[_Layer]:
    """Keras 2 / legacy-H5 layout: ``layer_names`` and ``weight_names`` attributes give the order.

    A nested model is one group whose weight names run ``<model>/<layer>/kernel``; its layers are
    numbered after it, in the nested config's order, as the in-memory walk numbers them.
    """
    root = f.get("model_weights", f)
    top: dict[str, dict] = {}
    raw = f.attrs.get("model_config")
    if raw is not None:
        try:
            config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
            for lay in _config_layers(config)[0]:
                top[_cfg_name(lay)] = lay
        except (ValueError, AttributeError):
            raise SourceError(f"{h5.path}: the model_config attribute is not valid JSON.") from None
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
    out: list[_Layer] = []
    counter = 0
    for name in names:
        lid = counter
        counter += 1
        if name not in root:
            continue
        weight_names = [w.decode() if isinstance(w, bytes) else str(w) for w in root[name].attrs.get("weight_names", [])]
        kernels = {}  # sub-layer name → dataset path, in weight order
        for wname in weight_names:
            parts = wname.split("/")
            base = parts[-1].split(":")[0]
            sub = parts[-2] if len(parts) >= 2 else name
            if base in ("kernel", "embeddings") and wname in root[name] and sub not in kernels:
                kernels[sub] = (wname, base)
        lay = top.get(name, {})
        cls = str(lay.get("class_name", ""))
        if cls in _CONTAINERS:
            inner, sequential = _config_layers(lay)
            children = [c for c in inner if not (sequential and c.get("class_name") == "InputLayer")]
            for child in children:
                cid = counter
                counter += 1
                cname = _cfg_name(child)
                if cname in kernels:
                    out.append(_legacy_layer(root, h5, name, kernels[cname], cid, f"{name}/{cname}", child))
            continue
        if kernels:  # a plain layer: its first kernel
            out.append(_legacy_layer(root, h5, name, next(iter(kernels.values())), lid, name, lay))
    return out


def _cfg_name(lay: dict) -> str:
    cfg = lay.get("config", {}) if isinstance(lay.get("config"), dict) else {}
    return str(cfg.get("name", lay.get("name", "")))


def _legacy_layer(root: Any, h5: _H5, group: str, found: tuple[str, str], lid: int, name: str, lay: dict) -> _Layer:
    wname, base = found
    ds = root[group][wname]
    cfg = lay.get("config", {}) if isinstance(lay.get("config"), dict) else {}
    cls = str(lay.get("class_name", "")) or ("Embedding" if base == "embeddings" else "")
    path = f"{root.name.strip('/')}/{group}/{wname}".lstrip("/")
    return _Layer(lid, name, cls, cfg.get("equation"), tuple(ds.shape), functools.partial(h5.read, path), str(ds.dtype),
                  path)


def keras_tensors(path: Path) -> list[WeightTensor]:
    """Rows of a ``.keras`` archive, a ``.weights.h5`` or a legacy ``.h5`` Keras file."""
    h5py = _h5py(str(path))
    config = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if "model.weights.h5" not in names:
                    raise SourceError(f"{path}: a .keras archive without model.weights.h5.")
                if "config.json" in names and zf.getinfo("config.json").file_size <= _MAX_JSON:
                    config = json.loads(zf.read("config.json").decode("utf-8"))
            h5 = _H5(path, "model.weights.h5")
            with zipfile.ZipFile(path) as zf, zf.open("model.weights.h5") as fh, h5py.File(fh, "r") as f:
                layers = _keras3_layers(f, config if isinstance(config, dict) else None, h5)
        else:
            h5 = _H5(path, None)
            with h5py.File(path, "r") as f:
                layers = _legacy_layers(f, h5) if ("model_weights" in f or "layer_names" in f.attrs) \
                    else _keras3_layers(f, None, h5)
    except SourceError:
        raise
    except Exception as exc:  # not HDF5, truncated, bad JSON, odd attributes …
        raise SourceError(f"{path}: not a readable Keras file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    return _tensors(layers, str(path))


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def sniff_hdf5(path: Path, head: bytes) -> bool:
    """HDF5's signature at the start of the file (Keras ``.h5`` / ``.weights.h5``)."""
    return head[:8] == _HDF5_MAGIC


def sniff_archive(path: Path, head: bytes) -> bool:
    """A ``.keras`` archive: a zip holding ``model.weights.h5``."""
    if head[:4] != b"PK\x03\x04":
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return "model.weights.h5" in zf.namelist()
    except Exception:
        return False


def open_file(path: Path, extra_rows: bool = True) -> Source:
    return Source(str(path), tuple(keras_tensors(path)), "keras")


def open_model(model: Any, extra_rows: bool = True, reference_ids: bool = False) -> Source:
    """A Keras model in memory (:data:`htsr.sources.registry.OBJECT_READERS`)."""
    return Source(f"{type(model).__name__} {model.name!r} (Keras model)", tuple(model_tensors(model)), "keras")
