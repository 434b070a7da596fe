"""Hugging Face Hub names: ``htsr analyze org/name[@revision]`` and ``htsr.analyze("org/name")``.

:func:`resolve` turns a Hub name into the local folder of its snapshot, through ``huggingface_hub``
(an optional extra, ``pip install 'htsr[hub]'``, imported only when a name is given):

- A path that exists (file or folder) always wins: ``resolve`` returns it unchanged, as it does
  anything that is not a string shaped like ``org/name`` or ``org/name@revision``.
- Online, only the weight files of one format are downloaded (``allow_patterns``): safetensors
  when the repository has them, else PyTorch ``.bin``/``.pt``, else ONNX, GGUF, Keras or Flax
  files, plus ``config.json`` / ``adapter_config.json``. Files already in the cache are not
  downloaded again.
- Offline (``HF_HUB_OFFLINE=1``), the snapshot is read from the local cache
  (``models--org--name/snapshots/<commit>/…``, ``refs/<revision>``); a name that is not there
  gets one line saying so and how to fetch it.

Examples
--------
>>> resolve("no-slash-here")          # not a Hub name: returned as it is
'no-slash-here'
>>> parse_name("sentence-transformers/all-MiniLM-L6-v2@main")
('sentence-transformers/all-MiniLM-L6-v2', 'main')
"""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import SourceError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")
#: Suffixes that make a string a (missing) file path, never a Hub name.
FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".keras", ".h5", ".msgpack",
                 ".npz", ".json")
#: Weight-file groups in order of preference: the first group the repository has is downloaded.
WEIGHT_GROUPS = (
    ("*.safetensors", "*.safetensors.index.json"),
    ("*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt"),
    ("*.onnx", "*.onnx_data"),
    ("*.gguf",),
    ("*.keras", "*.h5"),
    ("*.msgpack", "*.msgpack.index.json"),
)
#: Small files downloaded with any group (a folder's model type, a LoRA adapter's base).
ALWAYS = ("config.json", "adapter_config.json")


def parse_name(text: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` → ``('org/name', 'rev')``; ``'org/name'`` → ``('org/name', None)``."""
    repo, _, rev = text.partition("@")
    return repo, rev or None


def is_hub_name(model: Any) -> bool:
    """True when ``model`` is a string shaped like ``org/name[@revision]`` that is not an existing path."""
    if not isinstance(model, str) or os.path.exists(model) or not _NAME.match(model):
        return False
    return not parse_name(model)[0].lower().endswith(FILE_SUFFIXES)


def weight_patterns(files: list[str]) -> list[str]:
    """The ``allow_patterns`` for a repository holding ``files``: its preferred weight format and the configs."""
    from fnmatch import fnmatch

    for group in WEIGHT_GROUPS:
        if any(fnmatch(f, p) for f in files for p in group):
            return list(group) + list(ALWAYS)
    return [p for group in WEIGHT_GROUPS for p in group] + list(ALWAYS)


def _offline(hf: Any) -> bool:
    check = getattr(hf, "is_offline_mode", None)
    if callable(check):
        return bool(check())
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _fetch_hint(repo: str, rev: str | None) -> str:
    return f"`hf download {repo}" + (f" --revision {rev}" if rev else "") + "` (or unset HF_HUB_OFFLINE)"


def resolve(model: Any, cache_dir: str | os.PathLike | None = None) -> Any:
    """The local folder of a Hub name's snapshot, or ``model`` unchanged when it is not a Hub name.

    Parameters
    ----------
    model
        Anything :func:`htsr.analyze` accepts; only a string ``org/name[@revision]`` that is not an
        existing path is resolved.
    cache_dir : path, optional
        The Hugging Face cache (default: huggingface_hub's, ``HF_HUB_CACHE`` / ``HF_HOME``).

    Returns
    -------
    str or the input

    Raises
    ------
    SourceError
        huggingface_hub is missing, the name is not in the cache offline, or the Hub refused it
        (one line naming the repository).
    """
    if not is_hub_name(model):
        return model
    repo, rev = parse_name(model)
    try:
        import huggingface_hub as hf
    except ImportError:
        raise SourceError(f"{model}: no such file or folder; as a Hugging Face Hub name it needs huggingface_hub "
                          "(pip install 'htsr[hub]')") from None
    offline = _offline(hf)
    try:
        if offline:
            patterns = [p for group in WEIGHT_GROUPS for p in group] + list(ALWAYS)
        else:
            patterns = weight_patterns(hf.HfApi().list_repo_files(repo, revision=rev))
        return hf.snapshot_download(repo, revision=rev, allow_patterns=patterns,
                                    cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                                    local_files_only=offline)
    except Exception as exc:  # each Hub failure becomes one line naming the repository
        if offline or isinstance(exc, getattr(hf.errors, "LocalEntryNotFoundError", ())):
            where = "" if cache_dir is None else f" ({cache_dir})"
            raise SourceError(f"{model}: not a file or folder, and not in the Hugging Face cache{where} while "
                              f"offline (HF_HUB_OFFLINE=1); fetch it once with {_fetch_hint(repo, rev)}") from None
        text = " ".join(str(exc).split())[:300]
        raise SourceError(f"{model}: not a file or folder, and the Hugging Face Hub refused it: "
                          f"{exc.__class__.__name__}: {text}") from None
