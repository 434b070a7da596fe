"""Per-layer sparsity from the diagnosis (AlphaPruning) and the pruning itself.

:func:`allocate` is the rule of AlphaPruning (Lu et al., NeurIPS 2024): each
layer's (or its block's mean) metric — usually alpha — is mapped linearly from
``[min, max]`` onto ``[1 − ε, 1 + ε]`` and all ratios are scaled by one factor so
that the parameter-weighted mean sparsity is the requested one. Higher alpha
(a less well-trained layer) gets the higher sparsity.

:func:`prune` reads a model, analyzes it with :func:`htsr.analyze`, allocates
and zeroes weights per layer (``magnitude``: the smallest ``|w|`` of the layer;
``wanda``: the smallest ``|w|·‖x_j‖`` of each output row, with ``x`` the
calibration activations entering the layer). It returns a pruned copy and a
table; the input is never modified. A safetensors file is pruned into a new
file that keeps its header and every tensor it did not prune byte-identical.
What the allocation did on models measured here is in ``docs/acting.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from .errors import HtsrError, OptionError

__all__ = ["allocate", "prune", "block_groups", "PRUNABLE_TYPES"]

PRUNABLE_TYPES = ("dense", "conv1d", "conv2d", "conv3d", "conv")
"""Layer types :func:`prune` prunes by default (embeddings and norms are kept)."""

_BLOCK = re.compile(r"(?:^|\.)(layers|layer|h|blocks)\.(\d+)\.")
_FLOAT_CODES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating, np.integer)) \
            or not 0 < float(sparsity) < 1:
        raise OptionError(f"The sparsity must be a number strictly between 0 and 1; got {sparsity!r}.")
    return float(sparsity)


def block_groups(names: Sequence[str]) -> list[str]:
    """The block of each layer name (``layers.N.``, ``layer.N.``, ``h.N.``, ``blocks.N.``).

    A name outside any block is its own group.

    Examples
    --------
    >>> block_groups(["model.layers.0.q", "model.layers.0.k", "h.1.mlp", "lm_head"])
    ['model.layers.0', 'model.layers.0', 'h.1', 'lm_head']
    """
    out = []
    for name in names:
        m = _BLOCK.search(name)
        out.append(name[:m.end() - 1] if m else name)
    return out


def allocate(metric: Sequence[float] | np.ndarray, sizes: Sequence[float] | np.ndarray, sparsity: float, epsilon: float = 0.3,
             groups: Sequence[Hashable] | None = None, names: Sequence[str] | None = None) -> np.ndarray:
    """One sparsity per layer from a per-layer metric (AlphaPruning's rule).

    Parameters
    ----------
    metric : sequence of float
        One value per layer, usually alpha; a higher value gets a higher sparsity.
    sizes : sequence of float
        The number of parameters of each layer (the weights of the mean).
    sparsity : float
        The parameter-weighted mean sparsity wanted, in (0, 1).
    epsilon : float
        Half-width of the ratio range before scaling: metrics map onto
        ``[1 − ε, 1 + ε]``. In [0, 1); 0 gives uniform sparsity.
    groups : sequence of hashable, optional
        A group id per layer (e.g. the transformer block): the layers of a group
        take the group's (unweighted) mean metric.
    names : sequence of str, optional
        Layer names for the error messages (default ``layer <index>``).

    Returns
    -------
    numpy.ndarray
        The sparsity of each layer; ``sum(ratio·size) / sum(size) == sparsity``.

    Raises
    ------
    OptionError
        Bad arguments (lengths, NaN metric, sizes not positive, ε or sparsity out of range).
    HtsrError
        A ratio leaves [0, 1] (the message names the layer and suggests a smaller ε).

    Examples
    --------
    >>> allocate([2.0, 4.0], [100, 100], 0.5, epsilon=0.2).tolist()
    [0.4, 0.6]
    """
    s = _check_sparsity(sparsity)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)) or not 0 <= epsilon < 1:
        raise OptionError(f"epsilon must be a number in [0, 1); got {epsilon!r}.")
    m = np.asarray(metric, dtype=np.float64).ravel()
    w = np.asarray(sizes, dtype=np.float64).ravel()
    n = len(m)
    label = list(names) if names is not None else [f"layer {i}" for i in range(n)]
    if n == 0:
        raise OptionError("allocate() needs at least one layer.")
    if len(w) != n or len(label) != n or (groups is not None and len(groups) != n):
        raise OptionError(f"metric, sizes, groups and names must have one entry per layer; got lengths {n}, "
                          f"{len(w)}, {None if groups is None else len(groups)}, {len(label)}.")
    for i in range(n):
        if not math.isfinite(m[i]):
            raise OptionError(f"{label[i]}: its metric is {m[i]}; allocate() needs a finite value per layer.")
        if not (math.isfinite(w[i]) and w[i] > 0):
            raise OptionError(f"{label[i]}: its size is {w[i]}; sizes must be positive.")
    if groups is not None:
        index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        inv = np.array([index[g] for g in groups], dtype=np.intp)
        m = (np.bincount(inv, weights=m) / np.bincount(inv))[inv]
    lo, hi = float(m.min()), float(m.max())
    scores = (m - lo) / (hi - lo) * (2 * epsilon) + (1 - epsilon) if hi > lo else np.ones(n)
    ratios = scores * (s * w.sum() / float((scores * w).sum()))
    for i in np.argsort(-ratios, kind="stable"):
        if not 0 <= ratios[i] <= 1:
            raise HtsrError(f"{label[i]}: its sparsity would be {ratios[i]:.4f}, outside [0, 1] (sparsity {s}, "
                            f"epsilon {epsilon}); use a smaller epsilon.")
    return ratios


# ---------------------------------------------------------------- pruning one matrix
def magnitude_mask(w: np.ndarray, ratio: float) -> np.ndarray:
    """Boolean mask of the ``round(ratio·size)`` entries of smallest ``|w|`` (the ones zeroed)."""
    flat = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    k = round(ratio * flat.size)
    mask = np.zeros(flat.size, dtype=bool)
    if k > 0:
        mask[np.argpartition(flat, k - 1)[:k]] = True
    return mask.reshape(np.shape(w))


def wanda_mask(w: np.ndarray, x_norm: np.ndarray, ratio: float) -> np.ndarray:
    """Wanda's mask: in each output row, the ``round(ratio·in)`` smallest ``|w_ij|·‖x_j‖``.

    ``w`` is (out, in) as torch's Linear stores it; ``x_norm`` the L2 norm of each input
    channel over the calibration tokens.
    """
    w = np.asarray(w, dtype=np.float64)
    score = np.abs(w) * np.asarray(x_norm, dtype=np.float64)[None, :]
    k = round(ratio * w.shape[1])
    mask = np.zeros(w.shape, dtype=bool)
    if k > 0:
        idx = np.argpartition(score, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask, idx, True, axis=1)
    return mask


# ---------------------------------------------------------------- the model's weights
def _safetensors_file(path: Path) -> Path:
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise HtsrError(f"{path}: prune needs a folder with exactly one .safetensors file; found {len(files)}.")
        return files[0]
    if path.suffix != ".safetensors":
        raise HtsrError(f"{path}: prune reads and writes safetensors files; convert the model first.")
    return path


def _read_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise HtsrError(f"{path}: not a safetensors file (shorter than 8 bytes).")
        n = int.from_bytes(head, "little")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError):
            raise HtsrError(f"{path}: not a safetensors file (unreadable header).") from None
    if not isinstance(header, dict):
        raise HtsrError(f"{path}: not a safetensors file (header is not a JSON object).")
    return 8 + n, header


def _decode(raw: bytes, code: str, shape: list[int]) -> np.ndarray | None:
    if code in _FLOAT_CODES:
        return np.frombuffer(raw, dtype=np.dtype(_FLOAT_CODES[code]).newbyteorder("<")).reshape(shape)
    if code == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return None


def _weight_key(longname: str, keys: Any) -> str | None:
    for key in (longname + ".weight", longname):
        if key in keys:
            return key
    return None


def _analysis(model: Any, options: dict) -> pd.DataFrame:
    from .api import analyze

    report = analyze(model, **options)
    d = report.details
    if len(d) == 0 or "alpha" not in d.columns:
        raise HtsrError("prune: the model has no analyzable layer (nothing to allocate from).")
    return d


def _layer_table(d: Any, keys: Any, layer_types: Sequence[str]) -> list[dict]:
    rows: dict[str, dict] = {}
    for row in d.to_dict("records"):
        if str(row.get("layer_type")) not in layer_types:
            continue
        key = _weight_key(row["longname"], keys)
        if key is None:
            continue
        a = row.get("alpha")
        a = float(a) if a is not None and isinstance(a, (int, float, np.floating)) and math.isfinite(a) else math.nan
        entry = rows.setdefault(row["longname"], {"name": row["longname"], "key": key, "alphas": []})
        entry["alphas"].append(a)
    table = []
    for entry in rows.values():
        finite = [a for a in entry["alphas"] if math.isfinite(a)]
        table.append({"name": entry["name"], "key": entry["key"],
                      "alpha": float(np.mean(finite)) if finite else math.nan})
    if not table:
        raise HtsrError(f"prune: the model has no analyzable layer of the pruned types ({', '.join(layer_types)}).")
    return table


def _targets(table: list[dict], sizes: list[int], sparsity: float, allocation: Any, epsilon: float,
             groups: Any) -> list[float]:
    names = [t["name"] for t in table]
    if isinstance(allocation, Mapping):
        unknown = sorted(set(allocation) - set(names))
        if unknown:
            raise OptionError(f"prune: the allocation names layers that are not pruned here: {', '.join(unknown[:5])}"
                              f"{' …' if len(unknown) > 5 else ''} (pruned layers: {', '.join(names[:3])} …).")
        out = []
        for n in names:
            r = allocation.get(n, 0.0)
            if isinstance(r, bool) or not isinstance(r, (int, float, np.floating)) or not 0 <= r <= 1:
                raise OptionError(f"prune: the ratio of {n} must be a number in [0, 1]; got {r!r}.")
            out.append(float(r))
        return out
    if allocation == "uniform":
        return [sparsity] * len(table)
    if allocation != "alpha":
        raise OptionError(f"prune: allocation must be 'alpha', 'uniform' or a dict {{name: ratio}}; got {allocation!r}.")
    alphas = np.array([t["alpha"] for t in table])
    finite = np.isfinite(alphas)
    if not finite.any():
        raise HtsrError("prune: no layer has a finite alpha; use allocation='uniform'.")
    alphas = np.where(finite, alphas, float(np.mean(alphas[finite])))  # a failed fit takes the mean (noted)
    if groups == "block":
        ids = block_groups(names)
    elif groups is None:
        ids = None
    else:
        raise OptionError(f"prune: groups must be 'block' or None; got {groups!r}.")
    return allocate(alphas, sizes, sparsity, epsilon=epsilon, groups=ids, names=names).tolist()


def _frame(table: list[dict]) -> pd.DataFrame:
    import pandas as pd

    cols = ["name", "alpha", "target", "sparsity", "params"]
    return pd.DataFrame([{c: t[c] for c in cols} for t in table], columns=cols)


def _is_torch_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


def _activation_norms(model: Any, names: list[str], calibration: Any) -> dict[str, np.ndarray]:
    """L2 norm of each input channel of the named Linear layers over the calibration batches."""
    import torch

    if calibration is None:
        raise OptionError("prune: method='wanda' needs calibration inputs (calibration=...).")
    batches = calibration if isinstance(calibration, list) else [calibration]
    sums: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, torch.nn.Linear):
            raise OptionError(f"prune: method='wanda' prunes torch.nn.Linear layers; {name} is "
                              f"{module.__class__.__name__}.")

        def hook(mod: Any, args: Any, name: str = name) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
        handles.append(module.register_forward_pre_hook(hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, Mapping):
                    model(**batch)
                elif isinstance(batch, tuple):
                    model(*batch)
                else:
                    model(batch)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in sums]
    if missing:
        raise HtsrError(f"prune: the calibration inputs never reached {', '.join(missing[:3])}.")
    return {n: np.sqrt(sums[n].numpy()) for n in names}


def prune(model: Any, sparsity: float, allocation: Any = "alpha", method: str = "magnitude", epsilon: float = 0.3,
          groups: str | None = "block", *, calibration: Any = None, out: str | os.PathLike | None = None,
          layer_types: Sequence[str] = PRUNABLE_TYPES, **options: Any) -> tuple[Any, pd.DataFrame]:
    """Prune each layer to its own sparsity; return a pruned copy and a table.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a dict of arrays (state dict), or a path to a safetensors
        file (or a folder holding one); a path needs ``out``. It is never modified.
    sparsity : float
        The parameter-weighted mean sparsity over the pruned layers, in (0, 1).
    allocation : {'alpha', 'uniform'} or dict
        ``'alpha'``: :func:`allocate` from each layer's alpha (AlphaPruning);
        ``'uniform'``: every layer at ``sparsity``; a dict ``{layer name: ratio}`` gives
        the ratios (layers it leaves out are not pruned; ``sparsity`` is then unused).
    method : {'magnitude', 'wanda'}
        ``'magnitude'``: the smallest ``|w|`` of each layer are zeroed. ``'wanda'``
        (torch modules only): per output row, the smallest ``|w_ij|·‖x_j‖``, with
        ``‖x_j‖`` the norm of input channel j over ``calibration`` run through the
        dense model in one pass.
    epsilon : float
        AlphaPruning's ε (see :func:`allocate`).
    groups : {'block', None}
        ``'block'``: layers of one transformer block (``layers.N.``, ``layer.N.``,
        ``h.N.``, ``blocks.N.``) share their mean alpha; None: per layer.
    calibration
        For ``wanda``: an input tensor, a tuple of positional inputs, a dict of keyword
        inputs, or a list of such batches.
    out : path, optional
        Where to write the pruned safetensors file (required when ``model`` is a path).
    layer_types : sequence of str
        Which analyzed layer types are pruned (default dense and convolution layers).
    **options
        Further :func:`htsr.analyze` options (``layers=``, ``workers=`` …).

    Returns
    -------
    (pruned, table)
        ``pruned``: a deep copy of the module, a new dict, or the written ``Path``;
        ``table``: a DataFrame with ``name, alpha, target, sparsity, params``
        (``sparsity`` is the fraction of zeros achieved in the layer).

    Examples
    --------
    >>> import numpy as np, htsr
    >>> rng = np.random.default_rng(0)
    >>> sd = {f"layers.{i}.fc.weight": rng.standard_normal((60, 40)) for i in range(3)}
    >>> pruned, table = htsr.prune(sd, 0.5, allocation="uniform")
    >>> table["sparsity"].round(2).tolist()
    [0.5, 0.5, 0.5]
    """
    sparsity = _check_sparsity(sparsity)
    if method not in ("magnitude", "wanda"):
        raise OptionError(f"prune: method must be 'magnitude' or 'wanda'; got {method!r}.")
    if isinstance(model, (str, os.PathLike)):
        if method != "magnitude":
            raise OptionError("prune: method='wanda' needs a torch module (the calibration runs through it).")
        if out is None:
            raise OptionError("prune: a model given as a path needs out= (where to write the pruned file).")
        return _prune_file(Path(model), Path(out), sparsity, allocation, epsilon, groups, layer_types, options)
    if out is not None:
        raise OptionError("prune: out= is for a model given as a path; save the returned copy yourself.")
    is_torch = _is_torch_module(model)
    if method == "wanda" and not is_torch:
        raise OptionError("prune: method='wanda' needs a torch module (the calibration runs through it).")
    d = _analysis(model, options)
    if is_torch:
        import copy

        pruned = copy.deepcopy(model)
        tensors = dict(pruned.state_dict(keep_vars=True))
    elif isinstance(model, Mapping):
        pruned = dict(model)
        tensors = pruned
    else:
        raise OptionError(f"prune: expected a torch module, a dict of arrays or a safetensors path; got "
                          f"{model.__class__.__name__}.")
    table = _layer_table(d, tensors, layer_types)
    sizes = [int(np.prod(np.shape(tensors[t["key"]]))) for t in table]
    targets = _targets(table, sizes, sparsity, allocation, epsilon, groups)
    norms = _activation_norms(model, [t["name"] for t in table], calibration) if method == "wanda" else {}
    for t, size, r in zip(table, sizes, targets, strict=True):
        t["target"], t["params"] = r, size
        value = tensors[t["key"]]
        if is_torch:
            import torch

            with torch.no_grad():
                w = value.detach().cpu().double().numpy()
                mask = wanda_mask(w, norms[t["name"]], r) if method == "wanda" else magnitude_mask(w, r)
                value.masked_fill_(torch.from_numpy(mask).to(value.device), 0)
                t["sparsity"] = float((value == 0).double().mean())
        else:
            arr = np.array(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
            arr[magnitude_mask(arr, r)] = 0
            t["sparsity"] = float((arr == 0).mean())
            if hasattr(value, "detach"):
                import torch

                pruned[t["key"]] = torch.from_numpy(arr).to(value.dtype)
            else:
                pruned[t["key"]] = arr
    return pruned, _frame(table)


def _prune_file(src: Path, out: Path, sparsity: float, allocation: Any, epsilon: float, groups: Any,
                layer_types: Sequence[str], options: dict) -> tuple[Path, pd.DataFrame]:
    if not src.exists():
        raise HtsrError(f"{src}: no such file or folder.")
    file = _safetensors_file(src)
    if out.exists() and out.resolve() in (file.resolve(), src.resolve()):
        raise OptionError(f"{out}: OUT is the input file; write the pruned model to another path.")
    if out.is_dir():
        raise OptionError(f"{out}: is a folder; OUT must be a .safetensors file path.")
    start, header = _read_header(file)
    keys = {k: v for k, v in header.items() if k != "__metadata__"}
    d = _analysis(str(file), options)
    table = _layer_table(d, keys, layer_types)
    for t in table:
        code = keys[t["key"]].get("dtype")
        if code not in _FLOAT_CODES and code != "BF16":
            raise HtsrError(f"{file}: {t['key']} is {code}; prune zeroes float tensors (F64/F32/F16/BF16) only.")
    sizes = [int(np.prod(keys[t["key"]]["shape"])) for t in table]
    targets = _targets(table, sizes, sparsity, allocation, epsilon, groups)
    tmp = out.with_name(out.name + ".tmp")
    try:
        shutil.copyfile(file, tmp)  # header and every other tensor byte-identical
        with open(tmp, "r+b") as fh:
            for t, size, r in zip(table, sizes, targets, strict=True):
                info = keys[t["key"]]
                b0, b1 = (int(x) for x in info["data_offsets"])
                fh.seek(start + b0)
                raw = bytearray(fh.read(b1 - b0))
                w = _decode(bytes(raw), info["dtype"], info["shape"])
                assert w is not None
                mask = magnitude_mask(w, r).ravel()
                itemsize = (b1 - b0) // max(size, 1)
                view = np.frombuffer(raw, dtype=np.uint8).reshape(size, itemsize)
                view[mask] = 0  # all-zero bytes are +0.0 in every float format
                fh.seek(start + b0)
                fh.write(raw)
                t["target"], t["params"] = r, size
                after = _decode(bytes(raw), info["dtype"], info["shape"])
                assert after is not None
                t["sparsity"] = float((after == 0).mean())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out, _frame(table)


# ---------------------------------------------------------------- the command line
def add_prune_parser(sub: Any, common: Any) -> None:
    """Register ``htsr prune IN OUT --sparsity S [--uniform] [--epsilon E]`` on the CLI's subparsers."""
    pr = sub.add_parser("prune", parents=[common], help="prune a safetensors model, each layer to its own sparsity",
                        description="Zero the smallest weights of each dense/conv layer of IN, with per-layer "
                                    "sparsity from its alpha (AlphaPruning) or uniform, write OUT (safetensors; "
                                    "every tensor not pruned stays byte-identical) and print the table.")
    pr.add_argument("path", metavar="IN", help="a .safetensors file or a folder holding one")
    pr.add_argument("out", metavar="OUT", help="the pruned .safetensors file to write")
    pr.add_argument("--sparsity", type=float, required=True, metavar="S",
                    help="mean sparsity over the pruned layers, weighted by their sizes, in (0, 1)")
    pr.add_argument("--uniform", action="store_true", help="every layer at the same sparsity (no alpha)")
    pr.add_argument("--epsilon", type=float, default=0.3, metavar="E",
                    help="AlphaPruning's epsilon: alphas map onto [1-E, 1+E] before scaling (default 0.3)")
    pr.add_argument("--per-layer", action="store_true",
                    help="each layer's own alpha (default: the mean alpha of its transformer block)")


def cmd_prune(args: Any, stdout: Any, stderr: Any) -> int:
    """Run ``htsr prune`` (see :func:`add_prune_parser`); returns the exit code."""
    _, table = prune(args.path, args.sparsity, allocation="uniform" if args.uniform else "alpha",
                     epsilon=args.epsilon, groups=None if args.per_layer else "block", out=args.out)
    stdout.write(table.to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n")
    total = float(table["params"].sum())
    stdout.write(f"wrote {args.out}: {int(table['params'].sum())} parameters in {len(table)} layers, sparsity "
                 f"{float((table['sparsity'] * table['params']).sum()) / total:.4f}\n")
    return 0
