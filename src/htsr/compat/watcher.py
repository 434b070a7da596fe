"""``htsr.WeightWatcher``: argument- and column-compatible with the reference tool.

Switching is one import line::

    import htsr.compat as ww     # was: import weightwatcher as ww
    watcher = ww.WeightWatcher(model=model)
    details = watcher.analyze(plot=True, randomize=True)
    watcher.get_summary()

The deliberate differences are listed in ``docs/compat.md``. An unknown
keyword fails at once naming it; a reference option htsr does not implement
raises ``NotImplementedError`` naming the option (never a silent no-op).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import HtsrError, OptionError, UnknownOptionError
from ..treatment import HTSR, Treatment
from .constants import DEF_SAVE_DIR, DEFAULT_PARAMS
from .treatment import REFERENCE

if TYPE_CHECKING:
    import pandas as pd

_log = logging.getLogger("htsr")

# the reference's positional order after ``model`` (weightwatcher 0.7.7)
_ANALYZE_ORDER = (
    "layers", "min_evals", "max_evals", "min_size", "max_size", "max_N", "glorot_fix", "plot", "randomize", "savefig",
    "mp_fit", "conv2d_norm", "ww2x", "pool", "conv2d_fft", "fft", "deltas", "intra", "vectors", "channels", "stacked",
    "fix_fingers", "xmin_max", "max_fingers", "finger_thresh", "fit", "sparsify", "detX", "ERG", "svd_method",
    "tolerance", "start_ids", "pl_package", "xmax", "base_model", "peft", "inverse",
)
_DESCRIBE_ORDER = (
    "layers", "min_evals", "max_evals", "min_size", "max_size", "max_N", "glorot_fix", "savefig", "ww2x", "pool",
    "conv2d_fft", "fft", "conv2d_norm", "intra", "channels", "stacked", "start_ids", "base_model", "peft",
)
# reference params (get_ESD / get_Weights ``params=``) that would change a single layer's matrices
_PARAMS_NOT_BUILT = ("glorot_fix", "normalize", "intra", "inverse", "fft", "conv2d_fft", "stacked", "peft")


# reference options accepted only at their default value (anything else is not built)
_ONLY_DEFAULT = {
    "min_size": None, "max_size": None, "conv2d_fft": False,
}
# options whose reference result is itself broken in 0.7.7: refused, with the reference's own error
_BROKEN = {
    "fft": "weightwatcher 0.7.7 raises AttributeError: 'WWLayer' object has no attribute 'skippe' for fft=True",
    "channels": "weightwatcher 0.7.7 raises TypeError: 'str' object is not callable for channels='first'/'last'",
}
# accepted and without effect on the numbers: htsr always computes exactly (documented in docs/compat.md)
_ACCEPTED = {"svd_method": ("accurate", "fast")}
_DIRECT = ("layers", "min_evals", "max_evals", "max_N", "randomize", "mp_fit", "conv2d_norm", "pool",
           "detX", "tolerance", "seed", "device", "workers", "progress", "start_ids", "inverse", "vectors", "intra", "sparsify", "stacked",
           "reference")  # reference: the compat class's own keyword (True: the reference's treatment)
# tail-fit options (htsr.spectral.fitting); finger parameters only count with fix_fingers
_FIT_KEYS = ("fit", "pl_package", "xmax", "fix_fingers")
_FINGER_KEYS = {"xmin_max": None, "max_fingers": 10, "finger_thresh": 1.0}


def _positional(method: str, order: tuple[str, ...], args: tuple, kwargs: dict) -> dict:
    """Place positional arguments by the reference's parameter order (after ``model``)."""
    if len(args) > len(order):
        raise TypeError(f"WeightWatcher.{method}() takes at most {len(order) + 1} positional arguments "
                        f"after self ({len(args) + 1} given).")
    for name, value in zip(order, args):
        if name in kwargs:
            raise TypeError(f"WeightWatcher.{method}() got multiple values for argument {name!r}.")
        kwargs[name] = value
    return kwargs


