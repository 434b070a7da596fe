"""Model folders: Hugging Face layouts (safetensors shards, ``pytorch_model.bin`` shards), LoRA adapters, one file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError
from .base import Source
from .keyvalue import Entry, keyvalue_tensors


def open_folder(path: Path, extra_rows: bool = True) -> Source:
    """The weights of a folder, in this order of preference.

    ``adapter_config.json`` (a LoRA adapter: :func:`.delta.lora_source`); safetensors
    (``model.safetensors.index.json`` order, ``model.safetensors``, every ``*.safetensors``);
    ``pytorch_model.bin.index.json`` shards; one of ``pytorch_model.bin``, ``model.pt``,
    ``model.pth``; a single ``*.npz``.
    """
    from . import safetensors_file
    from .delta import ADAPTER_CONFIG

    if (path / ADAPTER_CONFIG).is_file():
        return open_adapter(path)
    entries = safetensors_file.folder_entries(path)
    if entries is not None:
        return Source(str(path), tuple(keyvalue_tensors(entries, extra_rows)), "folder")
    if (path / "pytorch_model.bin.index.json").is_file():
        return Source(str(path), tuple(keyvalue_tensors(bin_index_entries(path), extra_rows)), "folder")
    from .registry import open_file

    for name in ("pytorch_model.bin", "model.pt", "model.pth"):
        if (path / name).is_file():
            return open_file(path / name, extra_rows)
    npz = sorted(path.glob("*.npz"))
    if len(npz) == 1:
        return open_file(npz[0], extra_rows)
    raise SourceError(
        f"{path}: no model weights found in this folder (looked for model.safetensors, "
        "model.safetensors.index.json, *.safetensors, pytorch_model.bin)."
    )


def open_adapter(folder: Path, base: Source | None = None) -> Source:
    """A LoRA adapter folder (:func:`.delta.lora_source`): its ΔW rows, and W + ΔW per module with ``base``."""
    from .delta import adapter_weights, lora_source
    from .registry import open_file

    return lora_source(folder, open_file(adapter_weights(folder)), base)


def bin_index_entries(folder: Path) -> list[Entry]:
    """Sharded ``pytorch_model-*.bin`` files, in the order of ``pytorch_model.bin.index.json``."""
    import json

    from . import torch_pickle

    index = folder / "pytorch_model.bin.index.json"
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (OSError, ValueError, RecursionError, KeyError, TypeError):
        raise SourceError(f"{index}: not a valid index (no 'weight_map' object of file names).") from None
    by_file: dict[str, list[str]] = {}
    for key, fname in weight_map.items():
        by_file.setdefault(fname, []).append(key)
    entries: dict[str, Entry] = {}
    for fname, keys in by_file.items():
        if os.path.sep in fname or "/" in fname or fname in ("", ".", ".."):
            raise SourceError(f"{index}: shard name {fname!r} points outside {folder}.")
        shard = folder / fname
        if not shard.is_file():
            raise SourceError(f"{index}: shard {fname!r} is missing from {folder}.")
        legacy = torch_pickle.is_legacy(shard)
        if not legacy and not torch_pickle.is_torch_zip(shard):
            from .torch_source import load_state_dict_file, mapping_entries_for_file, state_dict_from_object

            sd = state_dict_from_object(load_state_dict_file(shard), str(shard))
            got = {e.key: e for e in mapping_entries_for_file(sd, shard)}
            missing = [k for k in keys if k not in got]
            if missing:
                raise SourceError(f"{index}: names tensor {missing[0]!r}, which {shard} does not hold.")
            entries.update((k, got[k]) for k in keys)
            continue
        archive = torch_pickle.read_legacy(shard) if legacy else torch_pickle.read_archive(shard)
        kind, obj = torch_pickle.find_weights(archive.root, str(shard))
        if kind != "state_dict":
            raise SourceError(f"{shard}: a shard must hold a state dict, not a pickled module.")
        for entry in torch_pickle.state_dict_entries(archive, obj, keys):
            entries[entry.key] = entry
    return [entries[k] for k in weight_map]
