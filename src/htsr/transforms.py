"""Weight transforms: remove correlation traps, SVD smoothing and sharpening.

Each function takes a ``torch.nn.Module``, a state dict or a dict of numpy
arrays and returns a modified **copy** of it (the user's object is never
touched) unless ``inplace=True``. Layers are chosen, numbered and gated exactly
as :func:`htsr.analyze` does (``layers``, ``min_evals`` … options), so the ids
of a report can be passed back. Layers the transform does not change come back
bit-identical.

=====================  ==========================================================
``remove_traps``       subtracts, at each located trap entry, the trap's rank-one
                       component σ·uᵢ·vⱼ (the spike of the shuffled matrix, mapped
                       back through the permutation); nothing else changes.
``SVDSmoothing``       keeps the top k singular components of each matrix
                       (``method='detX'``: k = detX_num; ``'svd'``: int(percent·M·rf);
                       ``'rmt'``: the MP num_spikes; ``'alpha_min'``: num_pl_spikes;
                       ``'auto'``: ``'rmt'`` when alpha > 6 else ``'detX'``); conv
                       slices keep ceil(k / rf) each, as the reference.
``SVDSharpness``       shuffles each matrix as ``randomize=True`` does, removes the
                       top singular components of the shuffled matrix that are
                       spikes of its MP fit, and un-shuffles (the reference's
                       procedure; conv slices remove their own spikes).
=====================  ==========================================================
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import HtsrError, OptionError
from .spectral.powerlaw import UNDER_TRAINED

if TYPE_CHECKING:
    from .config import AnalysisConfig
    from .engine import Plan
    from .matrices import Geometry
    from .sources.base import WeightTensor
    from .spectral.randomize import RandomizedESD
    from .spectral.traps import TrapSearch

SMOOTHING_METHODS = ("detX", "svd", "rmt", "alpha_min", "auto")


# ---------------------------------------------------------------- model plumbing


class _Target:
    """The copy being transformed and a way to read and write each layer's weight."""

    def __init__(self, model: Any, inplace: bool) -> None:
        from .sources import open_source
        from .sources.torch_source import is_torch_module, is_torch_tensor

        if is_torch_module(model):
            self.kind = "module"
            self.obj = model if inplace else copy.deepcopy(model)
        elif isinstance(model, dict):
            self.kind = "mapping"
            if inplace:
                self.obj = model
            else:
                self.obj = {k: (v.detach().clone() if is_torch_tensor(v) else
                                np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in model.items()}
        else:
            raise HtsrError(
                f"htsr transforms take a torch.nn.Module, a state dict or a dict of numpy arrays; got "
                f"{type(model).__module__}.{type(model).__qualname__} (load a file first, e.g. with safetensors)."
            )
        self.source = open_source(self.obj)

    def write(self, tensor: WeightTensor, new: np.ndarray) -> None:
        """Store ``new`` (the weight's shape, float) as the tensor's value, in its own dtype."""
        from .sources.torch_source import is_torch_tensor

        if self.kind == "module":
            holder = self.obj.get_submodule(tensor.longname) if tensor.key != "weight" else self.obj
            target = holder.weight
        else:
            target = self.obj[tensor.key]
        if is_torch_tensor(target):
            import torch

            with torch.no_grad():
                target.copy_(torch.from_numpy(np.ascontiguousarray(new)).to(dtype=target.dtype, device=target.device))
        else:
            target[...] = new.astype(target.dtype, copy=False)


def _config(options: dict) -> AnalysisConfig:
    from .config import AnalysisConfig

    return AnalysisConfig.from_kwargs(**options)


def _layers(target: _Target, config: AnalysisConfig) -> list[Plan]:
    from .engine import plan

    # split rows (RNN gates, q/k/v) are views of one stacked weight: not written back piece by piece
    return [p for p in plan(target.source, config) if not p.reason and not p.tensor.extra]


def _randomized(p: Plan, config: AnalysisConfig, stack: np.ndarray, g: Geometry) -> tuple[RandomizedESD, TrapSearch]:
    """The layer's randomized ESD and trap search, exactly as ``analyze(randomize=True)`` computes them."""
    from .prepare import randomize_row
    from .spectral.esd import compute_esd
    from .treatment import HTSR

    evals = compute_esd(stack, g.N).evals
    return randomize_row(stack, evals, g, config.seed, p.tensor.layer_id, None, HTSR)


def _scale(tensor: WeightTensor, config: AnalysisConfig) -> float:
    from .config import LayerType

    return math.sqrt(0.5) if (tensor.layer_type is LayerType.CONV2D and config.conv2d_norm) else 1.0


def _per_layer(model: Any, inplace: bool, options: dict,
               change: Callable[[Any, Any, np.ndarray, np.ndarray, Any], np.ndarray | None]) -> Any:
    """Run ``change(plan, config, raw, stack, geometry)`` on each layer; write back what it returns."""
    from .blas import blas_single_thread
    from .prepare import layer_stack, read_matrix
    from .treatment import HTSR

    config = _config(options)
    target = _Target(model, inplace)
    with blas_single_thread():  # the engine's BLAS setting: the same shuffles give the same bits
        for p in _layers(target, config):
            t = p.tensor
            assert p.geometry is not None  # analyzed rows (no reason) carry a geometry
            raw, _ = read_matrix(t)
            stack, _ = layer_stack(raw, t, p.geometry, config, HTSR)
            new = change(p, config, raw, stack, p.geometry)
            if new is not None:
                target.write(t, new)
    return target.obj


# ---------------------------------------------------------------- remove_traps


def remove_traps(model: Any, *, seed: int = 0, inplace: bool = False, **options: Any) -> Any:
    """Remove every correlation trap's rank-one contribution from the located entries.

    Traps are found exactly as ``htsr.analyze(model, randomize=True, seed=seed)``
    finds them (same shuffles, same report); for each trap the located entries
    (row, col) get the trap's component σ·uᵢ·vⱼ subtracted, where σ, u, v are the
    spike's singular value and vectors in the shuffled matrix. All other entries,
    and all layers without traps, are unchanged (bit-identical).

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a state dict, or a dict of numpy arrays.
    seed : int
        The ``seed`` of the analysis whose traps are removed.
    inplace : bool
        Modify ``model`` itself instead of a copy.
    **options
        Layer selection and gates of :func:`htsr.analyze` (``layers``, ``min_evals`` …).

    Returns
    -------
    The modified copy (or ``model`` with ``inplace=True``).

    Examples
    --------
    >>> import numpy as np, htsr
    >>> W = np.random.default_rng(0).standard_normal((400, 400)) / 20
    >>> W[3, 5] = 10.0
    >>> clean = htsr.remove_traps({"fc.weight": W})
    >>> int(htsr.analyze(clean, randomize=True).details["num_traps"][0]), W[3, 5]
    (0, np.float64(10.0))
    """
    from .matrices import stored_index

    options = {**options, "seed": seed, "randomize": True}

    def change(p: Plan, config: AnalysisConfig, raw: np.ndarray, stack: np.ndarray, g: Geometry) -> np.ndarray | None:
        found = _randomized(p, config, stack, g)[1]
        if not found.traps:
            return None
        scale = _scale(p.tensor, config)
        new = raw.copy()
        for trap in found.traps:
            s = trap.slice or 0
            for (r, c, _value), comp in zip(trap.entries, trap.components):
                new[stored_index(raw.shape, s, r, c)] -= comp / scale
        return new

    return _per_layer(model, inplace, options, change)


# ---------------------------------------------------------------- SVD transforms


def _keep_top(w: np.ndarray, k: int) -> np.ndarray:
    """w with all but its top k singular components zeroed."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def _drop_top(w: np.ndarray, k: int) -> np.ndarray:
    """w with its top k singular components zeroed."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return (u[:, k:] * s[k:]) @ vt[k:]


def _num_components(method: str, percent: float, evals: np.ndarray, g: Geometry) -> int:
    from .spectral.marchenko_pastur import detx, fit_mp
    from .spectral.powerlaw import fit_powerlaw

    if method == "svd":
        return int(percent * g.M * g.rf)
    if method == "detX":
        return detx(evals)[0]
    if method == "auto":
        alpha = fit_powerlaw(evals).alpha
        method = "rmt" if alpha > UNDER_TRAINED else "detX"
        return _num_components(method, percent, evals, g)
    if method == "rmt":
        return fit_mp(evals, g.Q, g.M).num_spikes
    return int(fit_powerlaw(evals).num_pl_spikes)  # alpha_min


def SVDSmoothing(model: Any, percent: float = 0.8, method: str = "detX", *, inplace: bool = False,
                 **options: Any) -> Any:
    """Keep the top singular components of each layer (the reference's ``SVDSmoothing``).

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a state dict, or a dict of numpy arrays.
    percent : float
        For ``method='svd'``: keep int(percent·M·rf) components (0 < percent ≤ 1).
    method : {'detX', 'svd', 'rmt', 'alpha_min', 'auto'}
        How many components to keep (see the module docstring).
    inplace : bool
        Modify ``model`` itself instead of a copy.
    **options
        Layer selection and gates of :func:`htsr.analyze`.

    Returns
    -------
    The modified copy (or ``model`` with ``inplace=True``). A layer whose count is
    0 or at least its number of components is unchanged.

    Examples
    --------
    >>> import numpy as np, htsr
    >>> W = np.random.default_rng(0).standard_normal((60, 40))
    >>> out = htsr.SVDSmoothing({"fc.weight": W}, percent=0.25, method="svd")
    >>> int(np.linalg.matrix_rank(out["fc.weight"]))
    10
    """
    from .matrices import slices, unslice
    from .spectral.esd import compute_esd

    if method not in SMOOTHING_METHODS:
        raise OptionError(f"The 'method' option must be one of {', '.join(SMOOTHING_METHODS)}; got {method!r}.")
    if not isinstance(percent, (int, float)) or isinstance(percent, bool) or not 0 < percent <= 1:
        raise OptionError(f"The 'percent' option must be a number in (0, 1]; got {percent!r}.")

    def change(p: Plan, config: AnalysisConfig, raw: np.ndarray, stack: np.ndarray, g: Geometry) -> np.ndarray | None:
        k = _num_components(method, percent, compute_esd(stack, g.N).evals, g)
        if g.rf > 1:
            k = math.ceil(k / g.rf)
        if k <= 0 or k >= g.M:
            return None
        raw_stack = slices(raw, p.tensor.layer_type, conv2d_norm=False)
        return unslice(np.stack([_keep_top(w, k) for w in raw_stack]), raw.shape)

    return _per_layer(model, inplace, options, change)


def SVDSharpness(model: Any, *, seed: int = 0, inplace: bool = False, **options: Any) -> Any:
    """Remove the randomized spikes' components (the reference's ``SVDSharpness``).

    Each matrix is shuffled with the generator ``randomize=True`` uses for that
    layer and ``seed``; the Marchenko–Pastur fit of the shuffled ESD gives its
    spikes; each shuffled slice loses its top singular components above the fit's
    edge, and is un-shuffled.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a state dict, or a dict of numpy arrays.
    seed : int
        Seed of the shuffles.
    inplace : bool
        Modify ``model`` itself instead of a copy.
    **options
        Layer selection and gates of :func:`htsr.analyze`.

    Returns
    -------
    The modified copy (or ``model`` with ``inplace=True``); layers without a
    randomized spike are unchanged.
    """
    from .matrices import slices, unslice
    from .spectral.randomize import layer_rng, permutations

    options = {**options, "seed": seed}

    def change(p: Plan, config: AnalysisConfig, raw: np.ndarray, stack: np.ndarray, g: Geometry) -> np.ndarray | None:
        counts = _randomized(p, config, stack, g)[1].spikes_per_slice
        if not any(counts):
            return None
        perms = permutations(stack.shape, layer_rng(config.seed, p.tensor.layer_id, 0))
        raw_stack = slices(raw, p.tensor.layer_type, conv2d_norm=False).copy()
        for s, k in enumerate(counts):
            if k == 0:
                continue
            shuffled = raw_stack[s].reshape(-1)[perms[s]].reshape(raw_stack[s].shape)  # the shuffle, in float64
            cleaned = _drop_top(shuffled, k).reshape(-1)
            flat = np.empty_like(cleaned)
            flat[perms[s]] = cleaned  # shuffled.ravel() == original.ravel()[perm]
            raw_stack[s] = flat.reshape(raw_stack[s].shape)
        return unslice(raw_stack, raw.shape)

    return _per_layer(model, inplace, options, change)