def _reference_defaults(opts: dict) -> tuple[dict, Treatment]:
    """The reference's defaults and limits, and the treatment (``reference=False``: htsr's own).

    min_evals 8 (``REFERENCE.min_evals``); 0 (or None) for min_evals/max_evals means no limit.
    """
    treatment: Treatment = REFERENCE if opts.pop("reference", True) else HTSR
    opts.setdefault("min_evals", REFERENCE.min_evals)
    if not opts["min_evals"]:  # 0 / None: every layer with at least one eigenvalue
        opts["min_evals"] = 1
    if "max_evals" in opts and not opts["max_evals"]:
        opts["max_evals"] = sys.maxsize
    return opts, treatment


def _params_options(method: str, params: Any) -> dict:
    """Check a reference ``params`` dict (its option names as keys); return the options htsr uses from it."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise OptionError(f"WeightWatcher.{method}: params must be a dict of the reference's options; got {params!r}.")
    known = set(DEFAULT_PARAMS) | set(_ANALYZE_ORDER) | {"layers", "layer_ids_start", "reference", "seed"}
    for key, value in params.items():
        if key not in known:
            raise UnknownOptionError(f"WeightWatcher.{method}(): unknown key {key!r} in params.")
        if key in _PARAMS_NOT_BUILT and value:
            raise NotImplementedError(f"WeightWatcher.{method}: params[{key!r}]={value!r} is not implemented in htsr.")
    return {k: params[k] for k in ("reference",) if k in params}


def _map_options(method: str, kwargs: dict) -> tuple[dict, dict]:
    """Split compat keywords into htsr options and plot options; reject unknown/unbuilt ones."""
    opts: dict[str, Any] = {}
    plot_opts: dict[str, Any] = {"plot": False, "savefig": DEF_SAVE_DIR}
    for key, value in kwargs.items():
        if key in _DIRECT:
            opts[key] = value
        elif key == "ERG":
            if value:
                opts["detX"] = True  # the reference's alias
        elif key == "glorot_fix":
            if value:
                _log.info("glorot_fix=True changes nothing, as in weightwatcher 0.7.7 (its flag is never read).")
        elif key == "deltas":
            if value:
                opts["deltas"] = True  # only the plots change
        elif key in _BROKEN:
            if value not in (None, False):
                raise NotImplementedError(f"WeightWatcher.{method}: option {key}={value!r} is refused: {_BROKEN[key]} "
                                          "(see docs/compat.md).")
        elif key in _FIT_KEYS:
            opts[key] = value
        elif key in _FINGER_KEYS:
            if kwargs.get("fix_fingers") or str(kwargs.get("fit", "")).upper() == "E_TPL":
                opts[key] = _FINGER_KEYS[key] if value is None else value
        elif key in ("plot", "savefig"):
            plot_opts[key] = value
        elif key == "ww2x":
            if value:
                opts["pool"] = False
        elif key in _ACCEPTED:
            if value not in _ACCEPTED[key]:
                raise NotImplementedError(f"WeightWatcher.{method}: option {key}={value!r} is not implemented in htsr.")
            if key == "svd_method":
                _log.info("svd_method=%r: htsr computes every eigenvalue exactly (float64) with either method.", value)
        elif key in _ONLY_DEFAULT:
            default = _ONLY_DEFAULT[key]
            same = value == default or (key == "fit" and str(value).upper() in ("PL", "POWER_LAW"))
            if key in ("max_fingers", "finger_thresh") and not kwargs.get("fix_fingers"):
                same = True
            if not same:
                raise NotImplementedError(
                    f"WeightWatcher.{method}: option {key}={value!r} is not implemented in htsr "
                    f"(only the default {default!r} is supported)."
                )
        else:
            raise UnknownOptionError(f"WeightWatcher.{method}() got an unexpected keyword argument {key!r}.")
    if any(k in opts for k in _FIT_KEYS):
        opts.setdefault("pl_package", "ww")  # the reference's default: TPL/'force' without 'powerlaw' are refused
    if "layers" in opts and isinstance(opts["layers"], (list, tuple)) and len(opts["layers"]) == 0:
        opts["layers"] = None
    return opts, plot_opts


class WeightWatcher:
    """Drop-in replacement for ``weightwatcher.WeightWatcher``.

    Parameters
    ----------
    model : optional
        Anything :func:`htsr.analyze` reads (module, state dict, path).
    framework : optional
        Accepted and ignored: htsr recognizes the model itself.
    base_model : optional
        A model of the same architecture (anything ``model`` may be): every row is
        then ``W − W_base``, matched by key; layers without a match are listed in
        ``Report.skipped`` (``htsr.sources.delta.delta_source``). ``analyze`` and
        ``describe`` also take ``base_model=`` for one call.
    log_level : optional
        Level for the ``htsr`` logger (e.g. ``logging.INFO``); nothing is configured otherwise.

    Examples
    --------
    >>> import numpy as np, htsr
    >>> W = np.random.default_rng(0).standard_normal((200, 50))
    >>> watcher = htsr.WeightWatcher(model={"fc.weight": W})
    >>> details = watcher.analyze()
    >>> list(details.columns[:4])
    ['layer_id', 'name', 'D', 'M']
    """

    def __init__(self, model: Any = None, framework: Any = None, base_model: Any = None, log_level: Any = None):
        self.base_model = base_model
        self.model = model
        self.framework = framework
        self.details: Any = None
        self.report: Any = None  # the last analyze() call's htsr.Report
        if log_level is not None:
            logging.getLogger("htsr").setLevel(log_level)

    def _model(self, model: Any) -> Any:
        if model is not None:
            self.model = model
        if self.model is None:
            raise HtsrError("WeightWatcher: no model given (pass model= to the constructor or the method).")
        return self.model

    def _source(self, model: Any, base_model: Any = None, peft: Any = False) -> Any:
        """The model's source without htsr's extra rows (RNN gates, attention q/k/v): the reference skips them.

        With a base model (this call's, else the constructor's), the rows are ``W − W_base``;
        with ``peft`` (True or ``'with_base'``) the LoRA updates of a PEFT model.
        """
        from ..sources import open_source

        base = base_model if base_model is not None else self.base_model
        if peft not in (False, None, True, "with_base"):
            raise NotImplementedError(f"WeightWatcher: option peft={peft!r} is not implemented (True or 'with_base').")
        if peft:
            if base is not None:
                raise NotImplementedError("WeightWatcher: peft= together with base_model= is not implemented.")
            from ..sources.delta import peft_source

            return peft_source(open_source(self._model(model), extra_rows=False), with_base=peft == "with_base")
        ids = REFERENCE.reference_ids
        source = open_source(self._model(model), extra_rows=False, reference_ids=ids)
        if base is None:
            return source
        from ..sources.delta import delta_source

        return delta_source(source, open_source(base, extra_rows=False, reference_ids=ids))

    def analyze(self, model: Any = None, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """Analyze the model; returns the details DataFrame (reference columns and order).

        Takes the reference's arguments, by keyword or in its positional order
        (``layers, min_evals=8, max_evals, min_size, max_size, max_N, glorot_fix,
        plot, randomize, savefig, mp_fit, conv2d_norm, ww2x, pool …``; 0 for
        ``min_evals`` / ``max_evals`` means no limit), and htsr's keywords
        ``seed``, ``device``, ``workers``, ``progress``, ``reference`` (default
        True: :data:`htsr.compat.REFERENCE`, the reference's treatment of small,
        Conv1d and sliced conv layers, see ``docs/compat.md``; False: htsr's own). With ``plot=True`` figures are shown and
        saved into ``savefig`` (default ``ww-img``, as the reference;
        ``savefig=False`` saves nothing).
        """
        from ..api import analyze

        kwargs = _positional("analyze", _ANALYZE_ORDER, args, kwargs)
        base_model, peft = kwargs.pop("base_model", None), kwargs.pop("peft", False)
        opts, plot_opts = _map_options("analyze", kwargs)
        opts, treatment = _reference_defaults(opts)
        plot = bool(plot_opts["plot"])
        savefig = plot_opts["savefig"] if plot and plot_opts["savefig"] not in (False, None, "") else None
        if savefig is True:
            savefig = DEF_SAVE_DIR
        report = analyze(self._source(model, base_model, peft), plot=plot, savefig=savefig, treatment=treatment,
                         **opts)
        self.report = report
        details = report.details.drop(columns=["storage"])  # htsr's own column; the reference has none
        if peft and "rank_loss" in details:  # the reference's extra column, in its ASCII place
            lora = details["longname"].str.contains(r"\.lora_(?:BA|W_plus_AB)\b", regex=True)
            details.insert(list(details.columns).index("rank_loss"), "peft", lora.astype(bool))
        self.details = details
        return details

    def describe(self, model: Any = None, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """The layers the reference would analyze: ``layer_id, name, M, N, Q, layer_type, longname, num_evals, rf``.

        Arguments as the reference's ``describe`` (keywords or its positional order).
        """
        import pandas as pd

        from ..api import describe

        kwargs = _positional("describe", _DESCRIBE_ORDER, args, kwargs)
        base_model, peft = kwargs.pop("base_model", None), kwargs.pop("peft", False)
        opts, _ = _map_options("describe", kwargs)
        opts, treatment = _reference_defaults(opts)
        frame = describe(self._source(model, base_model, peft), treatment=treatment, **opts)
        frame = frame[frame["analyzed"]].reset_index(drop=True)
        cols = ["layer_id", "name", "M", "N", "Q", "layer_type", "longname", "num_evals", "rf"]
        out = frame[cols].copy()
        for c in ("M", "N", "num_evals", "rf"):
            out[c] = out[c].astype("int64")
        pool = opts.get("pool", True)
        # the reference counts M·rf eigenvalues per layer (M per slice with pool=False), whatever the kernel
        out["num_evals"] = out["M"] * out["rf"] if pool else out["M"]
        if not pool:  # one row per conv2d slice (0 … rf−1), slice_id 0 on other rows
            reps = [int(rf) if t == "conv2d" else 1 for t, rf in zip(out["layer_type"], out["rf"])]
            out = out.loc[out.index.repeat(reps)].reset_index(drop=True)
            out["slice_id"] = [i for n in reps for i in range(n)]
        return pd.DataFrame(out)

    def analyze_vectors(self, model: Any = None, layers: Any = (), min_evals: Any = None, max_evals: Any = None,
                        plot: bool = True, savefig: Any = DEF_SAVE_DIR, channels: Any = None) -> pd.DataFrame:
        """Eigenvector metrics of every layer: the 12 ``vectors=True`` columns, and their figures.

        The reference's ``analyze_vectors`` (0.7.7) raises ``AttributeError`` ('frameword_layer')
        before doing anything; htsr returns the per-layer table (``layer_id, name`` and the
        ``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}`` columns) and, with
        ``plot=True``, draws the ``vector_metrics`` and ``vector_hists`` figures of each layer
        (saved into ``savefig``, shown inline in Jupyter). ``self.details`` is not changed.
        """
        import pandas as pd

        from ..api import analyze
        from ..config import AnalysisConfig
        from ..engine import plan
        from ..matrices import slices
        from ..prepare import read_matrix
        from ..sources import open_source
        from ..spectral.vectors import COLUMNS, vector_metrics

        if channels is not None:
            raise NotImplementedError(f"WeightWatcher.analyze_vectors: option channels={channels!r} is refused: "
                                      f"{_BROKEN['channels']}.")
        kwargs: dict[str, Any] = {"layers": list(layers) if layers is not None else []}
        if min_evals is not None:
            kwargs["min_evals"] = min_evals
        if max_evals is not None:
            kwargs["max_evals"] = max_evals
        opts, _ = _map_options("analyze_vectors", kwargs)
        source_model = self._source(model)  # without htsr's extra rows (RNN gates, attention q/k/v)
        report = analyze(source_model, vectors=True, **opts)
        details = report.details
        table = pd.DataFrame(details[["layer_id", "name", *sorted(COLUMNS)]]).reset_index(drop=True)
        folder = savefig if plot and savefig not in (False, None, "") else None
        if plot:
            from pathlib import Path

            from ..files import atomic_write
            from ..option_plots import vector_figures
            from ..plotting import figure_png, require_matplotlib, safe_filename
            from ..progress import in_notebook

            require_matplotlib()
            folder = DEF_SAVE_DIR if folder is True else folder
            results = {r.layer_id: r for r in report.layers}
            config = AnalysisConfig.from_kwargs(**{k: v for k, v in opts.items() if k in ("layers", "min_evals", "max_evals")})
            for p in plan(open_source(source_model), config):
                result = results.get(p.tensor.layer_id)
                if p.reason or result is None or result.fit is None:
                    continue
                W, _ = read_matrix(p.tensor)
                vm = vector_metrics(slices(W, p.tensor.layer_type, config.conv2d_norm))
                tail = int(result.fit.num_pl_spikes) if np.isfinite(result.fit.xmin) else None
                for kind, fig in vector_figures(result, vm, tail):
                    png = figure_png(fig)
                    if in_notebook():
                        from IPython.display import Image, display

                        display(Image(data=png))
                    if folder:
                        Path(folder).mkdir(parents=True, exist_ok=True)
                        atomic_write(Path(folder) / safe_filename(p.tensor.layer_id, result.name, None, kind), png)
        return table

    def vector_metrics(self, vectors: Any = None) -> pd.DataFrame:
        """Metrics of arbitrary vectors: ``length, entropy, discrete_entropy, localization_ratio, participation_ratio``.

        ``vectors`` is one 1-D array, a list of them, or a 2-D array (one vector per row).
        ``entropy`` is the reference's Porter–Thomas value exp(−‖u‖/2)/√(2π). (The reference
        writes the discrete entropy into a misspelt ``discete_entropy`` column and leaves
        ``discrete_entropy`` empty; htsr fills ``discrete_entropy``.)
        """
        import pandas as pd

        from ..spectral.vectors import discrete_entropy, localization_ratio, participation_ratio

        if (isinstance(vectors, np.ndarray) and vectors.ndim == 2) or \
                (isinstance(vectors, (list, tuple)) and all(isinstance(v, np.ndarray) for v in vectors)):
            items = list(vectors)
        elif isinstance(vectors, np.ndarray):
            items = [vectors]
        else:
            raise HtsrError("WeightWatcher.vector_metrics: give a numpy vector, a list of them or a 2-D array; "
                            f"got {type(vectors).__name__}.")
        rows = []
        for v in items:
            v = np.asarray(v, dtype=np.float64).ravel()
            rows.append({"length": v.size, "entropy": float(np.exp(-np.linalg.norm(v) / 2) / np.sqrt(2 * np.pi)),
                         "discrete_entropy": discrete_entropy(v), "localization_ratio": float(localization_ratio(v)),
                         "participation_ratio": float(participation_ratio(v))})
        return pd.DataFrame(rows, columns=["length", "entropy", "discrete_entropy", "localization_ratio",
                                           "participation_ratio"])

    def get_details(self) -> pd.DataFrame | None:
        """The details of the last ``analyze`` call (None before)."""
        return self.details

    def get_summary(self, details: Any = None) -> dict:
        """Means of ``log_norm, alpha, alpha_weighted, log_alpha_norm, log_spectral_norm, stable_rank`` (and ``mp_softrank``)."""
        from ..report import summarize

        details = self.details if details is None else details
        if details is None:
            return {}
        summary = summarize(details)
        summary.pop("num_traps", None)
        return summary

    def _one_layer(self, method: str, model: Any, layer: Any, kwargs: dict,
                   params: Any = None) -> tuple[Any, Any, Treatment]:
        """The plan of one analyzable layer, the config and the treatment, chosen and gated exactly as ``analyze`` does."""
        from ..config import AnalysisConfig
        from ..engine import plan

        if layer is None:
            raise HtsrError(f"WeightWatcher.{method}: give layer= (an id or a name).")
        opts, _plot_opts = _map_options(method, kwargs)
        pointless = [k for k in ("randomize", "mp_fit", "detX", "layers") if k in opts] + \
            [k for k in ("plot", "savefig") if k in kwargs]
        if pointless:
            raise OptionError(f"WeightWatcher.{method}: option {pointless[0]!r} has no meaning for one layer's "
                              f"{'weights' if method == 'get_Weights' else 'eigenvalues'}.")
        options, treatment = _reference_defaults({**_params_options(method, params), **opts})
        config = AnalysisConfig.from_kwargs(**options)
        plans = [p for p in plan(self._source(model), config, treatment) if not p.reason]
        for p in plans:
            if (isinstance(layer, (int, np.integer)) and p.tensor.layer_id == layer) or layer in (p.tensor.name, p.tensor.longname):
                return p, config, treatment
        known = ", ".join(f"{p.tensor.layer_id}:{p.tensor.name}" for p in plans[:20])
        raise HtsrError(f"WeightWatcher.{method}: no analyzable layer {layer!r} (layers: {known}{' …' if len(plans) > 20 else ''}).")

    def distances(self, model_1: Any, model_2: Any, method: str = "raw", layers: Any = (), start_ids: int = 0,
                  pool: bool = True, channels: Any = None) -> tuple[float, float, Any]:
        """Layer-by-layer distances between two models: ``(avg_dW, avg_db, details)``, as the reference.

        ``method``: ``'raw'`` (‖W1 − W2‖_F of the stored tensors, and of dense layers' biases),
        ``'euclidean'`` (the same over the layer's matrices; a conv layer averages its kernel
        positions) or ``'cka'`` (the reference's uncentered overlap ‖W1ᵀW2‖ / √(‖W1ᵀW1‖‖W2W2ᵀ‖)).
        ``details`` is indexed by ``layer_id`` with columns ``method, name, delta_W, delta_b, M, N,
        b_shape, longname`` (and ``slice_id`` with ``pool=False``). The models must have the
        same layers (an ``HtsrError`` says so otherwise); for models whose layers differ,
        use :func:`htsr.compare`, which matches layers by name.
        """
        from ..config import AnalysisConfig
        from .distances import reference_distances

        m = "raw" if method is None else str(method).lower()
        if m not in ("raw", "euclidean", "cka"):
            raise OptionError(f"WeightWatcher.distances: method must be 'raw', 'euclidean' or 'cka'; got {method!r}.")
        if channels is not None:
            raise NotImplementedError("WeightWatcher.distances: option channels is not implemented in htsr.")
        opts, _ = _map_options("distances", {"layers": list(layers) if isinstance(layers, (list, tuple)) else layers,
                                             "pool": pool, "start_ids": start_ids})
        return reference_distances(model_1, model_2, m, AnalysisConfig.from_kwargs(**opts))

    def get_Weights(self, model: Any = None, layer: Any = None, params: Any = None, **kwargs: Any) -> list:
        """The layer's matrices as the reference gives them, float64 copies without the conv2d_norm factor.

        A dense or embedding layer: ``[W]`` as stored. A conv2d layer: one matrix
        per kernel position (row-major over kh, kw), each (out, in) slice
        transposed when out < in, so rows ≥ cols. A Conv1d layer: ``[W]``, the
        3-D kernel (out, in, k). ``params`` is the reference's options dict;
        keyword options gate the layer as ``analyze`` does (``min_evals`` …): a
        layer ``analyze`` would skip is not found.
        """
        from ..matrices import slices
        from ..prepare import read_matrix

        p, _, _ = self._one_layer("get_Weights", model, layer, kwargs, params)
        W, _ = read_matrix(p.tensor)
        if W.ndim != 4:
            return [W]
        return [m.T if m.shape[0] < m.shape[1] else m for m in slices(W, p.tensor.layer_type, conv2d_norm=False)]

    def get_ESD(self, model: Any = None, layer: Any = None, random: bool = False, params: Any = None, *,
                seed: int = 0, **kwargs: Any) -> np.ndarray:
        """Sorted eigenvalues of the layer's ESD, pooled over conv slices, as the reference's ``get_ESD``.

        As the reference, conv2d slices are not scaled (its ``get_ESD`` ignores ``conv2d_norm``);
        ``conv2d_norm=True`` as a keyword gives the eigenvalues ``analyze`` fits instead.
        ``random=True``: the eigenvalues of the first shuffle that ``analyze(randomize=True,
        seed=seed)`` makes of this layer (the same generator and values; for a conv2d layer with
        ``conv2d_norm=True``). ``params`` is the reference's options dict (checked; its
        ``conv2d_norm`` is not used, as in the reference). Takes the layer-gating options of
        ``analyze`` as keywords; ``pool=False`` is refused (one layer, one ESD). A Conv1d layer
        gives the reference's top M eigenvalues (docs/compat.md).
        """
        from ..blas import blas_single_thread
        from ..prepare import layer_stack, read_matrix, row_esd, shuffle_row
        from ..spectral.esd import compute_esd

        if "seed" in kwargs:
            raise OptionError("WeightWatcher.get_ESD: give the seed once (seed=…).")
        kwargs.setdefault("conv2d_norm", False)  # the reference's get_ESD: raw slices
        p, config, treatment = self._one_layer("get_ESD", model, layer, {**kwargs, "seed": seed}, params)
        if not config.pool:
            raise OptionError("WeightWatcher.get_ESD: pool=False gives one ESD per slice; use analyze(pool=False).")
        W, _ = read_matrix(p.tensor)
        g = p.geometry
        stack, top_m = layer_stack(W, p.tensor, g, config, treatment)
        evals = row_esd(compute_esd(stack, g.N), g, top_m).evals
        if not random:
            return evals
        with blas_single_thread():  # as the engine computes it: the same bits
            rand, _ = shuffle_row(stack, evals, g, config.seed, p.tensor.layer_id, None, treatment)
        return rand.first

    def SVDSmoothing(self, model: Any = None, percent: float = 0.8, pool: bool = True, layers: Any = (),
                     method: str = "detX", fit: str = "PL", plot: bool = False, start_ids: int = 0,
                     svd_method: str = "fast", inplace: bool = False) -> Any:
        """Keep the top singular components of each layer; returns a smoothed **copy** (see :func:`htsr.SVDSmoothing`).

        The reference modifies and returns the model itself; htsr returns a copy
        unless ``inplace=True``. ``svd_method`` is accepted ('fast'/'accurate': htsr
        always uses an exact SVD); ``pool=False``, ``plot=True`` and a ``fit`` other
        than 'PL' are not implemented.
        """
        from ..transforms import SVDSmoothing

        self._check_transform("SVDSmoothing", pool, plot, fit, svd_method)
        opts, _ = _map_options("SVDSmoothing", {"layers": list(layers) if layers is not None else [],
                                                "start_ids": start_ids})
        return SVDSmoothing(self._model(model), percent=percent, method=method, inplace=inplace, **opts)

    def SVDSharpness(self, model: Any = None, pool: bool = True, layers: Any = (), plot: bool = False,
                     start_ids: int = 0, seed: int = 0, inplace: bool = False) -> Any:
        """Remove the randomized spikes' components; returns a sharpened **copy** (see :func:`htsr.SVDSharpness`)."""
        from ..transforms import SVDSharpness

        self._check_transform("SVDSharpness", pool, plot)
        opts, _ = _map_options("SVDSharpness", {"layers": list(layers) if layers is not None else [],
                                                "start_ids": start_ids})
        return SVDSharpness(self._model(model), seed=seed, inplace=inplace, **opts)

    @staticmethod
    def _check_transform(method: str, pool: bool, plot: bool, fit: str = "PL", svd_method: str = "fast") -> None:
        if not pool:
            raise NotImplementedError(f"WeightWatcher.{method}: option pool=False is not implemented (as in the reference).")
        if plot:
            raise NotImplementedError(f"WeightWatcher.{method}: option plot=True is not implemented in htsr.")
        if str(fit).upper() not in ("PL", "POWER_LAW"):
            raise NotImplementedError(f"WeightWatcher.{method}: option fit={fit!r} is not implemented in htsr.")
        if svd_method not in ("fast", "accurate"):
            raise NotImplementedError(f"WeightWatcher.{method}: option svd_method={svd_method!r} is not implemented.")
