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
    if class_name == "Embedding":
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
    return tuple(torch_layout(layer.class_name, np.empty(layer.shape, dtype=np.uint8), layer.equation).shape)


def _type_of(class_name: str, shape: tuple[int, ...], vname: str) -> LayerType:
    if class_name in _TYPES:
        return _TYPES[class_name]
    if "embedding" in vname:
        return LayerType.EMBEDDING
    return {2: LayerType.DENSE, 3: LayerType.CONV1D, 4: LayerType.CONV2D}.get(len(shape), LayerType.OTHER)


def _tensors(layers: list[_Layer], origin: str) -> list[WeightTensor]:
    out = []
    for layer in layers:
        def load(layer: _Layer = layer) -> np.ndarray:
            arr = np.ascontiguousarray(torch_layout(layer.class_name, layer.read(), layer.equation))
            arr.flags.writeable = False
            return arr

        out.append(WeightTensor(
            layer_id=layer.layer_id, name=layer.name, longname=layer.name,
            layer_type=_type_of(layer.class_name, layer.shape, layer.name),
            shape=_row_shape(layer), dtype=layer.dtype,
            origin=origin, key=layer.name, load=load,
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
        if hasattr(layer, "layers") and type(layer).__name__ in _CONTAINERS + ("Sequential",):
            yield from _walk_model(layer, counter, name + "/")


def model_tensors(model: Any) -> list[WeightTensor]:
    """Rows of an in-memory Keras 3 model (any backend); the model is only read."""
    from .torch_source import is_torch_tensor, tensor_to_numpy

    layers = []
    for layer_id, name, layer in _walk_model(model, [0], ""):
        cls = type(layer).__name__
        var = getattr(layer, "embeddings" if cls == "Embedding" else "kernel", None) if cls in _TYPES else None
        if var is None:
            continue

        def read(var: Any = var) -> np.ndarray:
            value = var.value if hasattr(var, "value") else var  # the backend's tensor (torch, jax, numpy)
            return np.array(tensor_to_numpy(value) if is_torch_tensor(value) else np.asarray(value))

        layers.append(_Layer(layer_id, name, cls, getattr(layer, "equation", None), tuple(int(s) for s in var.shape),
                             read, str(getattr(var, "dtype", "float32"))))
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


def _keras3_layers(f: Any, config: dict | None, h5: _H5) -> list[_Layer]:
    out: list[_Layer] = []

    def walk(group: Any, layers_cfg: list[dict] | None, sequential: bool, counter: list[int], prefix: str,
             h5prefix: str) -> None:
        if layers_cfg is None:  # no config: the groups in file order, types from rank
            for gname in group.keys():
                ds = _kernel_dataset(group[gname], "")
                lid = counter[0]
                counter[0] += 1
                if ds is not None:
                    path = f"{h5prefix}{gname}/vars/0"
                    cls = _FROM_SNAKE.get(re.sub(r"_\d+$", "", gname), "")
                    out.append(_Layer(lid, prefix + gname, cls, None, tuple(ds.shape),
                                      functools.partial(h5.read, path), str(ds.dtype)))
            return
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
            ds = _kernel_dataset(sub, cls) if cls in _TYPES else None
            if ds is not None:
                path = f"{h5prefix}{gname}/vars/0"
                out.append(_Layer(lid, name, cls, cfg.get("equation"), tuple(ds.shape),
                                  functools.partial(h5.read, path), str(ds.dtype)))

    if "layers" not in f:
        return out
    if config is None:
        walk(f["layers"], None, False, [0], "", "layers/")
    else:
        layers_cfg, sequential = _config_layers(config)
        walk(f["layers"], layers_cfg, sequential, [0], "", "layers/")
    return out


def _legacy_layers(f: Any, h5: _H5) -> list[_Layer]:
    """Keras 2 / legacy-H5 layout: ``layer_names`` and ``weight_names`` attributes give the order.

    A nested model is one group whose weight names run ``<model>/<layer>/kernel``; its layers are
    numbered after it, in the nested config's order, as the in-memory walk numbers them.
    """
    root = f["model_weights"] if "model_weights" in f else f
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
    return _Layer(lid, name, cls, cfg.get("equation"), tuple(ds.shape), functools.partial(h5.read, path), str(ds.dtype))


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
