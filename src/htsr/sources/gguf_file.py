"""GGUF files (llama.cpp), read with the ``gguf`` package (the ``gguf`` extra).

The file is memory-mapped by :class:`gguf.GGUFReader`; each tensor is
dequantized to float32 only when the engine asks for it (``gguf.quants.dequantize``:
F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q2_K … Q6_K), so
memory follows the largest tensor. GGUF stores dimensions innermost first
(``ne0`` = the input size); rows are given in PyTorch's (out, in) order, as in
the model's safetensors. llama.cpp's tensor names are mapped to the
Hugging Face names they came from, e.g.

=================================  =====================================
GGUF                               row name
=================================  =====================================
``token_embd.weight``              ``model.embed_tokens``
``blk.3.attn_q.weight``            ``model.layers.3.self_attn.q_proj``
``blk.3.ffn_down.weight``          ``model.layers.3.mlp.down_proj``
``output.weight``                  ``lm_head``
=================================  =====================================

Names htsr does not know keep their GGUF spelling. llama.cpp's converter
permutes the rows of ``attn_q`` / ``attn_k`` for its rotary layout; a row
permutation leaves the singular values, hence every number htsr reports,
unchanged. Rows follow the key-value rule (natural order of the mapped names,
``layer_id`` counting ``.weight`` keys), so a GGUF file and the safetensors it
was converted from give the same table up to quantization error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LayerType
from ..errors import LayerError, SourceError
from .base import Source
from .keyvalue import Entry, order_keys

_GLOBAL = {
    "token_embd": "model.embed_tokens", "token_embd_norm": "model.embed_norm",
    "token_types": "model.token_type_embeddings", "position_embd": "model.embed_positions",
    "output_norm": "model.norm", "output": "lm_head", "rope_freqs": "model.rope_freqs",
}
_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_qkv": "self_attn.qkv_proj",
    "attn_norm": "input_layernorm", "attn_norm_2": "input_layernorm_2",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm", "post_attention_norm": "post_attention_norm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.router", "ffn_gate_exps": "mlp.experts.gate_proj",
    "ffn_up_exps": "mlp.experts.up_proj", "ffn_down_exps": "mlp.experts.down_proj",
}
_BLK = re.compile(r"^blk\.(\d+)\.([A-Za-z0-9_]+)\.(weight|bias)$")
_TOP = re.compile(r"^([A-Za-z0-9_]+)\.(weight|bias)$")


def readable_name(name: str) -> str:
    """The Hugging Face name of a llama.cpp tensor name (unknown names are returned unchanged)."""
    m = _BLK.match(name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    m = _TOP.match(name)
    if m and m.group(1) in _GLOBAL:
        return f"{_GLOBAL[m.group(1)]}.{m.group(2)}"
    return name


def _reader(path: Path) -> Any:
    try:
        import gguf
    except ImportError:
        raise SourceError(f"{path}: reading GGUF files needs gguf; install it with `pip install 'htsr[gguf]'`.") from None
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # bad magic, truncated, lying counts (the reader memory-maps: no big allocation)
        raise SourceError(f"{path}: not a readable GGUF file ({exc.__class__.__name__}: {str(exc)[:200]}).") from None


def _loader(path: Path, tensor: Any, shape: tuple[int, ...], key: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from gguf import quants

        try:
            arr = quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except NotImplementedError:
            raise LayerError(f"invalid: GGUF type {tensor.tensor_type.name} cannot be dequantized by the gguf "
                             f"package ({key!r} in {path})") from None
        except Exception as exc:
            raise SourceError(f"{path}: cannot read tensor {key!r} ({exc.__class__.__name__}: {str(exc)[:150]}).") from None
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise SourceError(f"{path}: tensor {key!r} holds {arr.size} values; its shape {shape} needs more.")
        out = np.ascontiguousarray(arr.reshape(shape), dtype=np.float32)
        out.flags.writeable = False
        return out

    return load


def gguf_entries(path: Path) -> list[Entry]:
    """Entries of a GGUF file under readable names, in natural key order; nothing dequantized yet."""
    reader = _reader(path)
    by_key: dict[str, Entry] = {}
    try:
        tensors = list(reader.tensors)
        for t in tensors:
            shape = tuple(int(d) for d in reversed([int(s) for s in t.shape]))
            key = readable_name(str(t.name))
            if key in by_key:
                raise SourceError(f"{path}: tensor name {t.name!r} appears twice.")
            dtype = str(t.tensor_type.name).lower()
            # stacked MoE experts (ffn_*_exps, 3-D) are not conv kernels; other ranks follow the key-value rule
            ltype = LayerType.OTHER if len(shape) == 3 and "_exps." in str(t.name) else None
            by_key[key] = Entry(key, shape, dtype, str(path), _loader(path, t, shape, str(t.name)), layer_type=ltype)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"{path}: corrupt GGUF tensor table ({exc.__class__.__name__}: {str(exc)[:200]}).") from None
    if not by_key:
        raise SourceError(f"{path}: the GGUF file holds no tensors.")
    return [by_key[k] for k in order_keys(by_key)]


def sniff(path: Path, head: bytes) -> bool:
    """GGUF's magic: the four bytes ``GGUF``."""
    return head[:4] == b"GGUF"


def open_file(path: Path, extra_rows: bool = True) -> Source:
    from .keyvalue import keyvalue_tensors

    return Source(str(path), tuple(keyvalue_tensors(gguf_entries(path), extra_rows)), "gguf")
