"""Weights the reference skips, split into the matrices a layer really multiplies by.

* ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: ``weight_ih_l<k>[_reverse]`` and
  ``weight_hh_l<k>[_reverse]`` stack the gates along the rows — LSTM (i, f, g,
  o), GRU (r, z, n), RNN one matrix; LSTM's ``weight_hr_l<k>`` (projection) is
  one matrix.
* ``nn.MultiheadAttention``: ``in_proj_weight`` stacks (q, k, v); separate
  ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` (different key and
  value sizes) are taken as they are. ``out_proj`` is an ``nn.Linear`` and is
  already a row of its own.

The same weights in a key-value source (a state dict, safetensors, a
TorchScript or pickled module read from a file) are found by their keys:
``<module>.weight_ih_l<k>[_reverse]`` … and the cells' ``weight_ih`` /
``weight_hh`` (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``), and
``<module>.in_proj_weight``; with no class to ask, the kind of an RNN is read
from the shapes (:func:`gate_letters`: ``weight_hh`` is ``(gates·H, H)``, or
``(gates·H, P)`` with LSTM's projection ``weight_hr`` of shape ``(P, H)``).

Each piece is a dense row named ``<param>.<gate>`` (``weight_ih_l0.f``,
``in_proj.q``), long name ``<module path>.<param>.<gate>``, with ``extra=True``.
Rows are numbered after the model's last module, so the reference's ids of
the ordinary rows do not move; the compat ``WeightWatcher`` leaves them out
(the reference does not analyze these weights).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

_RNN_PARAM = re.compile(r"^weight_(ih|hh|hr)(_l\d+(_reverse)?)?$")
_GATES = {"lstm": "ifgo", "gru": "rzn"}
# a split weight found by its key: (module prefix, parameter name)
_KEYED = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<param>weight_(?:ih|hh|hr)(?:_l\d+(?:_reverse)?)?|in_proj_weight)$")
_KEYED_BIAS = re.compile(r"^(?:.*\.)?(?:bias_(?:ih|hh)(?:_l\d+(?:_reverse)?)?|in_proj_bias)$")


def rnn_kind(type_name: str) -> str | None:
    """'lstm', 'gru' or 'rnn' from a class name (``torch.nn.modules.rnn.LSTM`` …), None otherwise."""
    last = type_name.rsplit(".", 1)[-1].lower().removesuffix("cell")
    if last in ("lstm", "gru", "rnn"):
        return last
    return None


def is_attention(type_name: str) -> bool:
    return type_name.rsplit(".", 1)[-1] == "MultiheadAttention"


Piece = tuple[str, tuple[int, ...], Callable[[], np.ndarray]]


def _rows(load: Callable[..., np.ndarray], start: int, stop: int) -> Callable[[], np.ndarray]:
    def piece() -> np.ndarray:
        arr = np.asarray(load())[start:stop]
        out = np.ascontiguousarray(arr)
        out.flags.writeable = False
        return out

    return piece


def _gate_pieces(pname: str, shape: tuple[int, ...], load: Callable[..., np.ndarray], gates: str | None) -> Iterator[Piece]:
    """One row per gate stacked along the rows of ``pname`` (``gates`` = 'ifgo' …), or the weight whole."""
    if gates and shape[0] % len(gates) == 0:
        h = shape[0] // len(gates)
        for i, g in enumerate(gates):
            yield f"{pname}.{g}", (h, shape[1]), _rows(load, i * h, (i + 1) * h)
    else:
        yield pname, shape, _rows(load, 0, shape[0])


def split_pieces(type_name: str,
                 params: Mapping[str, tuple[tuple[int, ...], Callable[..., np.ndarray]]]) -> Iterator[Piece]:
    """(name, shape, load) of every extra row of one module (RNN, RNN cell, attention), in parameter order.

    ``params`` maps the module's own parameter names to (shape, load).
    """
    kind = rnn_kind(type_name)
    if kind is not None:
        for pname, (shape, load) in params.items():
            if not _RNN_PARAM.match(pname) or len(shape) != 2:
                continue
            yield from _gate_pieces(pname, shape, load, _GATES.get(kind, "") if "_hr_" not in pname else "")
    elif is_attention(type_name):
        if "in_proj_weight" in params and len(params["in_proj_weight"][0]) == 2:
            shape, load = params["in_proj_weight"]
            if shape[0] % 3 == 0:
                e = shape[0] // 3
                for i, g in enumerate("qkv"):
                    yield f"in_proj.{g}", (e, shape[1]), _rows(load, i * e, (i + 1) * e)
        else:
            for g in "qkv":
                if f"{g}_proj_weight" in params and len(params[f"{g}_proj_weight"][0]) == 2:
                    shape, load = params[f"{g}_proj_weight"]
                    yield f"{g}_proj", shape, _rows(load, 0, shape[0])


def source_param(piece: str) -> str:
    """The parameter a piece is cut from: ``weight_ih_l0.f`` → ``weight_ih_l0``, ``in_proj.q`` → ``in_proj_weight``.

    >>> source_param("weight_hh_l1_reverse.g"), source_param("in_proj.k"), source_param("v_proj")
    ('weight_hh_l1_reverse', 'in_proj_weight', 'v_proj_weight')
    """
    if piece.startswith("in_proj."):
        return "in_proj_weight"
    if piece in ("q_proj", "k_proj", "v_proj"):
        return f"{piece}_weight"
    return piece.split(".")[0]


def split_key(key: str) -> tuple[str, str] | None:
    """(module prefix, parameter) when ``key`` names a weight that :func:`split_pieces` splits, else None.

    >>> split_key("encoder.rnn.weight_hh_l1_reverse"), split_key("cell.weight_ih"), split_key("fc.weight")
    (('encoder.rnn', 'weight_hh_l1_reverse'), ('cell', 'weight_ih'), None)
    """
    m = _KEYED.match(key)
    return (m.group("prefix") or "", m.group("param")) if m else None


def is_split_bias(key: str) -> bool:
    """The bias that goes with a split weight (``bias_ih_l0``, ``in_proj_bias`` …)."""
    return _KEYED_BIAS.match(key) is not None


def gate_letters(shapes: Mapping[str, tuple[int, ...]], suffix: str) -> str | None:
    """The gates stacked in one RNN layer's weights, read from their shapes: 'ifgo', 'rzn', '' (plain RNN).

    ``shapes`` maps a module's parameter names to shapes; ``suffix`` is ``''`` for a cell
    or ``'_l<k>[_reverse]'`` for one layer and direction. None when the shapes do not
    say it with certainty (the weights are then one row each, unsplit).
    """
    hh = shapes.get(f"weight_hh{suffix}")
    if hh is None or len(hh) != 2 or hh[1] == 0:
        return None
    hr = shapes.get(f"weight_hr{suffix}")
    hidden = hr[1] if hr is not None and len(hr) == 2 else hh[1]
    if hidden == 0 or hh[0] % hidden:
        return None
    return {4: "ifgo", 3: "rzn", 1: ""}.get(hh[0] // hidden)


def keyed_pieces(prefix: str, params: Mapping[str, tuple[tuple[int, ...], Callable[..., np.ndarray]]]) -> Iterator[Piece]:
    """(name, shape, load) of the rows of one module's split weights, found by key (see :func:`split_key`).

    ``params`` maps the module's parameter names (``weight_ih_l0``, ``in_proj_weight``) to
    (shape, load), in row order.
    """
    shapes = {n: s for n, (s, _) in params.items()}
    for pname, (shape, load) in params.items():
        if len(shape) != 2:
            continue
        if pname == "in_proj_weight":
            yield from split_pieces("MultiheadAttention", {pname: (shape, load)})
            continue
        suffix = pname[len("weight_ih"):]
        yield from _gate_pieces(pname, shape, load, None if pname.startswith("weight_hr") else gate_letters(shapes, suffix))


def module_params(module: Any) -> dict[str, Any]:
    """A live torch module's own parameters by name (no recursion)."""
    return dict(module.named_parameters(recurse=False))
